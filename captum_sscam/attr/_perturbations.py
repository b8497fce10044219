"""Per-sample perturbations of the masked inputs, and how their noise is seeded.

Every Score-CAM variant scores work items ``(example, channel, sample)``. A
perturbation changes the item's mask ``H`` before the input is masked and/or the
masked input after it:

- none (Score-CAM): ``M = X * H``;
- ``GaussianNoise`` on the mask (SS-CAM variant 1): ``M = X * (H + e)``;
- ``GaussianNoise`` on the input (SS-CAM variant 2): ``M = X * H + e``;
- ``MaskScaling`` (IS-CAM): ``M = X * (c_s H)`` for sample ``s``.

Noise is seeded per work item: the draw of item ``(example, channel, sample)``
depends only on the call's seed and on that item, never on how items are
batched, so the masked inputs of a seeded call are the same bit for bit whatever
``perturbations_per_eval``, the automatic batch size or the phases of adaptive
sampling, and its map is the same up to float rounding (the forwards may round
differently at another batch size).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from captum_sscam.attr._work_items import WorkItems

NoisePlacement = Literal["mask", "input"]
NOISE_PLACEMENTS: tuple[str, ...] = ("mask", "input")
NoiseSampling = Literal["iid", "antithetic"]
NOISE_SAMPLINGS: tuple[str, ...] = ("iid", "antithetic")

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# |torch.randn| stays below this: its Box-Muller draws from uniforms of at most 53 bits reach
# sqrt(2 ln 2^53) = 8.6 (24 bits: 5.8); the overflow check of GaussianNoise uses it.
NORMAL_DRAW_BOUND = 10.0


class Perturbation:
    """No perturbation (Score-CAM). Subclasses override one or both hooks."""

    def perturb_masks(self, masks: Tensor, input_index: int, items: WorkItems) -> Tensor:
        """Masks ``(B, *spatial)`` of the items, before the input is masked."""
        return masks

    def perturb_masked(self, masked: Tensor, input_index: int, items: WorkItems) -> Tensor:
        """Masked inputs ``(B, ...)`` of the items, before the forward pass."""
        return masked

    def check_inputs(self, inputs: tuple[Tensor, ...]) -> None:
        """Raise if this perturbation cannot be computed for ``inputs`` (before any forward)."""


@dataclass(frozen=True)
class GaussianNoise(Perturbation):
    """SS-CAM's noise: ``Normal(0, stdev^2)`` i.i.d. per element, per sample, per channel.

    ``on="mask"`` adds it to the upsampled mask (variant 1, ``X * (H_k + e)``;
    one draw per spatial position, shared by the input's colour channels);
    ``on="input"`` to the masked input (variant 2, ``X * H_k + e``).
    ``stdevs`` holds one absolute standard deviation per input tensor, as in
    Captum's NoiseTunnel.

    ``antithetic=True`` pairs samples ``2j`` and ``2j + 1`` of a channel: the
    second uses the first's draw negated. Each sample is still
    ``Normal(0, stdev^2)``, so the mean score keeps its expectation, and the odd
    part of the score's dependence on the noise cancels within a pair.
    """

    stdevs: tuple[float, ...]
    on: NoisePlacement
    seed: int
    antithetic: bool = False
    _generators: dict[torch.device, torch.Generator] = field(
        default_factory=dict, compare=False, repr=False
    )

    def perturb_masks(self, masks: Tensor, input_index: int, items: WorkItems) -> Tensor:
        if self.on != "mask":
            return masks
        return masks + self._noise(masks, input_index, items)

    def perturb_masked(self, masked: Tensor, input_index: int, items: WorkItems) -> Tensor:
        if self.on != "input":
            return masked
        return masked + self._noise(masked, input_index, items)

    def check_inputs(self, inputs: tuple[Tensor, ...]) -> None:
        """Refuse a standard deviation whose noise overflows the input's dtype.

        The noise is computed in the input's dtype (at least float32), and the masked
        input from it: ``|X (H + e)|`` or ``|X H + e|`` stays below ``(1 + |e|) s`` with
        ``s = max(1, max |X|)`` and ``|e| < NORMAL_DRAW_BOUND x stdev``. Where that can
        exceed half the dtype's largest value, masked inputs, scores and maps would be
        infinite or NaN.
        """
        for index, (stdev, tensor) in enumerate(zip(self.stdevs, inputs, strict=True)):
            largest = torch.finfo(tensor.dtype).max / 2
            scale = max(1.0, float(tensor.abs().max()))
            if stdev * NORMAL_DRAW_BOUND * scale > largest:
                bound = largest / (NORMAL_DRAW_BOUND * scale)
                raise ValueError(
                    f"stdevs={stdev:g} overflows input {index}'s dtype, {tensor.dtype}: its "
                    f"noise reaches {NORMAL_DRAW_BOUND:g} x stdev, which times max(1, max "
                    f"|input|) = {scale:g} exceeds {largest:.3g}, half the largest "
                    f"{tensor.dtype} value, and would make the map NaN. Noise that large would "
                    "also leave nothing of the input or the mask: every masked input would be "
                    f"noise only. Use stdevs below {bound:.3g}."
                )

    def _noise(self, like: Tensor, input_index: int, items: WorkItems) -> Tensor:
        stdev = self.stdevs[input_index]
        draw = items.sample // 2 if self.antithetic else items.sample
        seeds = item_seeds(self.seed, input_index, items.example, items.channel, draw)
        generator = self._generator(like.device)
        noise = torch.empty(like.shape, device=like.device, dtype=torch.float32)
        for row, seed in enumerate(seeds.tolist()):
            generator.manual_seed(seed)
            torch.randn(like.shape[1:], generator=generator, out=noise[row])
        if self.antithetic:
            signs = 1.0 - 2.0 * torch.from_numpy(items.sample % 2).to(like.device, torch.float32)
            noise.mul_(signs.view(-1, *([1] * (like.dim() - 1))))
        # scaled in the input's dtype (at least float32, the draws' own): check_inputs bounds it
        return noise.to(torch.promote_types(like.dtype, torch.float32)).mul_(stdev).to(like.dtype)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        return self._generators[device]


@dataclass(frozen=True)
class MaskScaling(Perturbation):
    """IS-CAM's integration: sample ``s`` scales the mask by ``coefficients[s]``."""

    coefficients: tuple[float, ...]

    def perturb_masks(self, masks: Tensor, input_index: int, items: WorkItems) -> Tensor:
        scale = torch.tensor(self.coefficients, dtype=masks.dtype)[items.sample]
        return masks * scale.to(masks.device).view(-1, *([1] * (masks.dim() - 1)))


def integration_coefficients(n_steps: int) -> tuple[float, ...]:
    """IS-CAM's cumulative coefficients ``c_s = sum_{j <= s} j / n_steps``, ``s = 1..n_steps``."""
    return tuple(float(c) for c in np.cumsum(np.arange(1, n_steps + 1) / n_steps))


def check_generator(generator: object) -> None:
    """Raise unless ``generator`` is a ``torch.Generator`` or ``None``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) "
            f"or None, got {type(generator).__name__}."
        )


def seed_from(generator: torch.Generator | None) -> int:
    """The call's base seed: one draw from ``generator``, or from torch's global RNG."""
    check_generator(generator)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (), generator=generator, device=device).item())


def item_seeds(
    seed: int, input_index: int, example: np.ndarray, channel: np.ndarray, draw: np.ndarray
) -> np.ndarray:
    """A 63-bit seed per work item, a hash of the call's seed and the item alone."""
    with np.errstate(over="ignore"):
        state = _splitmix64(np.full(len(example), seed, dtype=np.uint64))
        for value in (input_index, example, channel, draw):
            state = _splitmix64(state ^ np.asarray(value, dtype=np.uint64))
    return (state >> np.uint64(1)).astype(np.int64)


def _splitmix64(state: np.ndarray) -> np.ndarray:
    state = (state + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    state = ((state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    state = ((state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return state ^ (state >> np.uint64(31))


def check_stdevs(stdevs: object, num_inputs: int | None) -> tuple[float, ...]:
    """Validate ``stdevs`` (a real or one real per input) and return one per input.

    ``num_inputs=None`` (checking arguments without inputs) accepts any number of entries.
    """
    values: Sequence[object]
    if isinstance(stdevs, (tuple, list)):
        if num_inputs is not None and len(stdevs) != num_inputs:
            raise ValueError(
                f"stdevs has {len(stdevs)} entries but there are {num_inputs} inputs; "
                "give one number, or one per input tensor."
            )
        values = stdevs
    else:
        values = [stdevs] * (num_inputs or 1)
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
