"""Average Drop and Increase in Confidence (Grad-CAM++; Score-CAM section 4.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_sscam._core.model_state import model_in_eval_mode
from captum_sscam._core.resize import min_max_scaled
from captum_sscam._core.targets import AnyTarget
from captum_sscam.metrics._maps import check_images, saliency_maps
from captum_sscam.metrics._scoring import (
    Score,
    check_batch_size,
    check_score,
    class_scores,
    resolve_target,
)


def average_drop(
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: AnyTarget = None,
    additional_forward_args: Any = None,
    score: Score = "probability",
    max_examples_per_batch: int | None = None,
) -> Tensor:
    r"""Per-example drop in confidence, in %: $100 \max(0, Y - O) / Y$; lower is better.

    Chattopadhyay et al., "Grad-CAM++", WACV 2018, section 5.1.1, restated in
    Score-CAM (Wang et al., CVPR-W 2020) section 4.2. $Y$ is the class
    score of the image, $O$ that of the image multiplied by its map,
    min-max normalised to [0, 1] per example (a constant map becomes all zeros).
    The mean over examples is the paper's Average Drop %.

    Arguments as in [deletion_auc][captum_sscam.metrics.deletion_auc]. Raises if a class
    score $Y$ is not positive (the ratio is meaningless; use
    ``score="probability"`` or ``"sigmoid"``, or a callable target with positive scores).
    """
    original, explained = _scores(
        forward_func, inputs, attributions, target, additional_forward_args, score,
        max_examples_per_batch,
    )  # fmt: skip
    if bool((original <= 0).any()):
        raise ValueError(
            "Average Drop divides by the class score Y of the image, and some Y <= 0; "
            "use score='probability' (the default) or 'sigmoid', or a target with positive "
            "scores."
        )
    return 100 * (original - explained).clamp(min=0) / original


def increase_in_confidence(
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: AnyTarget = None,
    additional_forward_args: Any = None,
    score: Score = "probability",
    max_examples_per_batch: int | None = None,
) -> Tensor:
    r"""Per example 100 if $O > Y$ else 0; higher is better.

    Same paper and quantities as [average_drop][captum_sscam.metrics.average_drop]; the
    mean over examples is the Increase in Confidence %.
    """
    original, explained = _scores(
        forward_func, inputs, attributions, target, additional_forward_args, score,
        max_examples_per_batch,
    )  # fmt: skip
    return 100 * (explained > original).float()


def _scores(
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: AnyTarget,
    additional_forward_args: Any,
    score: Score,
    max_examples_per_batch: int | None,
) -> tuple[Tensor, Tensor]:
    """``(Y, O)``: class scores of the images and of the images times their maps."""
    images = check_images(inputs)
    check_score(score)
    check_batch_size(max_examples_per_batch)
    num_examples = images.shape[0]
    maps = saliency_maps(attributions, (images.shape[2], images.shape[3]), num_examples)
    masks = min_max_scaled(maps.to(images.device)).unsqueeze(1)

    def build(examples: Tensor, masked: Tensor) -> Tensor:
        keep = torch.where(masked.view(-1, 1, 1, 1).bool(), masks[examples], 1.0)
        return images[examples] * keep

    examples = torch.arange(num_examples, device=images.device).repeat(2)
    masked = torch.arange(2, device=images.device).repeat_interleave(num_examples)
    with model_in_eval_mode(forward_func):
        targets = resolve_target(forward_func, images, target, additional_forward_args, score)
        scores = class_scores(
            forward_func, build, examples, masked, targets, additional_forward_args, score,
            max_examples_per_batch,
        )  # fmt: skip
    return scores[:num_examples], scores[num_examples:]
