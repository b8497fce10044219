"""Activation maps -> normalised, upsampled Score-CAM masks; the package's one resize."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_sscam._core.resize import min_max_scaled, resize

# Channels checked per chunk when masks must be upsampled to tell whether they vary.
_CHECK_CHUNK = 256


def varying_channels(activation: Tensor, sizes: Sequence[Sequence[int]] = ()) -> Tensor:
    """``(N, K)`` bool: the channels that get a mask, i.e. vary at every input size.

    A map that is constant (max == min) has no mask; the official code gives it
    weight 0. A map can vary at the layer's resolution yet be constant once
    resized to a smaller input (a layer larger than the input); it is checked at
    each of ``sizes`` then, as the official code checks after resizing. (Bilinear
    upsampling never makes a varying map constant, so larger inputs need no check.)
    """
    flat = activation.flatten(2)
    active = flat.amax(dim=2) > flat.amin(dim=2)
    layer_size = tuple(activation.shape[2:])
    for size in {tuple(s) for s in sizes}:
        if all(big >= small for big, small in zip(size, layer_size, strict=True)):
            continue
        active = active & _varies_after_resize(activation, size)
    return active


def _varies_after_resize(activation: Tensor, size: tuple[int, ...]) -> Tensor:
    maps = activation.flatten(0, 1).unsqueeze(1)
    varies = []
    for start in range(0, maps.shape[0], _CHECK_CHUNK):
        resized = resize(maps[start : start + _CHECK_CHUNK], size).flatten(1)
        varies.append(resized.amax(dim=1) > resized.amin(dim=1))
    return torch.cat(varies).view(activation.shape[:2])


def upsampled_masks(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Masks ``H = s(U(A))`` for ``maps`` of shape ``(B, *spatial)``.

    ``U`` resizes (``resize``) to ``size``; ``s`` rescales each map to
    [0, 1] by its own min and max. Returns ``(B, *size)``. Every map must vary
    at ``size`` (see ``varying_channels``).
    """
    return min_max_scaled(resize(maps.unsqueeze(1), size).squeeze(1))


def broadcast_to_input(mask: Tensor, input_dims: int) -> Tensor:
    """Insert the non-spatial input dimensions (e.g. colour) so ``mask`` broadcasts."""
    spatial_dims = mask.dim() - 1
    missing = input_dims - 1 - spatial_dims
    return mask.view(mask.shape[0], *([1] * missing), *mask.shape[1:])


