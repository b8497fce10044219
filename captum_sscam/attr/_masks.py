"""Activation maps -> normalised, upsampled Score-CAM masks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def varying_channels(activation: Tensor) -> Tensor:
    """``(N, K)`` bool: channels whose map is not constant (those that get a mask).

    A constant map has no mask (max == min); the official code gives it weight 0.
    """
    flat = activation.flatten(2)
    return flat.amax(dim=2) > flat.amin(dim=2)


def upsampled_masks(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """Masks ``H = s(U(A))`` for ``maps`` of shape ``(B, *spatial)``.

    ``U`` upsamples (bi/trilinear, ``align_corners=False``) to ``size``; ``s``
    rescales each map to [0, 1] by its own min and max. Returns ``(B, *size)``.
    Every map must vary (see :func:`varying_channels`).
    """
    spatial_dims = maps.dim() - 1
    if tuple(maps.shape[1:]) == tuple(size):
        upsampled = maps
    else:
        upsampled = F.interpolate(
            maps.unsqueeze(1), size=size, mode=_INTERPOLATION[spatial_dims], align_corners=False
        ).squeeze(1)
    flat = upsampled.flatten(1)
    low = flat.amin(dim=1).view(-1, *([1] * spatial_dims))
    high = flat.amax(dim=1).view(-1, *([1] * spatial_dims))
    return (upsampled - low) / (high - low)


def broadcast_to_input(mask: Tensor, input_dims: int) -> Tensor:
    """Insert the non-spatial input dimensions (e.g. colour) so ``mask`` broadcasts."""
    spatial_dims = mask.dim() - 1
    missing = input_dims - 1 - spatial_dims
    return mask.view(mask.shape[0], *([1] * missing), *mask.shape[1:])


def is_supported_spatial_rank(spatial_dims: int) -> bool:
    return spatial_dims in _INTERPOLATION


__all__ = ["broadcast_to_input", "is_supported_spatial_rank", "upsampled_masks", "varying_channels"]
