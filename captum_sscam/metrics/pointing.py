"""Localisation: the energy-based pointing game and the pointing game."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from captum_sscam._core.checks import check_positive_int
from captum_sscam.metrics._maps import saliency_maps

Box = tuple[float, float, float, float]
Boxes = Sequence[Sequence[Box]] | Tensor


def energy_pointing_game(
    attributions: Tensor | tuple[Tensor],
    boxes: Boxes,
    input_size: tuple[int, int] | None = None,
) -> Tensor:
    r"""Per-example share of the map's energy inside the object's boxes; higher is better.

    Score-CAM (Wang et al., CVPR-W 2020) section 4.3:
    $\sum_{(i,j) \in \text{bbox}} L_{ij} / \sum_{(i,j)} L_{ij}$, computed on
    the positive part of the map (what Score-CAM and Grad-CAM produce after their
    ReLU; for signed maps such as IG's, the positive evidence). An all-zero map
    spreads no energy anywhere and scores as a uniform map would: the boxes'
    share of the image area (chance level).

    Args:
        attributions: one map per example, shaped as for
            [deletion_auc][captum_sscam.metrics.deletion_auc].
        boxes: per example, one or more ``(x1, y1, x2, y2)`` boxes in input
            pixels (x right, y down, origin at the top-left corner of the image);
            a pixel belongs to the object when its centre lies in one of them; a
            box must overlap the image. A list of N lists of boxes, an ``(N, 4)``
            tensor (one box per example) or an ``(N, K, 4)`` tensor.
        input_size: ``(H, W)`` of the images the boxes refer to; the map is
            resized to it bilinearly. ``None``: the map's own size.
    """
    per_example = _per_example_boxes(boxes)
    maps = _maps_at(attributions, len(per_example), input_size)
    size = (maps.shape[1], maps.shape[2])
    inside = _box_masks(per_example, size, maps.device, tolerance=0.0)
    energy = maps.clamp(min=0)
    total = energy.flatten(1).sum(1)
    uniform = torch.ones_like(energy)
    energy = torch.where((total > 0).view(-1, 1, 1), energy, uniform)
    return (energy * inside).flatten(1).sum(1) / energy.flatten(1).sum(1)


def pointing_game(
    attributions: Tensor | tuple[Tensor],
    boxes: Boxes,
    input_size: tuple[int, int] | None = None,
    tolerance: float = 15.0,
) -> Tensor:
    """Per example 1 if the map's maximum falls on the object, else 0; higher is better.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016:
    a hit when the maximum lies within ``tolerance`` pixels (Euclidean, from
    pixel centres; a finite number >= 0, default 15 as in the paper, 0 for the
    strict version) of a box. When several pixels share the maximum, the result
    is the share of them that hit: the expected score of picking one at random
    (an all-zero map thus scores the tolerance-grown boxes' share of the image).

    Arguments as in [energy_pointing_game][captum_sscam.metrics.energy_pointing_game].
    """
    distance = _check_tolerance(tolerance)
    per_example = _per_example_boxes(boxes)
    maps = _maps_at(attributions, len(per_example), input_size)
    size = (maps.shape[1], maps.shape[2])
    near = _box_masks(per_example, size, maps.device, tolerance=distance)
    flat = maps.flatten(1)
    peak = (flat == flat.amax(dim=1, keepdim=True)).view_as(maps)
    return (peak & near).flatten(1).sum(1).float() / peak.flatten(1).sum(1).float()


BOXES_EXPECTED = (
    "give an (N, 4) tensor (one box per example) or a list of N lists of (x1, y1, x2, y2) "
    "boxes, e.g. [[(x1, y1, x2, y2)]] for one example with one box"
)


def _check_tolerance(tolerance: object) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(
            f"tolerance is a distance in pixels, a finite number >= 0; got "
            f"{type(tolerance).__name__} {tolerance!r}."
        )
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(
            f"tolerance is a distance in pixels, a finite number >= 0; got {tolerance!r}."
        )
    return float(tolerance)


def _per_example_boxes(boxes: Boxes) -> list[list[Box]]:
    """``boxes`` as one list of ``(x1, y1, x2, y2)`` floats per example, or a ValueError
    that says what was wrong with them."""
    if isinstance(boxes, Tensor):
        if boxes.dim() == 2 and boxes.shape[0] >= 1 and boxes.shape[1] == 4:
            boxes = boxes.unsqueeze(1)
        if boxes.dim() != 3 or 0 in boxes.shape[:2] or boxes.shape[2] != 4:
            hint = " (one example's box? use boxes.unsqueeze(0))" if boxes.shape == (4,) else ""
            raise ValueError(
                f"boxes is a tensor of shape {tuple(boxes.shape)}{hint}; {BOXES_EXPECTED} "
                "(an (N, K, 4) tensor gives K boxes to each example)."
            )
        boxes = boxes.tolist()
    if isinstance(boxes, (str, bytes)) or not isinstance(boxes, Sequence):
        raise TypeError(
            f"boxes must be a tensor or a list, got {type(boxes).__name__}; {BOXES_EXPECTED}."
        )
    if len(boxes) == 0:
        raise ValueError(f"boxes is empty; {BOXES_EXPECTED}.")
    if all(_is_number(value) for value in boxes):
        raise ValueError(
            f"boxes is a flat list of {len(boxes)} numbers, not one list of boxes per example; "
            f"{BOXES_EXPECTED}."
        )
    return [_example_boxes(index, example) for index, example in enumerate(boxes)]


def _example_boxes(index: int, example: object) -> list[Box]:
    if isinstance(example, Tensor):
        example = example.tolist()
    if isinstance(example, (str, bytes)) or not isinstance(example, Sequence):
        raise ValueError(
            f"boxes[{index}] is {type(example).__name__} {example!r}, not the list of example "
            f"{index}'s boxes; {BOXES_EXPECTED}."
        )
    if len(example) == 0:
        raise ValueError(f"example {index} has no boxes; give at least one per example.")
    if all(_is_number(value) for value in example):
        raise ValueError(
            f"boxes[{index}] is one box {tuple(example)!r}, not a list of boxes; "
            f"{BOXES_EXPECTED} ([[box] for box in boxes] for one box per example)."
        )
    checked = []
    for number, box in enumerate(example):
        if isinstance(box, Tensor):
            box = box.tolist()
        if (
            isinstance(box, (str, bytes))
            or not isinstance(box, Sequence)
            or len(box) != 4
            or not all(_is_number(value) for value in box)
        ):
            raise ValueError(
                f"example {index}, box {number}: a box is (x1, y1, x2, y2), got {box!r}."
            )
        x1, y1, x2, y2 = (float(value) for value in box)
        if not all(math.isfinite(value) for value in (x1, y1, x2, y2)):
            raise ValueError(
                f"example {index}, box {number}: {tuple(box)} has NaN or infinite coordinates."
            )
        if not (x2 > x1 and y2 > y1):
            raise ValueError(
                f"example {index}, box {number}: {tuple(box)} is empty; boxes are "
                "(x1, y1, x2, y2) with x2 > x1 and y2 > y1."
            )
        checked.append((x1, y1, x2, y2))
    return checked


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _maps_at(
    attributions: Tensor | tuple[Tensor], num_examples: int, input_size: tuple[int, int] | None
) -> Tensor:
    maps = attributions[0] if isinstance(attributions, tuple) else attributions
    if not isinstance(maps, Tensor):
        raise TypeError(f"attributions must be a Tensor, got {type(maps).__name__}.")
    if maps.dim() in (3, 4) and maps.shape[0] != num_examples:
        raise ValueError(
            f"boxes hold the boxes of {num_examples} examples but attributions hold "
            f"{maps.shape[0]} maps; give one map and one list of boxes per example."
        )
    size = _input_size(input_size) if input_size is not None else None
    return saliency_maps(attributions, size, num_examples)


def _input_size(input_size: object) -> tuple[int, int]:
    if not isinstance(input_size, Sequence) or len(input_size) != 2:
        raise ValueError(f"input_size is the images' (H, W), got {input_size!r}.")
    height, width = input_size
    return check_positive_int("input_size[0]", height), check_positive_int("input_size[1]", width)


def _box_masks(
    boxes: list[list[Box]], size: tuple[int, int], device: torch.device, tolerance: float
) -> Tensor:
    """``(N, H, W)`` bool: pixels whose centre is within ``tolerance`` of a box.

    A box entirely outside the image is refused: it covers nothing there, so it
    would score 0 whatever the map (boxes given in another image's pixels?).
    """
    height, width = size
    ys = torch.arange(height, device=device, dtype=torch.float64).view(-1, 1) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float64).view(1, -1) + 0.5
    masks = []
    for index, example_boxes in enumerate(boxes):
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        for number, (x1, y1, x2, y2) in enumerate(example_boxes):
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise ValueError(
                    f"example {index}, box {number}: {(x1, y1, x2, y2)} lies entirely outside "
                    f"the image of height {height} and width {width} (boxes are in input "
                    "pixels, 0 <= x <= width, 0 <= y <= height); check the boxes' "
                    "coordinates and input_size."
                )
            dx = (x1 - xs).clamp(min=0) + (xs - x2).clamp(min=0)
            dy = (y1 - ys).clamp(min=0) + (ys - y2).clamp(min=0)
            mask |= (dx**2 + dy**2) <= tolerance**2
        masks.append(mask)
    return torch.stack(masks)
