"""What deleted pixels become, or what insertion starts from."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_sscam._core.checks import broadcast_finite

Substrate = str | float | Tensor

BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0


def gaussian_blur(
    images: Tensor, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> Tensor:
    """Each channel blurred by a normalised Gaussian (RISE: kernel 11, sigma 5).

    Separable; borders are padded by replicating the edge pixels, so the blur
    adds no dark frame.
    """
    offsets = torch.arange(kernel_size, dtype=images.dtype, device=images.device)
    offsets = offsets - (kernel_size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    pad = kernel_size // 2
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1)
    blurred = F.conv2d(
        F.pad(images, (pad, pad, 0, 0), mode="replicate"), horizontal, groups=channels
    )
    return F.conv2d(F.pad(blurred, (0, 0, pad, pad), mode="replicate"), vertical, groups=channels)


def substrate_images(substrate: Substrate, inputs: Tensor) -> Tensor:
    """``"zeros"``, ``"blur"``, a constant, or a tensor broadcastable to ``inputs``."""
    if isinstance(substrate, str):
        if substrate == "zeros":
            return torch.zeros_like(inputs)
        if substrate == "blur":
            return gaussian_blur(inputs)
        raise ValueError(
            f"substrate must be 'zeros', 'blur', a number or a tensor, got {substrate!r}."
        )
    if isinstance(substrate, numbers.Real) and not isinstance(substrate, bool):
        if not torch.isfinite(torch.tensor(float(substrate))):
            raise ValueError(f"substrate constant must be finite, got {substrate!r}.")
        return torch.full_like(inputs, float(substrate))
    if not isinstance(substrate, Tensor):
        raise TypeError(
            f"substrate must be 'zeros', 'blur', a number or a tensor, got "
            f"{type(substrate).__name__}."
        )
    return broadcast_finite(substrate, inputs, "substrate tensor", "the inputs' shape")
