"""Noise samplers for SS-CAM: where the noise goes and how it is drawn."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

NoiseTarget = Literal["mask", "input"]
NOISE_TARGETS: tuple[str, ...] = ("mask", "input")
NoiseSampling = Literal["iid", "antithetic"]
NOISE_SAMPLINGS: tuple[str, ...] = ("iid", "antithetic")


@dataclass(frozen=True)
class GaussianNoise:
    """i.i.d. ``Normal(0, stdev^2)`` noise, a fresh draw per element and per sample.

    ``on="mask"`` perturbs the upsampled mask (SS-CAM variant 1, ``X * (H_k + e)``);
    ``on="input"`` perturbs the masked input (variant 2, ``X * H_k + e``).
    ``stdevs`` holds one absolute standard deviation per input tensor, as in
    Captum's NoiseTunnel.

    ``antithetic=True`` draws half the samples and pairs each draw ``e`` with
    ``-e`` (rows ``2j`` and ``2j + 1`` of a batch). Each sample is still
    ``Normal(0, stdev^2)``, so the mean score keeps its expectation, and the odd
    part of the score's dependence on the noise cancels exactly within a pair:
    for a score that is nearly linear in the noise this removes most of the
    Monte-Carlo variance at the same number of forward passes. The engine keeps
    pairs inside one batch (even samples per channel, even batch sizes).
    """

    stdevs: tuple[float, ...]
    on: NoiseTarget = "mask"
    generator: torch.Generator | None = None
    antithetic: bool = False

    def sample(self, like: Tensor, input_index: int) -> Tensor:
        """Noise shaped like ``like`` (a batch of masks or of masked inputs)."""
        stdev = self.stdevs[input_index]
        generator = self.generator
        device = like.device if generator is None else generator.device
        shape = like.shape
        if self.antithetic:
            shape = (shape[0] // 2, *shape[1:])
        noise = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
        if self.antithetic:
            noise = torch.stack([noise, -noise], dim=1).flatten(0, 1)
        return noise.to(like.device).mul_(stdev)


def check_stdevs(stdevs: object, num_inputs: int) -> tuple[float, ...]:
    """Validate ``stdevs`` (a real or one real per input) and return one per input."""
    values: Sequence[object]
    if isinstance(stdevs, (tuple, list)):
        if len(stdevs) != num_inputs:
            raise ValueError(
                f"stdevs has {len(stdevs)} entries but there are {num_inputs} inputs; "
                "give one number, or one per input tensor."
            )
        values = stdevs
    else:
        values = [stdevs] * num_inputs
    checked = []
    for value in values:
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"stdevs must be real numbers, got {value!r}.")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"stdevs must be finite and >= 0, got {value}.")
        checked.append(value)
    return tuple(checked)
