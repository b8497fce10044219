"""Attributions of any Captum method -> one saliency map per example at input size."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_sscam._core.resize import resize


def check_images(inputs: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The ``(N, C, H, W)`` floating-point images the metrics perturb."""
    inputs = _one_tensor(
        inputs, "inputs", "pass the image tensor and move other inputs to additional_forward_args"
    )
    if inputs.dim() == 3:
        raise ValueError(
            f"inputs have shape {tuple(inputs.shape)}: one (C, H, W) image without the batch "
            "dimension? The metrics take (N, C, H, W) images; add the batch dimension with "
            "x.unsqueeze(0) (and give the attributions of that batch)."
        )
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs must be (N, C, H, W) images with N >= 1, got shape {tuple(inputs.shape)}."
        )
    if not inputs.dtype.is_floating_point:
        raise TypeError(f"inputs have dtype {inputs.dtype}; pass floating-point images.")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs contain NaN or infinite values.")
    return inputs


def _one_tensor(value: Tensor | tuple[Tensor, ...], name: str, advice: str) -> Tensor:
    """A Tensor, or the only element of a one-element tuple (Captum's tuple form)."""
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ValueError(f"{name} is a tuple of {len(value)} tensors; {advice}.")
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}.")
    return value


def saliency_maps(
    attributions: Tensor | tuple[Tensor, ...], size: tuple[int, int] | None, num_examples: int
) -> Tensor:
    """One ``(N, H, W)`` map per example, at ``size`` (``None``: the map's own size).

    Accepts a Tensor or a one-element tuple (as Captum methods return) shaped
    ``(N, h, w)``, ``(N, 1, h, w)`` (layer maps: Grad-CAM, Score-CAM) or
    ``(N, C, h, w)`` (input attributions: IG, Saliency). Channels are reduced by
    their sum (a pixel's attribution is the total over its colour channels, which
    keeps IG's completeness), then the map is resized bilinearly
    (``align_corners=False``, as Score-CAM upsamples its masks) when its size
    differs from ``size``.
    """
    attributions = _one_tensor(
        attributions, "attributions", "the metrics take one map per example (one tensor)"
    )
    if attributions.dim() not in (3, 4):
        raise ValueError(
            f"attributions have shape {tuple(attributions.shape)}; expected (N, h, w), "
            "(N, 1, h, w) or (N, C, h, w)."
        )
    if attributions.shape[0] != num_examples:
        raise ValueError(
            f"attributions hold {attributions.shape[0]} maps but there are {num_examples} "
            "examples; give one map per example."
        )
    if not bool(torch.isfinite(attributions).all()):
        raise ValueError("attributions contain NaN or infinite values.")
    maps = attributions.float()
    if maps.dim() == 4:
        maps = maps.sum(dim=1)
    return maps if size is None else resize(maps.unsqueeze(1), size).squeeze(1)
