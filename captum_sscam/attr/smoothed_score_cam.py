"""SS-CAM (Smoothed Score-CAM) as a Captum layer attribution."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, cast

import torch
from captum._utils.typing import BaselineType
from captum.log import log_usage
from torch import Tensor

from captum_sscam._core.checks import check_choice, check_flag, check_positive_int
from captum_sscam._core.scorer import SCORE_RULES
from captum_sscam._core.targets import AnyTarget
from captum_sscam.attr._options import ChannelCriterion, ScoreCAMOptions, ScoreMode
from captum_sscam.attr._perturbations import (
    NOISE_PLACEMENTS,
    NOISE_SAMPLINGS,
    GaussianNoise,
    NoisePlacement,
    NoiseSampling,
    check_generator,
    check_stdevs,
    seed_from,
)
from captum_sscam.attr._sampling import (
    SAMPLE_ALLOCATIONS,
    SampleAllocation,
    Sampling,
    check_samples_per_channel,
    minimum_pilot_budget,
    pilot_samples,
)
from captum_sscam.attr.score_cam import ScoreCAM


class SmoothedScoreCAM(ScoreCAM):
    r"""SS-CAM: Score-CAM with each channel's score averaged over noisy samples.

    Wang, Naidu et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
    Localization", arXiv:2006.14255 (2020). SmoothGrad's idea applied to
    Score-CAM's channel scores; everything else is as in [ScoreCAM][captum_sscam.ScoreCAM].

    Noise on the mask (variant 1):

    $$
    a_k = \frac{1}{N}\sum_{n=1}^{N} \mathrm{score}_c\big(X \odot (H_k + e_n)\big)
    $$

    Noise on the masked input (variant 2):

    $$
    a_k = \frac{1}{N}\sum_{n=1}^{N} \mathrm{score}_c\big(X \odot H_k + e_n\big),
    \qquad L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)
    $$

    with $e_n \sim \mathcal{N}(0, \sigma^2)$ i.i.d. per element, a fresh draw
    per sample and per channel, and $w_k$ from $a_k$ as in the chosen
    ``score_mode``. With ``stdevs=0`` the result equals Score-CAM's. Cost:
    ``nt_samples`` x K' forward passes per example (K' non-constant channels).

    The noise of each work item (example, channel, sample) is seeded from the
    call's seed and that item alone, so a seeded map does not depend on
    ``perturbations_per_eval`` or on the automatic batch size, up to float rounding:
    the masked inputs are the same bit for bit, but the model's forwards may round
    differently at another batch size (measured: about 1e-7 of the map's maximum).
    ``noise_sampling="antithetic"`` pairs each noise draw with its negation: same
    expectation, same number of forwards, lower variance of the mean score when
    the score is nearly linear in the noise. The speed options of
    [ScoreCAM][captum_sscam.ScoreCAM] apply unchanged.
    """

    @classmethod
    def get_name(cls) -> str:
        return "SS-CAM"

    @log_usage()
    @torch.no_grad()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: AnyTarget = None,
        additional_forward_args: Any = None,
        *,
        baselines: BaselineType = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = True,
        score_mode: ScoreMode = "probability",
        perturbations_per_eval: int | None = None,
        show_progress: bool | None = None,
        autocast_dtype: torch.dtype | str | None = None,
        channels_last: bool | None = None,
        top_k_channels: int | None = None,
        channel_criterion: ChannelCriterion = "variance",
        compile_forward: bool = False,
        nt_samples: int = 35,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 2.0,
        noise_on: NoisePlacement = "mask",
        generator: torch.Generator | None = None,
        noise_sampling: NoiseSampling = "iid",
        sample_allocation: SampleAllocation = "uniform",
        target_error: float | None = None,
        return_error: bool = False,
    ) -> Any:
        r"""SS-CAM maps of ``target`` for each example of ``inputs``.

        Takes every argument of [ScoreCAM.attribute][captum_sscam.ScoreCAM.attribute], in
        the same order (keyword-only past ``additional_forward_args``), plus:

        Args:
            nt_samples: noise samples per channel (N in the paper), default 35.
            nt_samples_batch_size: NoiseTunnel's name for the number of noisy
                masked inputs per forward pass; the same knob as
                ``perturbations_per_eval`` (give one of the two).
            stdevs: the noise's absolute standard deviation, one real number or
                one per input tensor (as in NoiseTunnel), default 2.0.
            noise_on: ``"mask"`` (variant 1: ``X * (H_k + e)``) or ``"input"``
                (variant 2: ``X * H_k + e``).
            generator: a ``torch.Generator`` for reproducible noise (one number
                is drawn from it: the call's seed); without it the global RNG is
                used (``torch.manual_seed`` makes it repeat).
            noise_sampling: ``"iid"`` (default, the paper) or ``"antithetic"``
                (samples ``2j`` and ``2j + 1`` of a channel use one draw with both
                signs; ``nt_samples`` must then be even).
            sample_allocation: ``"uniform"`` (default, the paper: ``nt_samples``
                per channel) or ``"adaptive"``: ``nt_samples`` stays the budget (at
                most ``nt_samples`` x K' forwards per example), shared by Neyman
                allocation on each channel's gain,
                $n_k \propto \lVert \partial L / \partial a_k \rVert = \lVert A_k \rVert$,
                at least one sample each. This minimises the map's Monte-Carlo variance
                $\sum_k \lVert \partial L/\partial a_k \rVert^2 \sigma_k^2 / n_k$ when the
                channels' score variances $\sigma_k^2$ are equal; estimating
                $\sigma_k$ from a pilot costs more than it gains at these budgets
                (see the performance docs). The allocation depends on the activation
                only, so each weight is the plain mean of its channel's samples and the
                estimate is unbiased. With ``score_mode="channel_softmax"`` the gains
                depend on the weights: a pilot of about 1/8 of the budget (at least 2
                samples) per channel estimates them and $\sigma_k$ and is left out of
                the means; ``nt_samples`` must then be at least 3 (6 with antithetic
                noise).
            target_error: stop sampling once the estimated relative standard error
                of every map, $\lVert \mathrm{SE} \rVert / \lVert L \rVert$ (before
                the ReLU), is at most this (checked after 1/8, 1/4, 1/2 and all of
                the budget); ``nt_samples`` caps the cost. ``None`` (default): spend
                the whole budget.
            return_error: also return the per-pixel Monte-Carlo standard error of
                the maps (before the ReLU), estimated from the samples' variances:
                $\mathrm{SE}(x)^2 = \sum_k (\partial L/\partial a_k)(x)^2
                \operatorname{Var}(\hat a_k)$.

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (a tuple for a layer
            with several output tensors), detached, on the inputs' device; with
            ``return_error=True`` a pair ``(maps, standard_errors)`` of that form.
        """
        options = ScoreCAMOptions(
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            score_mode=score_mode,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
            autocast_dtype=autocast_dtype,
            channels_last=channels_last,
            top_k_channels=top_k_channels,
            channel_criterion=channel_criterion,
            compile_forward=compile_forward,
        )
        num_inputs = len(inputs) if isinstance(inputs, tuple) else 1
        options, noise, sampling = self._plan(
            options,
            num_inputs,
            nt_samples=nt_samples,
            nt_samples_batch_size=nt_samples_batch_size,
            stdevs=stdevs,
            noise_on=noise_on,
            generator=generator,
            noise_sampling=noise_sampling,
            sample_allocation=sample_allocation,
            target_error=target_error,
            return_error=return_error,
        )
        noise = dataclasses.replace(noise, seed=seed_from(generator))
        return self._attribute(
            inputs, target, additional_forward_args, baselines, options, noise, sampling,
            return_error,
        )  # fmt: skip

    @classmethod
    def _plan(
        cls,
        options: ScoreCAMOptions,
        num_inputs: int | None,
        *,
        nt_samples: int = 35,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 2.0,
        noise_on: str = "mask",
        generator: torch.Generator | None = None,
        noise_sampling: str = "iid",
        sample_allocation: str = "uniform",
        target_error: float | None = None,
        return_error: bool = False,
    ) -> tuple[ScoreCAMOptions, GaussianNoise, Sampling]:
        """SS-CAM's own arguments, validated: the options, the noise (seed 0) and the sampling."""
        check_choice("noise_on", noise_on, NOISE_PLACEMENTS)
        samples = check_positive_int("nt_samples", nt_samples)
        check_samples_per_channel("nt_samples", samples)
        check_choice("noise_sampling", noise_sampling, NOISE_SAMPLINGS)
        check_generator(generator)
        antithetic = noise_sampling == "antithetic"
        if antithetic and samples % 2:
            raise ValueError(
                f"antithetic noise uses each draw with both signs, so nt_samples must be "
                f"even; got {samples}."
            )
        if nt_samples_batch_size is not None:
            if options.perturbations_per_eval not in (None, nt_samples_batch_size):
                raise ValueError(
                    "nt_samples_batch_size and perturbations_per_eval both set the number "
                    "of masked inputs per forward; give only one of them."
                )
            options = dataclasses.replace(options, perturbations_per_eval=nt_samples_batch_size)
        sampling = _sampling(
            samples, sample_allocation, antithetic, target_error, return_error, options.score_mode
        )
        noise = GaussianNoise(
            check_stdevs(stdevs, num_inputs), cast(NoisePlacement, noise_on), 0, antithetic
        )
        return options, noise, sampling


def _sampling(
    samples: int,
    allocation: object,
    antithetic: bool,
    target_error: object,
    return_error: object,
    score_mode: str,
) -> Sampling:
    """The validated sampling plan of an SS-CAM call."""
    check_choice("sample_allocation", allocation, SAMPLE_ALLOCATIONS)
    check_flag("return_error", return_error)
    if target_error is not None and (
        isinstance(target_error, bool)
        or not isinstance(target_error, numbers.Real)
        or not math.isfinite(target_error)
        or target_error <= 0
    ):
        raise ValueError(
            f"target_error must be None or a finite number > 0 (e.g. 0.05), got {target_error!r}."
        )
    unit = 2 if antithetic else 1
    # softmax weights' gains depend on the scores: a pilot estimates them
    needs_pilot = allocation == "adaptive" and SCORE_RULES[score_mode].softmax_weights
    if needs_pilot and samples < minimum_pilot_budget(antithetic):
        raise ValueError(
            f"adaptive allocation with score_mode='channel_softmax' spends a pilot of "
            f"{pilot_samples(samples, antithetic)} samples per channel and at least {unit} "
            f"more, so nt_samples must be at least {minimum_pilot_budget(antithetic)}; "
            f"got {samples}."
        )
    if (return_error or target_error is not None) and samples < 2 * unit:
        raise ValueError(
            f"estimating the error needs at least {2 * unit} samples per channel (two "
            f"{'antithetic pairs' if antithetic else 'samples'}) to measure their variance; "
            f"got nt_samples={samples}."
        )
    return Sampling(
        samples,
        str(allocation),
        antithetic,
        None if target_error is None else float(target_error),
        pilot_samples(samples, antithetic) if needs_pilot else 0,
    )
