"""Score-CAM's masked inputs: each work item's example masked by its channel's upsampled map."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from captum_sscam.attr._masks import broadcast_to_input, upsampled_masks
from captum_sscam.attr._perturbations import Perturbation
from captum_sscam.attr._work_items import WorkItems


@dataclass(frozen=True)
class MaskedInputs:
    """Builds the masked inputs of Score-CAM work items from one layer tensor.

    Args:
        inputs: the inputs, each ``(N, ..., *spatial)``.
        baselines: inputs-shaped baselines, or ``None``; with them the masked
            input is ``X * H + b * (1 - H)``.
        maps: ``(P, *layer_spatial)`` activation maps of the call's
            (example, channel) pairs.
        pair_examples: ``(P,)`` the example of each pair.
        perturbation: what each sample does to its mask or masked input.
    """

    inputs: tuple[Tensor, ...]
    baselines: tuple[Tensor, ...] | None
    maps: Tensor
    pair_examples: Tensor
    perturbation: Perturbation

    def build(self, items: WorkItems) -> tuple[Tensor, ...]:
        maps = self.maps[items.pair]
        examples = self.pair_examples[items.pair]
        masked = []
        masks_by_size: dict[tuple[int, ...], Tensor] = {}  # inputs of one size share masks
        for index, tensor in enumerate(self.inputs):
            spatial_size = tuple(tensor.shape[tensor.dim() - (maps.dim() - 1) :])
            if spatial_size not in masks_by_size:
                masks_by_size[spatial_size] = upsampled_masks(maps, spatial_size)
            masks = masks_by_size[spatial_size].to(tensor.dtype)
            masks = self.perturbation.perturb_masks(masks, index, items)
            masks = broadcast_to_input(masks, tensor.dim())
            source = tensor if tensor.shape[0] == 1 else tensor[examples]
            if self.baselines is None:
                batch = source * masks
            else:
                baseline = self.baselines[index]
                baseline = baseline if baseline.shape[0] == 1 else baseline[examples]
                batch = torch.lerp(baseline, source, masks)
            masked.append(self.perturbation.perturb_masked(batch, index, items))
        return tuple(masked)
