"""What a call scores: every Captum target form as flat indices into the model's output,
or a callable target of the output.

Two kinds of target, resolved once on the capture forward (``resolve_targets``):

- an index target (every Captum form, and ``(N, T)`` integer tensors) picks values of a
  Tensor output, scored by the score mode (``_core.scorer.select_scores``);
- a callable target is a function of the model's output for a batch of (masked)
  inputs, whatever the model returns (a tensor, a tuple, a dict, a list of dicts),
  returning one score per input ``(B,)`` or ``T`` of them ``(B, T)``, used as they are.
  A plain callable is called as ``target(output)``; an ``ExampleTarget`` as
  ``target(output, examples)``, with the index of the example each row was made from
  (rows of one batch can belong to different examples), for targets that hold data per
  example (a box, a region, a reference embedding).
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from captum._utils.typing import TargetType
from torch import Tensor

# What the methods and the metrics accept as ``target``: Captum's forms or a callable.
AnyTarget: TypeAlias = TargetType | Callable[..., Tensor]


class ExampleTarget(abc.ABC):
    """A callable target that is told which example each row of a batch belongs to.

    The engine calls it as ``target(output, examples)``: ``output`` is the model's
    output for a batch of (masked) inputs, ``examples`` ``(B,)`` (a long tensor on the
    inputs' device) the index, among the call's inputs, of the example each row was
    made from. It returns ``(B,)`` or ``(B, T)`` floating-point scores. Subclasses
    holding data for each example say how many in ``num_examples``, which the call
    checks against its inputs.
    """

    @property
    def num_examples(self) -> int | None:
        """How many examples it holds data for; ``None`` when it is the same for all."""
        return None

    @abc.abstractmethod
    def __call__(self, output: Any, examples: Tensor) -> Tensor:
        """Scores ``(B,)`` or ``(B, T)`` of the rows of ``output``."""


@dataclass(frozen=True)
class Targets:
    """A call's resolved target: ``indices`` ``(N, T)`` (an index target) or ``function``.

    ``num_targets`` is ``T``, the scores (and maps) per example; the scores live on
    ``device`` (the model output's for indices, the inputs' for a callable).
    """

    num_examples: int
    num_targets: int
    device: torch.device
    indices: Tensor | None = None
    function: Callable[..., Tensor] | None = None

    def called(self, output: Any, examples: Tensor) -> Tensor:
        """``(B, T)`` scores of the callable target for a batch of rows of ``examples``."""
        assert self.function is not None
        return called_target(self.function, output, examples.to(self.device), self.num_targets)


def resolve_targets(
    target: AnyTarget, output: Any, num_examples: int, device: torch.device
) -> Targets:
    """The ``Targets`` of ``target`` for the model's ``output`` on the call's inputs.

    A callable is called once on ``output`` and its scores checked: shape ``(N,)`` or
    ``(N, T)``, floating point, on ``device``, finite. An index target needs a Tensor
    output (``flat_target_indices``).
    """
    if callable(target):
        if isinstance(target, ExampleTarget) and target.num_examples not in (None, num_examples):
            raise ValueError(
                f"target holds data for {target.num_examples} examples but the inputs have "
                f"{num_examples}; give one row per example, or one for all."
            )
        examples = torch.arange(num_examples, device=device)
        scores = called_target(target, output, examples, None)
        check_finite_scores(scores, "the inputs")
        return Targets(num_examples, scores.shape[1], device, function=target)
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model must return a Tensor for an index target, got: {describe(output)}; "
            "pass target= a function of the model's output returning one score per example "
            "(e.g. lambda output: output['logits'][:, 3], or a captum_sscam.targets object "
            "for segmentation, detection and embeddings), or wrap the model in a function "
            "that returns the scores to explain."
        )
    indices = flat_target_indices(target, output)
    return Targets(indices.shape[0], indices.shape[1], indices.device, indices=indices)


def called_target(
    target: Callable[..., Tensor], output: Any, examples: Tensor, num_targets: int | None
) -> Tensor:
    """``(B, T)`` scores of a callable ``target``, checked (``T`` is ``num_targets`` if given)."""
    try:
        scores = target(output, examples) if isinstance(target, ExampleTarget) else target(output)
    except Exception as error:
        raise RuntimeError(
            f"target raised {type(error).__name__}: {error} -- it was called on the model's "
            f"output for a batch of {len(examples)} inputs ({describe(output)}). A callable "
            "target takes that output and returns one score per input, (B,) or (B, T)."
        ) from error
    return checked_scores(scores, len(examples), num_targets, examples.device)


def checked_scores(
    scores: object, rows: int, num_targets: int | None, device: torch.device
) -> Tensor:
    """``scores`` as ``(rows, T)``, or a ``TypeError``/``ValueError`` that says what is wrong."""
    if num_targets is None:
        expected = f"({rows},) or ({rows}, T)"
    else:
        expected = f"({rows},) or ({rows}, 1)" if num_targets == 1 else f"({rows}, {num_targets})"
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"target returned {type(scores).__name__} {_short(scores)}; it must return a "
            f"Tensor of shape {expected}, one score per input of the batch (e.g. "
            "output[:, 3], not output[:, 3].sum() or .item())."
        )
    if not scores.dtype.is_floating_point:
        raise TypeError(
            f"target returned a tensor of dtype {scores.dtype}; scores must be floating "
            "point (call .float() on them)."
        )
    per_input = 1 if scores.dim() == 1 else math.prod(scores.shape[1:])
    if (
        scores.dim() not in (1, 2)
        or scores.shape[0] != rows
        or per_input == 0
        or (num_targets is not None and per_input != num_targets)
    ):
        raise ValueError(
            f"target returned a tensor of shape {tuple(scores.shape)} for a batch of {rows} "
            f"inputs; expected {expected}: one score per input (T per input for T maps). "
            "Reduce a per-pixel output over a region first (captum_sscam.targets."
            "SegmentationRegion)."
        )
    if scores.device != device:
        raise ValueError(
            f"target returned scores on {scores.device} but the inputs are on {device}; "
            "return them on the device of the model's output."
        )
    return scores.reshape(rows, -1)


def check_finite_scores(scores: Tensor, what: str) -> None:
    """Refuse NaN or infinite scores of a callable target (one host sync)."""
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        example = int(bad.any(dim=1).nonzero()[0, 0])
        kind = "NaN" if bool(scores.isnan().any()) else "infinite"
        raise ValueError(
            f"target returned {kind} scores for {what} (example {example} first); a callable "
            "target must return finite scores (guard divisions and empty selections)."
        )


def describe(output: object) -> str:
    """A short description of a model output: its type and structure, e.g. ``Tensor of shape
    (2, 5)``, ``OrderedDict with keys ['out']``, ``list of 2 (first: dict with keys [...])``."""
    if isinstance(output, Tensor):
        return f"Tensor of shape {tuple(output.shape)}"
    if isinstance(output, dict):
        return f"{type(output).__name__} with keys {list(output)[:8]}"
    if isinstance(output, (list, tuple)):
        inner = f" (first: {describe(output[0])})" if output else ""
        return f"{type(output).__name__} of {len(output)}{inner}"
    return type(output).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def flat_target_indices(target: TargetType, output: Tensor) -> Tensor:
    """Return ``(N, T)`` indices into ``output.reshape(N, -1)`` for a Captum target.

    Accepts every form Captum accepts: ``None`` (a scalar output per example), an
    int or one-element tensor (the same class for every example), a tuple (one
    index per output dimension after the batch), a 1-D tensor or a list of ints
    or tuples with one entry per example; all give ``T = 1``. Beyond Captum, a
    2-D ``(N, T)`` integer tensor (e.g. ``logits.topk(T).indices``) asks for
    ``T`` classes per example at once.
    """
    num_examples = output.shape[0]
    per_example_shape = tuple(output.shape[1:])
    if target is None:
        if math.prod(per_example_shape) != 1:
            raise ValueError(
                f"target is None but the model returns {per_example_shape} values per "
                "example; pass target= (a class index, a tuple or one per example)."
            )
        return torch.zeros(num_examples, 1, dtype=torch.long, device=output.device)
    if isinstance(target, Tensor):
        return _tensor_target(target, output)
    if isinstance(target, list):
        if len(target) != num_examples:
            raise ValueError(
                f"target is a list of {len(target)} entries but the batch has "
                f"{num_examples} examples; give one target per example."
            )
        indices = [_flatten_one(t, per_example_shape) for t in target]
        return torch.tensor(indices, dtype=torch.long, device=output.device).unsqueeze(1)
    index = _flatten_one(target, per_example_shape)
    return torch.full((num_examples, 1), index, dtype=torch.long, device=output.device)


def _flatten_one(target: object, per_example_shape: tuple[int, ...]) -> int:
    index: Sequence[int]
    if isinstance(target, tuple):
        index = target
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        index = (int(target),)
    else:
        raise TypeError(
            f"target entries must be ints or tuples of ints, got {type(target).__name__}."
        )
    if len(index) != len(per_example_shape):
        raise ValueError(
            f"target {target!r} has {len(index)} indices but the model output has "
            f"{len(per_example_shape)} dimension(s) per example {per_example_shape}; "
            "use an int for (N, classes) outputs and a tuple for larger ones."
        )
    for i, size in zip(index, per_example_shape, strict=False):
        if not isinstance(i, numbers.Integral) or not -size <= int(i) < size:
            raise ValueError(
                f"target {target!r} is out of range for a model output of shape "
                f"{per_example_shape} per example."
            )
    return _ravel(
        [int(i) % size for i, size in zip(index, per_example_shape, strict=False)],
        per_example_shape,
    )


def _ravel(index: Sequence[int], shape: tuple[int, ...]) -> int:
    flat = 0
    for i, size in zip(index, shape, strict=False):
        flat = flat * size + i
    return flat


def _tensor_target(target: Tensor, output: Tensor) -> Tensor:
    num_examples = output.shape[0]
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            f"target tensors must hold integer class indices, got dtype {target.dtype}; "
            "for a boolean mask of classes use mask.nonzero() or an index tensor."
        )
    if target.numel() == 1:
        return flat_target_indices(int(target.item()), output)
    if target.dim() not in (1, 2) or target.shape[0] != num_examples or target.numel() == 0:
        raise ValueError(
            f"target tensor has shape {tuple(target.shape)} but the batch has "
            f"{num_examples} examples; give a 1-D tensor with one class per example, "
            "or an (N, T) tensor with T classes per example."
        )
    if output.dim() != 2:
        raise ValueError(
            "a target tensor selects a class of a (N, classes) output, but the model "
            f"returns {tuple(output.shape)}; use a list of tuples instead."
        )
    num_classes = output.shape[1]
    low, high = int(target.min()), int(target.max())
    if low < -num_classes or high >= num_classes:
        raise ValueError(
            f"target holds class {high if high >= num_classes else low}, out of range "
            f"for a model with {num_classes} classes."
        )
    flat = target.to(device=output.device, dtype=torch.long) % num_classes
    return flat.view(num_examples, -1)
