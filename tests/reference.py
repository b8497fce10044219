"""An independent, plain loop-per-channel implementation of SPEC.md's formulas.

Deliberately naive: one example, one channel, one noise sample, one forward at
a time, with its own forward hook. The package is checked against it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def layer_output(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured[-1]


def reference_score_cam(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    classes: list[int],
    score_mode: str = "probability",
    baseline: Tensor | None = None,
    samples: int = 1,
    noise: Callable[[tuple[int, ...]], Tensor] | None = None,
    noise_on: str = "mask",
    relu: bool = True,
) -> Tensor:
    """Score-CAM / SS-CAM maps ``(N, 1, h, w)`` for one class per example."""
    activations = layer_output(model, layer, x)
    maps = []
    for n in range(x.shape[0]):
        image, cls = x[n], classes[n]

        def score(masked: Tensor, cls: int = cls) -> float:
            with torch.no_grad():
                out = model(masked.unsqueeze(0))[0]
            if score_mode == "probability":
                out = torch.softmax(out, dim=0)
            return float(out[cls])

        base = score(baseline[n]) if baseline is not None else 0.0
        channel_scores, valid = [], []
        for k in range(activations.shape[1]):
            a_k = activations[n, k]
            if float(a_k.max()) == float(a_k.min()):
                channel_scores.append(0.0)
                valid.append(False)
                continue
            up = F.interpolate(
                a_k[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False
            )[0, 0]
            h_k = (up - up.min()) / (up.max() - up.min())
            total = 0.0
            for _ in range(samples):
                mask = h_k
                if noise is not None and noise_on == "mask":
                    mask = h_k + noise((1, *h_k.shape))[0]
                masked = image * mask
                if baseline is not None:
                    masked = masked + baseline[n] * (1 - mask)
                if noise is not None and noise_on == "input":
                    masked = masked + noise(tuple(image.shape))
                total += score(masked) - base
            channel_scores.append(total / samples)
            valid.append(True)
        a = torch.tensor(channel_scores, dtype=activations.dtype)
        if score_mode == "channel_softmax":
            w = torch.zeros_like(a)
            keep = torch.tensor(valid)
            w[keep] = torch.softmax(a[keep], dim=0)
        else:
            w = a
        cam = (w[:, None, None] * activations[n]).sum(0, keepdim=True)
        maps.append(F.relu(cam) if relu else cam)
    return torch.stack(maps)
