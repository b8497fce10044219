"""Localisation: the energy-based pointing game and the pointing game."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

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
            a pixel belongs to the object when its centre lies in one of them. A
            ``(N, 4)`` tensor gives one box per example.
        input_size: ``(H, W)`` of the images the boxes refer to; the map is
            resized to it bilinearly. ``None``: the map's own size.
    """
    maps = _maps_at(attributions, boxes, input_size)
    inside = _box_masks(boxes, tuple(maps.shape[1:]), maps.device, tolerance=0.0)
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
    pixel centres; default 15 as in the paper, 0 for the strict version) of a
    box. When several pixels share the maximum, the result is the share of them
    that hit: the expected score of picking one at random (an all-zero map thus
    scores the tolerance-grown boxes' share of the image).

    Arguments as in [energy_pointing_game][captum_sscam.metrics.energy_pointing_game].
    """
    if tolerance < 0:
        raise ValueError(f"tolerance is a distance in pixels >= 0, got {tolerance!r}.")
    maps = _maps_at(attributions, boxes, input_size)
    near = _box_masks(boxes, tuple(maps.shape[1:]), maps.device, tolerance=float(tolerance))
    flat = maps.flatten(1)
    peak = (flat == flat.amax(dim=1, keepdim=True)).view_as(maps)
    return (peak & near).flatten(1).sum(1).float() / peak.flatten(1).sum(1).float()


def _maps_at(
    attributions: Tensor | tuple[Tensor], boxes: Boxes, input_size: tuple[int, int] | None
) -> Tensor:
    maps = attributions[0] if isinstance(attributions, tuple) else attributions
    if not isinstance(maps, Tensor):
        raise TypeError(f"attributions must be a Tensor, got {type(maps).__name__}.")
    size = tuple(input_size) if input_size is not None else tuple(maps.shape[-2:])
    return saliency_maps(attributions, size, len(boxes))


def _box_masks(
    boxes: Boxes, size: tuple[int, int], device: torch.device, tolerance: float
) -> Tensor:
    """``(N, H, W)`` bool: pixels whose centre is within ``tolerance`` of a box."""
    height, width = size
    ys = torch.arange(height, device=device, dtype=torch.float64).view(-1, 1) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float64).view(1, -1) + 0.5
    per_example = boxes.tolist() if isinstance(boxes, Tensor) and boxes.dim() == 2 else boxes
    masks = []
    for index, example_boxes in enumerate(per_example):
        if isinstance(boxes, Tensor) and boxes.dim() == 2:
            example_boxes = [example_boxes]
        if len(example_boxes) == 0:
            raise ValueError(f"example {index} has no boxes; give at least one per example.")
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        for box in example_boxes:
            if len(box) != 4:
                raise ValueError(f"example {index}: a box is (x1, y1, x2, y2), got {box!r}.")
            x1, y1, x2, y2 = (float(v) for v in box)
            if not (x2 > x1 and y2 > y1):
                raise ValueError(
                    f"example {index}: box {tuple(box)} is empty; boxes are (x1, y1, x2, y2) "
                    "with x2 > x1 and y2 > y1."
                )
            dx = (x1 - xs).clamp(min=0) + (xs - x2).clamp(min=0)
            dy = (y1 - ys).clamp(min=0) + (ys - y2).clamp(min=0)
            mask |= (dx**2 + dy**2) <= tolerance**2
        masks.append(mask)
    return torch.stack(masks)
