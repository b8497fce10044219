"""Photos as the model sees them (short side resized, centre crop, boxes along); folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captum_sscam.apps.data import (
    Photo,
    center_crop_photo,
    image_files,
    load_images,
    read_image,
    resize_photo,
)


def test_centre_crop_keeps_the_aspect_ratio_and_moves_the_boxes() -> None:
    # 20 x 40 -> short side 10: 10 x 20, then the centre 10 x 10 (columns 5..15).
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(40, dtype=np.uint8)[None, :] * 6  # red grows to the right
    boxes = ((0.0, 0.0, 8.0, 8.0), (12.0, 4.0, 28.0, 16.0), (30.0, 0.0, 38.0, 20.0))
    photo = Photo("wide", image, boxes, labels=("left", "middle", "right"))
    cropped = center_crop_photo(photo, 10)
    assert cropped.image.shape == (10, 10, 3)
    expected = resize_photo(photo, (10, 20)).image[:, 5:15]
    np.testing.assert_array_equal(cropped.image, expected)
    # Box (12, 4, 28, 16) at half scale is (6, 2, 14, 8), minus the 5-pixel offset: (1, 2, 9, 8).
    # The left box (0, 0, 4, 4) lies left of the crop and is dropped with its label; the
    # right one (15, 0, 19, 10) starts at the crop's right edge (10) and is dropped too.
    assert cropped.boxes == ((1.0, 2.0, 9.0, 8.0),)
    assert cropped.labels == ("middle",)


def test_tall_photo_crops_rows_and_clips_a_box() -> None:
    image = np.zeros((30, 10, 3), dtype=np.uint8)
    photo = Photo("tall", image, ((2.0, 0.0, 8.0, 15.0),))
    cropped = center_crop_photo(photo, 10)
    assert cropped.image.shape == (10, 10, 3)
    assert cropped.boxes == ((2.0, 0.0, 8.0, 5.0),)  # rows 10..20 kept; the box clipped


def test_a_tiny_photo_is_upsampled_to_the_size() -> None:
    photo = Photo("tiny", np.full((4, 6, 3), 90, dtype=np.uint8))
    cropped = center_crop_photo(photo, 12)
    assert cropped.image.shape == (12, 12, 3) and (cropped.image == 90).all()


def test_folders_files_and_notes(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "z.png")
    Image.new("LA", (30, 30)).save(tmp_path / "b" / "grey.png")
    Image.new("RGBA", (5, 5), (1, 2, 3, 0)).save(tmp_path / "b" / "small.PNG")
    (tmp_path / "b" / "notes.txt").write_text("text")
    found = image_files([tmp_path, tmp_path / "z.png"])
    assert [name for _, name in found] == ["b/grey", "b/small", "z", "z"]
    photo, notes = read_image(tmp_path / "b" / "grey.png")
    assert photo.image.shape == (30, 30, 3) and photo.name == "grey"
    assert notes == [
        f"{tmp_path / 'b' / 'grey.png'}: a LA image, converted to RGB (its alpha channel is "
        "dropped)."
    ]
    photos, notes = load_images([tmp_path / "b"], 16)
    assert [p.name for p in photos] == ["grey", "small"]
    assert [p.image.shape for p in photos] == [(16, 16, 3)] * 2
    assert notes[-1] == (
        f"{tmp_path / 'b' / 'small.PNG'}: 5 x 5 pixels is smaller than the model's 16 x 16 "
        "input; it is upsampled, so the model sees a blurred picture."
    )
    assert len(notes) == 3  # grey (LA), small (RGBA), small (tiny)
    with pytest.raises(ValueError, match="is not an image file PIL can read"):
        read_image(tmp_path / "b" / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        image_files([tmp_path / "empty"])
