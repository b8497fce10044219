"""SS-CAM (Smoothed Score-CAM) as a Captum layer attribution."""

from __future__ import annotations

from typing import Any

import torch
from captum._utils.typing import BaselineType, TargetType
from captum.log import log_usage
from torch import Tensor

from captum_sscam.attr._options import (
    ChannelCriterion,
    ScoreCAMOptions,
    ScoreMode,
    check_choice,
    check_positive_int,
)
from captum_sscam.attr._perturb import (
    NOISE_PLACEMENTS,
    NOISE_SAMPLINGS,
    GaussianNoise,
    NoisePlacement,
    NoiseSampling,
    check_stdevs,
    seed_from,
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
    ``perturbations_per_eval`` or on the automatic batch size.
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
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: BaselineType = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = True,
        score_mode: ScoreMode = "probability",
        perturbations_per_eval: int | None = None,
        show_progress: bool | None = None,
        nt_samples: int = 35,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 2.0,
        noise_on: NoisePlacement = "mask",
        generator: torch.Generator | None = None,
        noise_sampling: NoiseSampling = "iid",
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        top_k_channels: int | None = None,
        channel_criterion: ChannelCriterion = "variance",
    ) -> Tensor | tuple[Tensor, ...]:
        r"""SS-CAM maps of ``target`` for each example of ``inputs``.

        Takes every argument of [ScoreCAM.attribute][captum_sscam.ScoreCAM.attribute], plus:

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
            autocast_dtype: mixed precision, as in ScoreCAM.
            channels_last: channels-last masked inputs, as in ScoreCAM.
            top_k_channels: score only ``k`` channels, as in ScoreCAM.
            channel_criterion: how those channels are ranked, as in ScoreCAM.

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (a tuple for a layer
            with several output tensors), detached, on the inputs' device.
        """
        check_choice("noise_on", noise_on, NOISE_PLACEMENTS)
        samples = check_positive_int("nt_samples", nt_samples)
        check_choice("noise_sampling", noise_sampling, NOISE_SAMPLINGS)
        antithetic = noise_sampling == "antithetic"
        if antithetic and samples % 2:
            raise ValueError(
                f"antithetic noise uses each draw with both signs, so nt_samples must be "
                f"even; got {samples}."
            )
        if nt_samples_batch_size is not None:
            if perturbations_per_eval not in (None, nt_samples_batch_size):
                raise ValueError(
                    "nt_samples_batch_size and perturbations_per_eval both set the number "
                    "of masked inputs per forward; give only one of them."
                )
            perturbations_per_eval = nt_samples_batch_size
        options = ScoreCAMOptions(
            score_mode=score_mode,
            relu_attributions=relu_attributions,
            attribute_to_layer_input=attribute_to_layer_input,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
            autocast_dtype=autocast_dtype,
            channels_last=channels_last,
            top_k_channels=top_k_channels,
            channel_criterion=channel_criterion,
        )
        num_inputs = len(inputs) if isinstance(inputs, tuple) else 1
        noise = GaussianNoise(
            check_stdevs(stdevs, num_inputs), noise_on, seed_from(generator), antithetic
        )
        return self._attribute(
            inputs, target, additional_forward_args, baselines, options, noise, samples
        )
