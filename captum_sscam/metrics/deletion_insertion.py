"""Deletion and insertion curves and their areas (RISE; Score-CAM section 4.2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from captum_sscam._core.model_state import model_in_eval_mode
from captum_sscam._core.targets import AnyTarget
from captum_sscam.metrics._maps import check_images, saliency_maps
from captum_sscam.metrics._scoring import (
    Score,
    check_batch_size,
    check_score,
    class_scores,
    resolve_target,
)
from captum_sscam.metrics._substrates import Substrate, substrate_images


class Curves(NamedTuple):
    """Per-example areas and the curves they integrate.

    ``auc``: ``(N,)``; ``fractions``: ``(S + 1,)`` fraction of pixels deleted or
    inserted at each step, from 0 to 1; ``scores``: ``(N, S + 1)`` class score
    at each step.
    """

    auc: Tensor
    fractions: Tensor
    scores: Tensor


def deletion_auc(
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: AnyTarget = None,
    additional_forward_args: Any = None,
    step: float = 0.01,
    substrate: Substrate = "zeros",
    score: Score = "probability",
    max_examples_per_batch: int | None = None,
    return_curves: bool = False,
) -> Tensor | Curves:
    r"""Area under the deletion curve; lower is better.

    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018; Score-CAM (Wang et al., CVPR-W 2020) section 4.2.

    Pixels are ranked by decreasing saliency (ties by raster order); step
    $k$ sets the first $\min(k p, HW)$ of them, in every channel, to
    the substrate, where $p = \lceil \text{step} \cdot HW \rceil$. With
    $s_k$ the class score and $x_k$ the fraction of pixels deleted,
    the result is the trapezoid rule $\sum_k (x_{k+1} - x_k)(s_k + s_{k+1})/2$.

    Args:
        forward_func: the model, or any function of ``(inputs, *additional_forward_args)``
            returning a Tensor of scores (any output, with a callable ``target``). A
            model (or a bound method of one) runs in eval mode during the call, every
            module's ``training`` flag restored afterwards (with a warning when that
            changed anything); a plain function runs as it is.
        inputs: ``(N, C, H, W)`` images (or a one-element tuple), on the model's device.
        attributions: one map per example: ``(N, 1, h, w)`` from a layer method
            (any ``h, w``; resized bilinearly), or ``(N, C, H, W)`` from an input
            method (channels summed), or ``(N, h, w)``.
        target: any Captum target form; ``None``: each example's top class. Or, as for
            the methods, a callable of the model's output for a batch returning one
            score per image, ``(B,)``, used as it is (``score`` does not apply): e.g. a
            [SegmentationRegion][captum_sscam.targets.SegmentationRegion] or
            [DetectionBox][captum_sscam.targets.DetectionBox], so that a segmentation's
            or a detector's map can be checked; see ``captum_sscam.targets``.
        additional_forward_args: passed after the images; tensors with N rows
            follow their example.
        step: fraction of the pixels removed per step (Score-CAM: 1 %).
        substrate: what deleted pixels become: ``"zeros"`` (default, Score-CAM),
            ``"blur"`` (Gaussian, kernel 11, sigma 5), a constant or a tensor
            broadcastable to ``inputs``.
        score: how an index target scores an image, as the methods' ``score_mode``:
            ``"probability"`` (softmax over classes, default), ``"sigmoid"`` (the
            class's own sigmoid: multi-label) or ``"logit"`` (``"channel_softmax"``
            scores by the logit too).
        max_examples_per_batch: perturbed images per forward call; the steps of
            all examples are batched together. ``None``: all in one call.
        return_curves: return [Curves][captum_sscam.metrics.Curves] instead of the ``(N,)`` areas.
    """
    return _area(
        forward_func, inputs, attributions, target, additional_forward_args, step,
        substrate, score, max_examples_per_batch, return_curves, deletion=True,
    )  # fmt: skip


def insertion_auc(
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: AnyTarget = None,
    additional_forward_args: Any = None,
    step: float = 0.01,
    substrate: Substrate = "blur",
    score: Score = "probability",
    max_examples_per_batch: int | None = None,
    return_curves: bool = False,
) -> Tensor | Curves:
    r"""Area under the insertion curve; higher is better.

    The reverse of [deletion_auc][captum_sscam.metrics.deletion_auc] (same paper, same
    arguments): start from the substrate (default: the image blurred by a Gaussian,
    kernel 11, sigma 5, as in RISE) and reveal the original pixels in order of
    decreasing saliency, $p = \lceil \text{step} \cdot HW \rceil$ per step; the
    result is the trapezoid-rule area under the class score over the fraction revealed.
    """
    return _area(
        forward_func, inputs, attributions, target, additional_forward_args, step,
        substrate, score, max_examples_per_batch, return_curves, deletion=False,
    )  # fmt: skip


def _area(
    forward_func: Callable[..., Any],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: AnyTarget,
    additional_forward_args: Any,
    step: float,
    substrate: Substrate,
    score: Score,
    max_examples_per_batch: int | None,
    return_curves: bool,
    deletion: bool,
) -> Tensor | Curves:
    images = check_images(inputs)
    check_score(score)
    check_batch_size(max_examples_per_batch)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
        raise ValueError(f"step is a fraction of the pixels in (0, 1], got {step!r}.")
    num_examples, _, height, width = images.shape
    maps = saliency_maps(attributions, (height, width), num_examples).to(images.device)
    background = substrate_images(substrate, images)
    start, end = (images, background) if deletion else (background, images)

    num_pixels = height * width
    pixels_per_step = max(1, math.ceil(step * num_pixels - 1e-9))  # 0.1 * 30 is 3.0000000000000004
    num_steps = math.ceil(num_pixels / pixels_per_step)
    counts = (torch.arange(num_steps + 1, device=images.device) * pixels_per_step).clamp(
        max=num_pixels
    )
    rank = _saliency_rank(maps)

    def build(examples: Tensor, steps: Tensor) -> Tensor:
        changed = rank[examples] < counts[steps].view(-1, 1, 1)
        return torch.where(changed.unsqueeze(1), end[examples], start[examples])

    examples = torch.arange(num_examples, device=images.device).repeat_interleave(num_steps + 1)
    steps = torch.arange(num_steps + 1, device=images.device).repeat(num_examples)
    with model_in_eval_mode(forward_func):
        targets = resolve_target(forward_func, images, target, additional_forward_args, score)
        scores = class_scores(
            forward_func, build, examples, steps, targets, additional_forward_args, score,
            max_examples_per_batch,
        ).view(num_examples, num_steps + 1)  # fmt: skip
    fractions = counts.float() / num_pixels
    auc = torch.trapezoid(scores, fractions, dim=1)
    return Curves(auc, fractions, scores) if return_curves else auc


def _saliency_rank(maps: Tensor) -> Tensor:
    """``(N, H, W)``: each pixel's place when sorted by decreasing saliency (0 = first)."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return rank.view_as(maps)
