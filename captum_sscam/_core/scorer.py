"""The masked-scoring engine: the one loop that every Score-CAM variant and metric runs.

It streams work items through the model in batches on the model's device: for a
Score-CAM variant an item is ``(example, channel, sample)`` and its input is the
example masked by the channel's upsampled mask, perturbed per sample; for a
metric an item is a perturbed copy of an example. Each item's score of every
requested target is returned. Nothing here synchronises with the host inside
the loop, and memory is bounded by the batch size, not by the number of items.

Two rules hold for every forward the package makes:

- tensors in ``additional_forward_args`` follow their example: Captum's contract
  is that a tensor argument's first dimension is the batch, so row ``i`` belongs
  to example ``i`` (``check_forward_args``, ``follow_example``);
- a target is resolved once, on the capture forward (``resolve_targets``): flat
  indices ``(N, T)`` into each example's output, whose score is a class
  probability (softmax over dim 1), a class's own sigmoid or the raw output
  (``select_scores``); or a callable of the output whose scores are used as they are.

A score mode (``SCORE_RULES``) says both how a masked input is scored and how the
channels' scores become weights, in one place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from captum._utils.common import _run_forward
from torch import Tensor
from tqdm.auto import tqdm

from captum_sscam._core.targets import Targets

SCORE_KINDS: tuple[str, ...] = ("probability", "sigmoid", "logit")


@dataclass(frozen=True)
class ScoreRule:
    """One score mode: how a masked input is scored, and how channel scores become weights.

    ``score_kind`` is what ``select_scores`` takes of the model's output ``z`` for an
    index target ``c``; ``softmax_weights`` says whether the channels' scores ``a_k``
    become weights ``w = softmax_k(a)`` over the scored channels (else ``w = a``, the
    official code). A callable target's scores are used as they are (no ``score_kind``),
    and weighted by ``softmax_weights`` all the same.
    """

    score_kind: str
    softmax_weights: bool


SCORE_RULES: dict[str, ScoreRule] = {
    # softmax_c(z): single-label classifiers; w = a (the official Score-CAM code)
    "probability": ScoreRule("probability", softmax_weights=False),
    # sigmoid(z_c): multi-label classifiers, each class on its own; w = a
    "sigmoid": ScoreRule("sigmoid", softmax_weights=False),
    # z_c: regression, unnormalised scores; w = a (the official weights on the raw output)
    "logit": ScoreRule("logit", softmax_weights=False),
    # z_c, w = softmax_k(a): the paper's Algorithm 1, torchcam, grad-cam
    "channel_softmax": ScoreRule("logit", softmax_weights=True),
}
# A progress bar by default once a call makes more masked forwards than this.
PROGRESS_THRESHOLD = 1000


def select_scores(output: Tensor, targets: Tensor, score_kind: str) -> Tensor:
    r"""Scores ``(B, T)`` of the flat ``targets`` ``(B, T)`` in a model ``output`` ``z``.

    ``probability``: $\mathrm{softmax}(z)_c = e^{z_c} / \sum_j e^{z_j}$ over the class
    dimension (dim 1), as the official Score-CAM code does (an output with a single
    value per example is used as it is); ``sigmoid``: $\sigma(z_c) = 1 / (1 + e^{-z_c})$,
    each class on its own (multi-label); ``logit``: the raw output $z_c$.
    """
    output = output.to(torch.promote_types(output.dtype, torch.float32))
    flat = output.reshape(output.shape[0], -1)
    if score_kind == "probability" and flat.shape[1] > 1:
        flat = output.softmax(dim=1).reshape(output.shape[0], -1)
    scores = flat.gather(1, targets)
    return scores.sigmoid() if score_kind == "sigmoid" else scores


def check_forward_args(args: tuple[Any, ...] | None, num_examples: int) -> None:
    """Enforce Captum's contract: a tensor argument has one row per example.

    Captum documents that the first dimension of a tensor in
    ``additional_forward_args`` corresponds to the examples; the engine gives
    each masked input its example's row. A tensor that is not per example (for
    instance one weight per class) cannot be told apart from a per-example one
    when the lengths happen to match, so it is refused rather than guessed at.
    """
    for index, arg in enumerate(args or ()):
        if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] != num_examples:
            raise ValueError(
                f"additional_forward_args[{index}] is a tensor with {arg.shape[0]} rows but "
                f"the batch has {num_examples} examples. Following Captum's contract, a "
                "tensor argument has one row per example, and each masked input gets its "
                "example's row. Pass other tensors by closing over them instead, e.g. "
                "functools.partial(model, weights=w) or lambda x: model(x, w)."
            )


def follow_example(args: tuple[Any, ...] | None, examples: Tensor) -> tuple[Any, ...] | None:
    """``args`` for a batch of items: each tensor's rows of the items' ``examples``."""
    if args is None:
        return None
    return tuple(
        arg[examples.to(arg.device)] if isinstance(arg, Tensor) and arg.dim() > 0 else arg
        for arg in args
    )


def _synchronized_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def progress_bar(total: int, show: bool | None, description: str) -> tqdm:
    """A tqdm bar over ``total`` forwards: shown when asked, or when long and not silenced."""
    enabled = total > PROGRESS_THRESHOLD if show is None else show
    return tqdm(total=total, unit="pass", disable=not enabled, desc=description, leave=False)


# Batches timed per memory format when choosing one (the faster time of each counts).
CALIBRATION_ROUNDS = 2


@dataclass
class MemoryFormatCalibration:
    """Chooses contiguous or channels-last for 4-D batches by timing real batches.

    The first full batches of a call alternate between the two formats, channels-last
    first (their scores are used like any others). The first batch of a call also pays
    for memory and kernels the process has not used yet, so when channels-last is
    faster in the first round despite that handicap it is chosen at once, and only
    one batch ran in the slower format. Otherwise a second round is timed and each
    format's best time counts. The choice is kept in ``choices`` under the call's key,
    so later calls with the same model, device, input shape and batch size skip the
    calibration.
    """

    choices: dict[Any, bool]
    key: Any
    times: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})

    @property
    def decided(self) -> bool | None:
        return self.choices.get(self.key)

    def next_trial(self) -> bool:
        return len(self.times[True]) <= len(self.times[False])

    def record(self, channels_last: bool, seconds: float) -> None:
        self.times[channels_last].append(seconds)
        rounds = min(len(times) for times in self.times.values())
        if rounds == 0:
            return
        channels_last_faster = min(self.times[True]) < min(self.times[False])
        first_round_won = len(self.times[True]) == 1 and channels_last_faster
        if rounds >= CALIBRATION_ROUNDS or first_round_won:
            self.choices[self.key] = channels_last_faster


@dataclass(frozen=True)
class BatchScorer:
    """Scores batches of items built on demand, ``batch_size`` items per forward.

    Args:
        forward_func: the model (or any function of the inputs).
        forward_args: ``additional_forward_args`` (checked by ``check_forward_args``).
        score_kind: ``"probability"``, ``"sigmoid"`` or ``"logit"``: how an index
            target's score is taken of the output (see ``select_scores``).
        batch_size: items per forward pass.
        autocast_dtype: run forwards under ``torch.autocast`` with this dtype, or
            ``None`` for the inputs' own precision. Scores are taken in float32.
        channels_last: pass 4-D batches in channels-last memory format
            (``True``), as they are (``False``), or choose by timing real batches
            (``None``, with ``calibration``).
        calibration: where the automatic choice is made and kept.
        fixed_batches: give every forward ``batch_size`` rows (a short batch is
            padded by repeating its last row; the extra scores are dropped) and
            contiguous tensors unless ``channels_last``, so that a compiled
            ``forward_func`` sees one shape and one layout.
    """

    forward_func: Callable[..., Any]
    forward_args: tuple[Any, ...] | None
    score_kind: str
    batch_size: int
    autocast_dtype: torch.dtype | None = None
    channels_last: bool | None = False
    calibration: MemoryFormatCalibration | None = None
    fixed_batches: bool = False

    def scores(
        self,
        num_items: int,
        examples: Tensor,
        build: Callable[[int, int], tuple[Tensor, ...]],
        targets: Targets,
        progress: tqdm | None = None,
    ) -> Tensor:
        """``(num_items, T)`` scores; ``build(start, stop)`` makes the items' inputs.

        ``examples`` ``(num_items,)`` holds each item's example, which picks its
        targets (rows of ``targets.indices``, or the examples a callable target is
        told) and forward arguments.
        """
        out = torch.empty(num_items, targets.num_targets, device=targets.device)
        for start in range(0, num_items, self.batch_size):
            stop = min(start + self.batch_size, num_items)
            batch, batch_examples = build(start, stop), examples[start:stop]
            channels_last = self._memory_format(num_items - start)
            if channels_last is None and self.calibration is not None:
                # a calibration batch: timed in the format on trial
                trial = self.calibration.next_trial()
                began = _synchronized_time(batch[0].device)
                out[start:stop] = self.score_batch(batch, batch_examples, targets, trial)
                self.calibration.record(trial, _synchronized_time(batch[0].device) - began)
            else:
                out[start:stop] = self.score_batch(
                    batch, batch_examples, targets, bool(channels_last)
                )
            if progress is not None:
                progress.update(stop - start)
        return out

    def _memory_format(self, items_left: int) -> bool | None:
        """The format of the next batch; ``None`` while calibrating."""
        if self.channels_last is not None:
            return self.channels_last
        if self.calibration is None:
            return False
        decided = self.calibration.decided
        if decided is not None:
            return decided
        calibrating = sum(len(times) for times in self.calibration.times.values())
        batches_needed = 2 * CALIBRATION_ROUNDS - calibrating
        return None if items_left >= batches_needed * self.batch_size else False

    def score_batch(
        self,
        batch: tuple[Tensor, ...],
        examples: Tensor,
        targets: Targets,
        channels_last: bool = False,
    ) -> Tensor:
        """Scores ``(B, T)`` of one batch whose rows belong to ``examples``.

        An index target needs a Tensor output with one row per input; a callable
        target gets the output as it is (a tensor, tuple, dict, list of dicts) and
        its result is checked (``Targets.called``)."""
        rows, forward_examples = batch[0].shape[0], examples
        if self.fixed_batches and rows < self.batch_size:
            batch, forward_examples = _padded(batch, examples, self.batch_size)
        if channels_last:
            batch = tuple(
                x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                for x in batch
            )
        elif self.fixed_batches:  # one layout too (masked inputs follow the input's strides)
            batch = tuple(x.contiguous() for x in batch)
        with self._precision(batch[0].device):
            output = _run_forward(
                self.forward_func, batch, None, follow_example(self.forward_args, forward_examples)
            )
        if targets.indices is None:
            return targets.called(output, forward_examples)[:rows]
        if not isinstance(output, Tensor) or output.shape[0] != batch[0].shape[0]:
            raise RuntimeError(
                "the model must return a Tensor with one row per input example; got "
                f"{getattr(output, 'shape', type(output).__name__)} for "
                f"{batch[0].shape[0]} examples."
            )
        indices = targets.indices[examples.to(targets.device)]
        return select_scores(output[:rows], indices, self.score_kind)

    def _precision(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def _padded(
    batch: tuple[Tensor, ...], examples: Tensor, size: int
) -> tuple[tuple[Tensor, ...], Tensor]:
    """``batch`` and ``examples`` with their last row repeated up to ``size`` rows."""
    extra = size - examples.shape[0]
    batch = tuple(torch.cat([x, x[-1:].expand(extra, *x.shape[1:])]) for x in batch)
    return batch, torch.cat([examples, examples[-1:].expand(extra)])
