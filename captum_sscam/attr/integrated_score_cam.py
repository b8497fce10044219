"""IS-CAM (Integrated Score-CAM) as a Captum layer attribution."""

from __future__ import annotations

from typing import Any

import torch
from captum._utils.typing import BaselineType
from captum.log import log_usage
from torch import Tensor

from captum_sscam._core.checks import check_positive_int
from captum_sscam._core.targets import AnyTarget
from captum_sscam.attr._options import ChannelCriterion, ScoreCAMOptions, ScoreMode
from captum_sscam.attr._perturbations import MaskScaling, integration_coefficients
from captum_sscam.attr._sampling import Sampling, check_samples_per_channel
from captum_sscam.attr.score_cam import ScoreCAM


class IntegratedScoreCAM(ScoreCAM):
    r"""IS-CAM: Score-CAM with each channel's score integrated over scaled masks.

    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based
    explanations", arXiv:2010.03023 (2020), Algorithm 1, as torchcam 0.5.0's
    ``ISCAM`` implements it. With $m$ = ``n_steps``:

    $$
    c_s = \sum_{j=1}^{s} \frac{j}{m}, \qquad
    a_k = \frac{1}{m}\sum_{s=1}^{m}
        \Big[\mathrm{score}_c\big(X \odot c_s H_k\big) - \mathrm{score}_c(b)\Big],
    \qquad L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)
    $$

    and $w_k$ from $a_k$ as in the chosen ``score_mode``. The coefficients are
    cumulative: $c_1 = 1/m$ and $c_m = (m + 1)/2$, so for $s > 1$ the
    masked input is amplified beyond the input itself. That is the published
    algorithm, kept as it is. With ``n_steps=1`` IS-CAM is Score-CAM. With a
    baseline $b$ the step's masked input is $X \odot c_s H_k + b \odot (1 - c_s H_k)$.
    Cost: ``n_steps`` x K' forward passes per example.
    """

    @classmethod
    def get_name(cls) -> str:
        return "IS-CAM"

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
        n_steps: int = 10,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""IS-CAM maps of ``target`` for each example of ``inputs``.

        Takes every argument of [ScoreCAM.attribute][captum_sscam.ScoreCAM.attribute], in
        the same order (keyword-only past ``additional_forward_args``), plus:

        Args:
            n_steps: integration steps $m$ per channel, default 10 (torchcam's).

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (a tuple for a layer
            with several output tensors), detached, on the inputs' device.
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
        options, scaling, sampling = self._plan(options, None, n_steps=n_steps)
        return self._attribute(
            inputs, target, additional_forward_args, baselines, options, scaling, sampling
        )

    @classmethod
    def _plan(
        cls, options: ScoreCAMOptions, num_inputs: int | None, *, n_steps: int = 10
    ) -> tuple[ScoreCAMOptions, MaskScaling, Sampling]:
        """IS-CAM's own argument, validated: the options, the mask scaling and the sampling."""
        steps = check_positive_int("n_steps", n_steps)
        check_samples_per_channel("n_steps", steps)  # before the coefficients are made
        return options, MaskScaling(integration_coefficients(steps)), Sampling(steps)
