"""Class scores of perturbed images, through the engine's one scoring loop.

The metrics perturb each example many times (deletion steps, a masked copy) and
score every perturbed image. They use the attribution methods' own mechanisms:
:class:`~captum_sscam._core.scorer.BatchScorer` for the batched forwards (tensors
in ``additional_forward_args`` follow their example, as Captum documents),
:func:`~captum_sscam._core.targets.flat_target_indices` for every Captum target form
and :func:`~captum_sscam._core.targets.resolve_targets` for callable targets (the
methods' ``captum_sscam.targets`` among them, scored as they are), the score modes'
table :data:`~captum_sscam._core.scorer.SCORE_RULES`, and the callers run the model under
:func:`~captum_sscam._core.model_state.model_in_eval_mode` (eval mode, every module's
``training`` flag restored afterwards) as the methods do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from captum._utils.common import _format_additional_forward_args, _run_forward
from torch import Tensor

from captum_sscam._core.checks import check_choice, check_positive_int
from captum_sscam._core.malloc import keep_freed_memory
from captum_sscam._core.scorer import SCORE_RULES, BatchScorer, check_forward_args, follow_example
from captum_sscam._core.targets import AnyTarget, Targets, flat_target_indices, resolve_targets

# How an index target scores an image: the score modes' names (channel_softmax: its logit)
Score = Literal["probability", "sigmoid", "logit", "channel_softmax"]

# (example index (B,), item index (B,)) -> the B perturbed images to score
BuildBatch = Callable[[Tensor, Tensor], Tensor]


def check_score(score: str) -> None:
    check_choice("score", score, tuple(SCORE_RULES))


def check_batch_size(max_examples_per_batch: int | None) -> None:
    if max_examples_per_batch is not None:
        check_positive_int("max_examples_per_batch", max_examples_per_batch)


def resolve_target(
    forward_func: Callable[..., Any],
    images: Tensor,
    target: AnyTarget,
    additional_forward_args: Any,
    score: str,
) -> Targets:
    """Flat ``(N, 1)`` target indices; ``target=None`` means each example's top class.
    A callable target (one score per image) is checked on the images' output instead.

    Runs the model on one image (on all of them for ``target=None`` or a callable) to
    learn the shape of its output.
    """
    args = _format_additional_forward_args(additional_forward_args)
    check_forward_args(args, images.shape[0])
    probe = images if target is None or callable(target) else images[:1]
    examples = torch.arange(probe.shape[0], device=images.device)
    with torch.no_grad():
        output = _run_forward(forward_func, (probe,), None, follow_example(args, examples))
    if callable(target):
        targets = resolve_targets(target, output, images.shape[0], images.device)
        if targets.num_targets != 1:
            raise ValueError(
                f"the metrics take one score per example, but target returned "
                f"{targets.num_targets}; return (N,) scores."
            )
        return targets
    _check_output(output)
    if SCORE_RULES[score].score_kind == "probability" and (
        output.dim() != 2 or output.shape[1] < 2
    ):
        raise ValueError(
            "score='probability' takes a softmax over classes, but the model returns "
            f"{tuple(output.shape)}; use score='logit'."
        )
    if target is None:
        if output.dim() != 2:
            raise ValueError(
                f"target=None picks the top class of an (N, classes) output, but the model "
                f"returns {tuple(output.shape)}; pass target= explicitly."
            )
        target = output.argmax(dim=1)
    indices = flat_target_indices(target, output.expand(images.shape[0], *output.shape[1:]))
    if indices.shape[1] != 1:
        raise ValueError("the metrics take one target per example, not an (N, T) tensor.")
    return Targets(indices.shape[0], 1, indices.device, indices=indices)


def _check_output(output: object) -> None:
    """Refuse a model output that is not a Tensor of scores (a tuple, a dict, ...)."""
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model must return a Tensor of class scores, got {type(output).__name__}; "
            "wrap it in a function that returns the scores to explain, e.g. "
            "lambda x: model(x)[0] or lambda x: model(x)['logits'] (call model.eval() "
            "first: the model behind a plain function cannot be switched to eval mode); "
            "or pass target= a function of the model's output returning one score per "
            "example (e.g. a captum_sscam.targets object)."
        )


def class_scores(
    forward_func: Callable[..., Any],
    build: BuildBatch,
    examples: Tensor,
    items: Tensor,
    targets: Targets,
    additional_forward_args: Any,
    score: Score,
    max_examples_per_batch: int | None,
) -> Tensor:
    """Score of each example's target for every work item ``(examples[i], items[i])``.

    Work items of all examples go through ``forward_func`` together, at most
    ``max_examples_per_batch`` images per call (all at once when ``None``).
    ``targets`` come from :func:`resolve_target`; ``score`` is a score mode's name
    (what an index target's score is). Returns ``(M,)`` floats.
    """
    keep_freed_memory()
    scorer = BatchScorer(
        forward_func,
        _format_additional_forward_args(additional_forward_args),
        SCORE_RULES[score].score_kind,
        max_examples_per_batch or len(examples),
    )
    with torch.no_grad():
        scores = scorer.scores(
            len(examples),
            examples,
            lambda start, stop: (build(examples[start:stop], items[start:stop]),),
            targets,
        )
    return scores[:, 0]
