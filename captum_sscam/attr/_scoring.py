"""The masked-scoring engine: the one loop that all Score-CAM variants run.

It streams work items ``(example, channel, noise sample)`` through the model in
batches on the model's device. For each item it builds the masked input from
the channel's upsampled mask, scores it, and accumulates the score of every
requested target into that channel's weight. Nothing here synchronises with
the host inside the loop, and memory is bounded by the batch size, not by the
number of channels or samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum._utils.common import _run_forward
from torch import Tensor
from tqdm.auto import tqdm

from captum_sscam.attr._masks import broadcast_to_input, upsampled_masks
from captum_sscam.attr._noise import GaussianNoise

ScoreMode = Literal["probability", "channel_softmax"]
SCORE_MODES: tuple[str, ...] = ("probability", "channel_softmax")


def select_scores(output: Tensor, targets: Tensor, score_mode: str) -> Tensor:
    """Scores ``(B, T)`` of the flat ``targets`` ``(B, T)`` in a model output.

    ``probability``: softmax over the class dimension (dim 1), as the official
    Score-CAM code does; ``channel_softmax``: the raw output (logit).
    An output with a single value per example is used as it is in both modes.
    """
    flat = output.reshape(output.shape[0], -1)
    if score_mode == "probability" and flat.shape[1] > 1:
        flat = output.softmax(dim=1).reshape(output.shape[0], -1)
    return flat.gather(1, targets)


@dataclass(frozen=True)
class MaskedScorer:
    """Scores masked copies of the inputs, one batch of work items at a time.

    Args:
        forward_func: the model (or any function of the inputs).
        additional_forward_args: passed to every forward; tensors whose first
            dimension is the batch are indexed per work item, others passed as is.
        score_mode: ``"probability"`` or ``"channel_softmax"`` (see :func:`select_scores`).
        batch_size: masked inputs per forward pass.
        noise: the SS-CAM noise sampler, or ``None`` for plain Score-CAM.
        samples: noise samples per channel (1 without noise).
        show_progress: show a tqdm bar over the masked inputs.
        autocast_dtype: run the masked forwards under ``torch.autocast`` with
            this dtype (``torch.bfloat16``; ``torch.float16`` on CUDA), or
            ``None`` for the inputs' own precision. Scores are taken in float32.
        channels_last: pass 4-D masked inputs in channels-last memory format
            (the model's convolutions then run channels-last; the model itself
            is not changed).
    """

    forward_func: Callable[..., Any]
    additional_forward_args: tuple[Any, ...] | None
    score_mode: str
    batch_size: int
    noise: GaussianNoise | None = None
    samples: int = 1
    show_progress: bool = False
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def items_per_batch(self) -> int:
        """Masked inputs per forward; even for antithetic noise, so pairs share a batch."""
        if self.noise is not None and self.noise.antithetic:
            return max(2, self.batch_size - self.batch_size % 2)
        return self.batch_size

    def channel_scores(
        self,
        inputs: tuple[Tensor, ...],
        activation: Tensor,
        active: Tensor,
        targets: Tensor,
        baselines: tuple[Tensor, ...] | None = None,
    ) -> Tensor:
        """Mean score of each active channel's masked input(s), ``(N, K, T)``.

        Args:
            inputs: the inputs, each ``(N, ..., *spatial)``.
            activation: layer activations ``(N, K, *layer_spatial)``.
            active: ``(N, K)`` bool, the channels to score; the others get 0.
            targets: ``(N, T)`` flat indices into the model output per example.
            baselines: inputs-shaped baselines; when given, masked inputs are
                ``X * H + b * (1 - H)`` and ``score(b)`` is subtracted.
        """
        num_examples, num_channels = activation.shape[:2]
        pairs = active.nonzero()  # the one host sync: how many items there are
        example_of_pair, channel_of_pair = pairs[:, 0], pairs[:, 1]
        num_items = pairs.shape[0] * self.samples
        device = targets.device
        dtype = torch.promote_types(activation.dtype, torch.float32)
        sums = torch.zeros(pairs.shape[0], targets.shape[1], device=device, dtype=dtype)
        baseline_scores = (
            self._score(baselines, torch.arange(num_examples, device=device), targets)
            if baselines is not None
            else None
        )
        with tqdm(
            total=num_items, unit="pass", disable=not self.show_progress, desc="masked forwards"
        ) as progress:
            step = self.items_per_batch
            for start in range(0, num_items, step):
                stop = min(start + step, num_items)
                pair_index = torch.arange(start, stop, device=device) // self.samples
                first_pair, last_pair = start // self.samples, (stop - 1) // self.samples
                pair_slice = slice(first_pair, last_pair + 1)
                maps = activation[example_of_pair[pair_slice], channel_of_pair[pair_slice]]
                examples = example_of_pair[pair_index]
                masked = self._masked_inputs(
                    inputs, baselines, maps, pair_index - first_pair, examples
                )
                scores = self._score(masked, examples, targets)
                if baseline_scores is not None:
                    scores = scores - baseline_scores[examples]
                sums.index_add_(0, pair_index, scores.to(dtype))
                progress.update(stop - start)
        dense = sums.new_zeros(num_examples, num_channels, targets.shape[1])
        dense[example_of_pair, channel_of_pair] = sums / self.samples
        return dense

    def _masked_inputs(
        self,
        inputs: tuple[Tensor, ...],
        baselines: tuple[Tensor, ...] | None,
        maps: Tensor,
        map_index: Tensor,
        examples: Tensor,
    ) -> tuple[Tensor, ...]:
        masked = []
        masks_by_size: dict[tuple[int, ...], Tensor] = {}  # inputs of one size share masks
        for index, tensor in enumerate(inputs):
            spatial_size = tuple(tensor.shape[tensor.dim() - (maps.dim() - 1) :])
            if spatial_size not in masks_by_size:
                masks_by_size[spatial_size] = upsampled_masks(maps, spatial_size)
            masks = masks_by_size[spatial_size].to(tensor.dtype)[map_index]
            if self.noise is not None and self.noise.on == "mask":
                masks = masks + self.noise.sample(masks, index)
            masks = broadcast_to_input(masks, tensor.dim())
            source = tensor if tensor.shape[0] == 1 else tensor[examples]
            if baselines is None:
                batch = source * masks
            else:
                baseline = baselines[index]
                baseline = baseline if baseline.shape[0] == 1 else baseline[examples]
                batch = torch.lerp(baseline, source, masks)
            if self.noise is not None and self.noise.on == "input":
                batch = batch + self.noise.sample(batch, index)
            if self.channels_last and batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            masked.append(batch)
        return tuple(masked)

    def _precision(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def _score(self, batch: tuple[Tensor, ...], examples: Tensor, targets: Tensor) -> Tensor:
        num_examples = targets.shape[0]
        args = self.additional_forward_args
        if args is not None:
            args = tuple(
                arg[examples]
                if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == num_examples
                else arg
                for arg in args
            )
        with self._precision(batch[0].device):
            output = _run_forward(self.forward_func, batch, None, args)
        if not isinstance(output, Tensor) or output.shape[0] != batch[0].shape[0]:
            raise RuntimeError(
                "the model must return a Tensor with one row per input example; got "
                f"{getattr(output, 'shape', type(output).__name__)} for "
                f"{batch[0].shape[0]} examples."
            )
        output = output.to(torch.promote_types(output.dtype, torch.float32))
        return select_scores(output, targets[examples], self.score_mode)
