"""The package's one resize and one min-max scaling: masks, metrics and drawing all use these."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resize(maps: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, C, *spatial)`` maps resized to ``size`` by (bi/tri)linear interpolation.

    ``align_corners=False``, as Score-CAM upsamples its masks; maps already at
    ``size`` are returned as they are. The package resizes every map (masks,
    metrics, visualization) with this function.
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode=_INTERPOLATION[len(size)], align_corners=False)


def min_max_scaled(maps: Tensor) -> Tensor:
    """Each of the ``B`` maps ``(B, *spatial)`` rescaled to [0, 1] by its own min and max.

    A constant map ranks nothing above anything else and becomes all zeros.
    """
    flat = maps.flatten(1)
    shape = (-1, *([1] * (maps.dim() - 1)))
    low = flat.amin(dim=1).view(shape)
    span = flat.amax(dim=1).view(shape) - low
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe_span, torch.zeros_like(maps))


def is_supported_spatial_rank(spatial_dims: int) -> bool:
    return spatial_dims in _INTERPOLATION
