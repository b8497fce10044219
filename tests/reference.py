"""An independent, plain loop-per-channel implementation of the Score-CAM family's formulas.

Deliberately naive: one example, one channel, one noise sample, one forward at
a time, with its own forward hook. The package is checked against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_sscam.attr._perturbations import GaussianNoise, seed_from
from captum_sscam.attr._work_items import WorkItems


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
    classes: list[int] | None,
    score_mode: str = "probability",
    baseline: Tensor | None = None,
    samples: int = 1,
    noise: Callable[[tuple[int, ...], int, int, int], Tensor] | None = None,
    mask_scales: list[float] | None = None,
    reshape: Callable[[Tensor], Tensor] | None = None,
    noise_on: str = "mask",
    relu: bool = True,
    score_of: Callable[[Any, int], float] | None = None,
) -> Tensor:
    """Score-CAM / SS-CAM / IS-CAM maps ``(N, 1, h, w)`` for one class per example.

    ``noise(shape, example, channel, sample)`` gives SS-CAM's draw for one work
    item; ``mask_scales`` (one per sample) gives IS-CAM's scaled masks; ``reshape``
    turns the layer's output into ``(N, K, h, w)`` maps. A channel whose map is
    constant, at the layer's resolution or once resized, gets weight 0. The score of
    one input is class ``classes[n]``'s softmax probability, sigmoid or logit by
    ``score_mode`` ("channel_softmax": the logit); or, with ``score_of(output, n)``,
    that function of the model's output for the one input, made from example ``n``.
    """
    activations = layer_output(model, layer, x)
    if reshape is not None:
        activations = reshape(activations)
    maps = []
    for n in range(x.shape[0]):
        image = x[n]

        def score(masked: Tensor, n: int = n) -> float:
            with torch.no_grad():
                output = model(masked.unsqueeze(0))
            if score_of is not None:
                return float(score_of(output, n))
            assert classes is not None
            logits = output[0]
            if score_mode == "probability":
                return float(torch.softmax(logits, dim=0)[classes[n]])
            if score_mode == "sigmoid":
                return float(torch.sigmoid(logits[classes[n]]))
            return float(logits[classes[n]])

        base = score(baseline[n]) if baseline is not None else 0.0
        channel_scores, valid = [], []
        for k in range(activations.shape[1]):
            a_k = activations[n, k]
            up = F.interpolate(
                a_k[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False
            )[0, 0]
            if float(a_k.max()) == float(a_k.min()) or float(up.max()) == float(up.min()):
                channel_scores.append(0.0)
                valid.append(False)
                continue
            h_k = (up - up.min()) / (up.max() - up.min())
            total = 0.0
            for sample in range(samples):
                mask = h_k if mask_scales is None else h_k * mask_scales[sample]
                if noise is not None and noise_on == "mask":
                    mask = h_k + noise(tuple(h_k.shape), n, k, sample)
                masked = image * mask
                if baseline is not None:
                    masked = masked + baseline[n] * (1 - mask)
                if noise is not None and noise_on == "input":
                    masked = masked + noise(tuple(image.shape), n, k, sample)
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


def replayed_noise(
    generator_seed: int,
    stdev: float,
    noise_on: str = "mask",
    antithetic: bool = False,
    device: str | torch.device = "cpu",
) -> Callable[[tuple[int, ...], int, int, int], Tensor]:
    """The draws a seeded SS-CAM call makes, per work item, for the reference loop.

    SS-CAM seeds each work item (example, channel, sample) from the call's seed,
    one number drawn from ``torch.Generator().manual_seed(generator_seed)``; the
    draws are made on ``device`` (the model's), returned on the CPU.
    """
    noise = GaussianNoise(
        (stdev,), noise_on, seed_from(torch.Generator().manual_seed(generator_seed)), antithetic
    )

    def draw(shape: tuple[int, ...], example: int, channel: int, sample: int) -> Tensor:
        items = WorkItems(
            torch.zeros(1, dtype=torch.long),
            np.array([example]),
            np.array([channel]),
            np.array([sample]),
        )
        like = torch.zeros(1, *shape, device=device)
        if noise_on == "mask":
            return noise.perturb_masks(like, 0, items)[0].cpu()
        return noise.perturb_masked(like, 0, items)[0].cpu()

    return draw
