"""Class scores of perturbed images, many examples and steps per forward pass."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Literal

import torch
from captum._utils.common import _format_additional_forward_args, _select_targets
from captum._utils.typing import TargetType
from torch import Tensor

Score = Literal["probability", "logit"]
SCORES = ("probability", "logit")

# (example index (B,), item index (B,)) -> the B perturbed images to score
BuildBatch = Callable[[Tensor, Tensor], Tensor]


def check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}.")


def check_batch_size(max_examples_per_batch: int | None) -> None:
    if max_examples_per_batch is None:
        return
    if (
        isinstance(max_examples_per_batch, bool)
        or not isinstance(max_examples_per_batch, numbers.Integral)
        or max_examples_per_batch < 1
    ):
        raise ValueError(
            f"max_examples_per_batch must be None or an integer >= 1, "
            f"got {max_examples_per_batch!r}."
        )


def resolve_target(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    target: TargetType,
    additional_forward_args: Any,
) -> TargetType:
    """``target``, checked; ``None`` becomes each example's top class."""
    num_examples = inputs.shape[0]
    if isinstance(target, Tensor) and target.numel() not in (1, num_examples):
        raise ValueError(
            f"target has {target.numel()} entries for {num_examples} examples; "
            "give one class per example or one for all."
        )
    if isinstance(target, list) and len(target) != num_examples:
        raise ValueError(f"target is a list of {len(target)} entries for {num_examples} examples.")
    if target is not None:
        return target
    with torch.no_grad():
        output = forward_func(
            inputs, *(_format_additional_forward_args(additional_forward_args) or ())
        )
    if output.dim() != 2:
        raise ValueError(
            f"target=None picks the top class of an (N, classes) output, but the model "
            f"returns {tuple(output.shape)}; pass target= explicitly."
        )
    return output.argmax(dim=1)


def class_scores(
    forward_func: Callable[..., Tensor],
    build: BuildBatch,
    examples: Tensor,
    items: Tensor,
    num_examples: int,
    target: TargetType,
    additional_forward_args: Any,
    score: Score,
    max_examples_per_batch: int | None,
) -> Tensor:
    """Score of ``target`` for every work item ``(examples[i], items[i])``.

    Work items of all examples go through ``forward_func`` together, at most
    ``max_examples_per_batch`` images per call (all at once when ``None``).
    Tensors in ``additional_forward_args`` and per-example targets whose first
    dimension is ``num_examples`` follow their example. Returns ``(M,)`` floats.
    """
    args = _format_additional_forward_args(additional_forward_args) or ()
    chunk = max_examples_per_batch or len(examples)
    scores = []
    with torch.no_grad():
        for start in range(0, len(examples), chunk):
            batch_examples = examples[start : start + chunk]
            images = build(batch_examples, items[start : start + chunk])
            batch_args = tuple(_follow(arg, batch_examples, num_examples) for arg in args)
            output = forward_func(images, *batch_args)
            if score == "probability":
                if output.dim() != 2 or output.shape[1] < 2:
                    raise ValueError(
                        "score='probability' takes a softmax over classes, but the model "
                        f"returns {tuple(output.shape)}; use score='logit'."
                    )
                output = torch.softmax(output.float(), dim=1)
            selected = _select_targets(output, _follow_target(target, batch_examples, num_examples))
            scores.append(selected.reshape(len(batch_examples)).float())
    return torch.cat(scores)


def _follow(arg: Any, examples: Tensor, num_examples: int) -> Any:
    if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == num_examples:
        return arg[examples.to(arg.device)]
    return arg


def _follow_target(target: TargetType, examples: Tensor, num_examples: int) -> TargetType:
    if isinstance(target, Tensor) and target.numel() == num_examples and target.numel() > 1:
        return target.reshape(-1)[examples.to(target.device)]
    if isinstance(target, list):
        return [target[i] for i in examples.tolist()]
    return target
