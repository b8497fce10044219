"""The hand annotations and how the real-photo evaluation picks its target and boxes."""

from __future__ import annotations

import pytest
import torch

from captum_sscam.apps.annotated_photos import (
    LabelledObject,
    annotated_photos,
    choose_target,
    hand_boxes,
)

NAMES = ["wombat", "espresso", "cup", "dining table", "restaurant"]


def test_hand_boxes_carry_their_provenance():
    annotations = hand_boxes()
    assert {"who", "how", "when", "coordinates"} <= annotations["provenance"].keys()
    assert {"coffee", "chelsea", "astronaut", "rocket", "motorcycle"} <= annotations[
        "photos"
    ].keys()


def test_every_box_lies_inside_its_photo():
    photos = annotated_photos()
    assert [photo.name for photo, _ in photos][:3] == ["quokka", "voc", "coffee"]
    for photo, objects in photos:
        height, width = photo.image.shape[:2]
        assert objects, photo.name
        for obj in objects:
            x1, y1, x2, y2 = obj.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (photo.name, obj)


def test_an_unlabelled_object_takes_the_top_class():
    probabilities = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])
    quokka = (LabelledObject("quokka", (1, 2, 3, 4), ()),)
    assert choose_target(probabilities, quokka, NAMES) == (0, ((1, 2, 3, 4),))


def test_labelled_objects_take_their_most_probable_class_and_its_boxes():
    probabilities = torch.tensor([0.5, 0.05, 0.1, 0.2, 0.15])
    objects = (
        LabelledObject("cup", (0, 0, 1, 1), ("espresso", "cup")),
        LabelledObject("table", (2, 2, 3, 3), ("dining table",)),
        LabelledObject("table", (4, 4, 5, 5), ("dining table",)),
        LabelledObject("person", (6, 6, 7, 7), ()),
    )
    # The top-1 class (wombat) has no object; dining table (0.2) beats cup (0.1).
    assert choose_target(probabilities, objects, NAMES) == (3, ((2, 2, 3, 3), (4, 4, 5, 5)))
    with pytest.raises(ValueError, match="ImageNet class names"):
        choose_target(probabilities, (LabelledObject("x", (0, 0, 1, 1), ("quokka",)),), NAMES)


def test_a_missing_photo_package_is_a_usage_error_that_says_what_to_install() -> None:
    from captum_sscam.apps import data
    from captum_sscam.apps.errors import UsageError

    with pytest.raises(UsageError, match=r"no_such_photos_package.*\[demo\] extra"):
        data._package_dir("no_such_photos_package")
