"""``explain --target-box``: a region of a segmentation model, or an object of a detector.

The box ``x0,y0,x1,y1`` is in pixels of what the model sees (the centre-cropped square of
``--size``). What it explains depends on what the model returns for the image:

- ``{"out": (N, C, H, W)}`` (torchvision's segmentation models): the class's mean
  probability in the box, `captum_sscam.SegmentationRegion`; the class is ``--target``, or the
  most probable one in the box (the background left out when the first class is
  ``__background__``);
- a list of ``{"boxes", "labels", "scores"}`` (torchvision's detectors): how strongly the
  detector finds the label at the box, `captum_sscam.DetectionBox`; the label is ``--target``,
  or that of the prediction with the best score times IoU with the box.

Only the Score-CAM family explains these targets
(`captum_sscam.apps.arguments.TASK_METHODS`): Grad-CAM and Integrated Gradients take class
indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_sscam import DetectionBox, ExampleTarget, SegmentationRegion
from captum_sscam.apps.errors import UsageError
from captum_sscam.apps.models import class_index

BACKGROUND = "__background__"


@dataclass(frozen=True)
class BoxTarget:
    """The target of one image and what it says, e.g. ``class 15 (person) in box ...``."""

    target: ExampleTarget
    description: str


def box_target(
    model: nn.Module,
    inputs: Tensor,
    box: tuple[float, float, float, float],
    target: str | None,
    class_names: Sequence[str],
    model_name: str,
) -> BoxTarget:
    """The segmentation or detection target of the box for one image ``inputs`` ``(1, C, H, W)``."""
    height, width = inputs.shape[-2:]
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise UsageError(
            f"--target-box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the model's "
            f"{width} x {height} input; give pixels of the centre-cropped image (see --size)."
        )
    with torch.no_grad():
        output = model(inputs)
    where = f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
    if isinstance(output, Mapping) and isinstance(output.get("out"), Tensor):
        cls = _chosen(
            target, class_names, lambda: _likeliest_class(output["out"], box, class_names)
        )
        region = SegmentationRegion(cls, box=box)
        return BoxTarget(region, f"class {_named(cls, class_names)} in {where}")
    if (
        isinstance(output, (list, tuple))
        and output
        and all(
            isinstance(found, Mapping) and {"boxes", "labels", "scores"} <= set(found)
            for found in output
        )
    ):
        label = _chosen(target, class_names, lambda: _best_label(output[0], box, model_name))
        return BoxTarget(DetectionBox(box, label), f"label {_named(label, class_names)} at {where}")
    raise UsageError(
        f"--target-box explains a region of a segmentation model (an {{'out': ...}} output) or "
        f"an object of a detector (a list of boxes, labels and scores), but {model_name} "
        f"returns {type(output).__name__}; leave out --target-box for a classifier."
    )


def _chosen(target: str | None, class_names: Sequence[str], default: Any) -> int:
    return class_index(target, class_names) if target is not None else default()


def _named(index: int, class_names: Sequence[str]) -> str:
    return f"{index} ({class_names[index]})" if index < len(class_names) else str(index)


def _likeliest_class(
    logits: Tensor, box: tuple[float, float, float, float], class_names: Sequence[str]
) -> int:
    """The class with the highest mean probability in the box (not the background)."""
    classes = logits.shape[1]
    every_class = SegmentationRegion(list(range(classes)), box=box)  # one "example" per class
    probabilities = every_class(logits.expand(classes, -1, -1, -1), torch.arange(classes))
    if class_names and class_names[0] == BACKGROUND:
        probabilities[0] = -1.0
    return int(probabilities.argmax())


def _best_label(detections: Mapping[str, Tensor], box: tuple[float, ...], model_name: str) -> int:
    """The label of the prediction with the best score times IoU with the box."""
    from torchvision.ops import box_iou

    if len(detections["boxes"]) == 0:
        raise UsageError(
            f"{model_name} finds nothing in the image; give the label to explain with --target."
        )
    overlap = box_iou(detections["boxes"].float(), torch.tensor([box]))[:, 0]
    best = detections["scores"].float() * overlap
    if float(best.max()) <= 0:
        raise UsageError(
            f"none of {model_name}'s {len(best)} predictions overlaps --target-box; give the "
            "label to explain with --target."
        )
    return int(detections["labels"][int(best.argmax())])
