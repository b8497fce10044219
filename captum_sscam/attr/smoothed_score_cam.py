"""SS-CAM (Smoothed Score-CAM) as a Captum layer attribution."""

from __future__ import annotations

from typing import Any

import torch
from captum._utils.typing import BaselineType, TargetType
from captum.log import log_usage
from torch import Tensor

from captum_sscam.attr._channels import ChannelCriterion
from captum_sscam.attr._checks import check_positive_int
from captum_sscam.attr._noise import (
    NOISE_SAMPLINGS,
    NOISE_TARGETS,
    GaussianNoise,
    NoiseSampling,
    NoiseTarget,
    check_stdevs,
)
from captum_sscam.attr._scoring import ScoreMode
from captum_sscam.attr.score_cam import ScoreCAM


class SmoothedScoreCAM(ScoreCAM):
    r"""SS-CAM: Score-CAM with each channel's score averaged over noisy samples.

    Wang, Naidu et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature
    Localization", arXiv:2006.14255 (2020). SmoothGrad's idea applied to
    Score-CAM's channel scores; everything else is as in :class:`ScoreCAM`.

    .. math::

        \text{noise on the mask (variant 1):}\quad
            a_k = \frac{1}{N}\sum_{n=1}^{N} \mathrm{score}_c\big(X \odot (H_k + e_n)\big)

        \text{noise on the masked input (variant 2):}\quad
            a_k = \frac{1}{N}\sum_{n=1}^{N} \mathrm{score}_c\big(X \odot H_k + e_n\big)

        L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    with :math:`e_n \sim \mathcal{N}(0, \sigma^2)` i.i.d. per element, a fresh draw
    per sample and per channel, and :math:`w_k` from :math:`a_k` as in the chosen
    ``score_mode``. With ``stdevs=0`` the result equals Score-CAM's. Cost:
    ``nt_samples`` x K' forward passes per example (K' non-constant channels).

    ``noise_sampling="antithetic"`` pairs each noise draw with its negation: same
    expectation, same number of forwards, lower variance of the mean score
    (measured in ``docs/performance.md``). The speed options of
    :class:`ScoreCAM` apply unchanged.
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
        show_progress: bool = False,
        nt_samples: int = 35,
        nt_samples_batch_size: int | None = None,
        stdevs: float | tuple[float, ...] = 2.0,
        noise_on: NoiseTarget = "mask",
        generator: torch.Generator | None = None,
        noise_sampling: NoiseSampling = "iid",
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        top_k_channels: int | None = None,
        channel_criterion: ChannelCriterion = "variance",
    ) -> Tensor | tuple[Tensor, ...]:
        r"""SS-CAM maps of ``target`` for each example of ``inputs``.

        Takes every argument of :meth:`ScoreCAM.attribute`, plus:

        Args:
            nt_samples: noise samples per channel (N in the paper), default 35.
            nt_samples_batch_size: NoiseTunnel's name for the number of noisy
                masked inputs per forward pass; the same knob as
                ``perturbations_per_eval`` (give one of the two).
            stdevs: the noise's absolute standard deviation, one real number or
                one per input tensor (as in NoiseTunnel), default 2.0.
            noise_on: ``"mask"`` (variant 1: ``X * (H_k + e)``) or ``"input"``
                (variant 2: ``X * H_k + e``).
            generator: a ``torch.Generator`` for reproducible noise; without it
                the global RNG is used (``torch.manual_seed`` makes it repeat).
            noise_sampling: ``"iid"`` (default, the paper) or ``"antithetic"``
                (draws ``nt_samples / 2`` noises and uses each with both signs;
                ``nt_samples`` must then be even).
            autocast_dtype: mixed precision, as in :meth:`ScoreCAM.attribute`.
            channels_last: channels-last masked inputs, as in :meth:`ScoreCAM.attribute`.
            top_k_channels: score only ``k`` channels, as in :meth:`ScoreCAM.attribute`.
            channel_criterion: how those channels are ranked, as in
                :meth:`ScoreCAM.attribute`.

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (a tuple for a layer
            with several output tensors), detached, on the inputs' device.
        """
        if noise_on not in NOISE_TARGETS:
            raise ValueError(f"noise_on must be one of {NOISE_TARGETS}, got {noise_on!r}.")
        samples = check_positive_int("nt_samples", nt_samples)
        if noise_sampling not in NOISE_SAMPLINGS:
            raise ValueError(
                f"noise_sampling must be one of {NOISE_SAMPLINGS}, got {noise_sampling!r}."
            )
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
        num_inputs = len(inputs) if isinstance(inputs, tuple) else 1
        noise = GaussianNoise(check_stdevs(stdevs, num_inputs), noise_on, generator, antithetic)
        return self._attribute(
            inputs,
            target,
            additional_forward_args,
            baselines,
            attribute_to_layer_input,
            relu_attributions,
            score_mode,
            perturbations_per_eval,
            show_progress,
            autocast_dtype=autocast_dtype,
            channels_last=channels_last,
            top_k_channels=top_k_channels,
            channel_criterion=channel_criterion,
            noise=noise,
            samples=samples,
        )
