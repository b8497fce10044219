"""Reshape transforms: turn a transformer layer's output into ``(N, channels, h, w)`` maps.

Score-CAM masks the input with each channel's spatial map, so it needs activations
shaped ``(N, K, *spatial)``. A ViT block returns tokens ``(N, P + T, D)`` (``P``
prefix tokens such as the class token, ``T = h * w`` patch tokens, ``D`` channels)
and a Swin stage returns ``(N, h, w, C)``. Pass one of these functions (or your own)
as ``reshape_transform`` to any method of this package; it is applied to the layer's
output before anything else, as in torchcam and pytorch-grad-cam.
"""

from __future__ import annotations

import math

from torch import Tensor


def vit_reshape_transform(
    tokens: Tensor, grid: tuple[int, int] | None = None, prefix_tokens: int = 1
) -> Tensor:
    """ViT tokens ``(N, P + h * w, D)`` -> maps ``(N, D, h, w)``.

    Drops the first ``prefix_tokens`` tokens (the class token, plus register or
    distillation tokens where the model has them), lays the remaining patch
    tokens out row by row on the ``grid`` and moves the embedding dimension to
    the channel axis.

    Args:
        tokens: a transformer block's output, ``(N, P + T, D)``.
        grid: ``(h, w)`` patch grid; ``None`` infers a square grid from ``T``.
        prefix_tokens: how many tokens precede the patch tokens (1 for
            torchvision's ViT and timm's default ViTs; 0 for models without a
            class token; 1 + registers for models with register tokens).

    Returns:
        ``(N, D, h, w)``, a view-compatible permutation of the patch tokens.

    Example:
        ```python
        from functools import partial
        from captum_sscam import ScoreCAM, vit_reshape_transform
        cam = ScoreCAM(vit, vit.encoder.layers[-1],
                       reshape_transform=partial(vit_reshape_transform, prefix_tokens=1))
        ```
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 3:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(
            f"vit_reshape_transform takes tokens shaped (N, tokens, dim); got {shape}."
        )
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be an integer >= 0, got {prefix_tokens!r}.")
    num_patches = tokens.shape[1] - prefix_tokens
    if num_patches < 1:
        raise ValueError(
            f"the layer gives {tokens.shape[1]} tokens, but prefix_tokens={prefix_tokens} "
            "leaves no patch tokens."
        )
    height, width = _patch_grid(num_patches, grid, prefix_tokens)
    patches = tokens[:, prefix_tokens:, :]
    return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def channels_last_reshape_transform(activation: Tensor) -> Tensor:
    """Channels-last maps ``(N, *spatial, C)`` -> ``(N, C, *spatial)``.

    For layers that keep channels last, such as the stages of torchvision's
    Swin Transformer (``(N, h, w, C)``): ``ScoreCAM(swin, swin.features[-1],
    reshape_transform=channels_last_reshape_transform)``.
    """
    if not isinstance(activation, Tensor) or activation.dim() < 3:
        shape = tuple(activation.shape) if isinstance(activation, Tensor) else activation
        raise ValueError(
            "channels_last_reshape_transform takes (N, *spatial, channels) activations; "
            f"got {shape}."
        )
    return activation.movedim(-1, 1)


def _patch_grid(
    num_patches: int, grid: tuple[int, int] | None, prefix_tokens: int
) -> tuple[int, int]:
    if grid is not None:
        if (
            not isinstance(grid, (tuple, list))
            or len(grid) != 2
            or not all(isinstance(size, int) and size > 0 for size in grid)
        ):
            raise ValueError(f"grid must be a pair of positive ints (h, w), got {grid!r}.")
        if grid[0] * grid[1] != num_patches:
            raise ValueError(
                f"grid {tuple(grid)} holds {grid[0] * grid[1]} patches but the layer gives "
                f"{num_patches} patch tokens (after {prefix_tokens} prefix tokens); check "
                "grid and prefix_tokens."
            )
        return int(grid[0]), int(grid[1])
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(
            f"{num_patches} patch tokens (after {prefix_tokens} prefix tokens) do not form a "
            "square grid; pass grid=(h, w) for non-square inputs, or the right prefix_tokens "
            "(class and register tokens)."
        )
    return side, side
