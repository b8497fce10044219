"""Score-CAM as a Captum layer attribution."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _format_additional_forward_args, _format_output
from captum._utils.typing import BaselineType, TargetType
from captum.attr import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_sscam.attr._batch_size import default_batch_size, run_measuring_peak
from captum_sscam.attr._channels import CHANNEL_CRITERIA, ChannelCriterion, top_k_channels
from captum_sscam.attr._checks import check_baselines, check_inputs, check_positive_int
from captum_sscam.attr._layer import check_layer_in_model, layer_activations_and_output
from captum_sscam.attr._masks import is_supported_spatial_rank, varying_channels
from captum_sscam.attr._noise import GaussianNoise
from captum_sscam.attr._scoring import SCORE_MODES, MaskedScorer, ScoreMode
from captum_sscam.attr._targets import flat_target_indices

AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


class ScoreCAM(LayerAttribution, PerturbationAttribution):
    r"""Score-CAM: class activation maps weighted by the score of masked inputs.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020, https://arxiv.org/abs/1910.01279.

    For inputs :math:`X` and activations :math:`A` (``N, K, h, w``) of ``layer``:

    .. math::

        H_k = s(U(A_k)), \qquad M_k = X \odot H_k, \qquad
        a_k = \mathrm{score}_c(M_k) - \mathrm{score}_c(b), \qquad
        L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)

    where :math:`U` upsamples bilinearly to the input size (``align_corners=False``)
    and :math:`s` rescales each map to [0, 1] by its own min and max. With a
    baseline :math:`b`, :math:`M_k = X \odot H_k + b \odot (1 - H_k)` and its score
    is subtracted; without one, nothing is. Channels whose map is constant have
    no mask and get weight 0 (exact: the official code skips them).

    ``score_mode="probability"`` (default, the official code): the score is the
    softmax probability of class :math:`c` and :math:`w_k = a_k`.
    ``score_mode="channel_softmax"`` (the paper's Algorithm 1, torchcam,
    grad-cam): the score is the logit and :math:`w_k = \mathrm{softmax}_k(a_k)`
    over the non-constant channels.

    The result has the layer's resolution, ``(N, 1, h, w)``; use
    ``LayerAttribution.interpolate`` to view it at input size. A 2-D ``(N, T)``
    target gives ``T`` maps per example, ``(N, T, h, w)``, from the same forward
    passes (one masked forward scores every class).

    Speed options (all off by default; see ``docs/performance.md``):
    ``autocast_dtype`` and ``channels_last`` make each forward cheaper and change
    the map only by rounding; ``top_k_channels`` scores only the ``k`` channels
    with the largest spatial variance (or energy) and is an approximation.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: nn.Module,
        device_ids: list[int] | None = None,
    ) -> None:
        """
        Args:
            forward_func: the model, or any function returning its scores.
            layer: the module whose activations become masks (usually the last
                convolutional block, e.g. ``model.layer4``).
            device_ids: device IDs, needed only when ``forward_func`` wraps a
                ``DataParallel`` model without being one.
        """
        check_layer_in_model(forward_func, layer)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        PerturbationAttribution.__init__(self, forward_func)

    @classmethod
    def get_name(cls) -> str:
        return "Score-CAM"

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
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        top_k_channels: int | None = None,
        channel_criterion: ChannelCriterion = "variance",
    ) -> Tensor | tuple[Tensor, ...]:
        r"""Score-CAM maps of ``target`` for each example of ``inputs``.

        Args:
            inputs: ``(N, C, H, W)`` images, or a tuple of such tensors. Every
                input tensor is masked: each gets the channel's map upsampled to
                its own last spatial dimensions (as many as the layer has).
                Non-spatial inputs belong in ``additional_forward_args``.
            target: any Captum target form (int, tuple, tensor, list), per
                example in a batch; or an ``(N, T)`` integer tensor for ``T``
                classes per example (e.g. ``model(x).topk(3).indices``), explained
                by the same forward passes as one class.
            additional_forward_args: passed to every forward after the inputs;
                tensors whose first dimension is the batch follow their example.
            baselines: optional; a number, or a tensor per input broadcastable to
                it. Masked inputs become ``X * H + b * (1 - H)`` and ``score(b)``
                is subtracted from every channel's score.
            attribute_to_layer_input: use the layer's input instead of its output.
            relu_attributions: apply the final ReLU (True, as in the paper).
            score_mode: ``"probability"`` (official code) or ``"channel_softmax"``.
            perturbations_per_eval: masked inputs per forward pass; memory is
                bounded by it. Default: 32 on CPU; on CUDA, as many as fit in
                half the device's free memory (measured on the capture forward,
                at most 1024).
            show_progress: show a progress bar over the masked forward passes.
            autocast_dtype: ``torch.bfloat16`` or ``torch.float16`` to run the
                masked forwards under ``torch.autocast`` (mixed precision), or
                ``None`` (default) for full precision. Pays on GPUs and on CPUs
                with bf16 units; on CPUs without them it is much slower.
            channels_last: pass masked images in channels-last memory format.
            top_k_channels: score only the ``k`` non-constant channels with the
                highest ``channel_criterion`` per example; the others get weight 0
                (approximate; ``None``, the default, scores all of them).
            channel_criterion: ``"variance"`` (spatial variance of ``A_k``, as
                Faster Score-CAM) or ``"energy"`` (``sum A_k^2``).

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (``(N, T, h, w)`` for
            an ``(N, T)`` target), detached, on the inputs' device; a tuple of
            maps if the layer returns several tensors.
        """
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
        )

    def _attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        baselines: BaselineType,
        attribute_to_layer_input: bool,
        relu_attributions: bool,
        score_mode: str,
        perturbations_per_eval: int | None,
        show_progress: bool,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        top_k_channels: int | None = None,
        channel_criterion: str = "variance",
        noise: GaussianNoise | None = None,
        samples: int = 1,
    ) -> Tensor | tuple[Tensor, ...]:
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}.")
        _check_speed_options(autocast_dtype, top_k_channels, channel_criterion)
        formatted_inputs = check_inputs(inputs)
        if perturbations_per_eval is not None:
            perturbations_per_eval = check_positive_int(
                "perturbations_per_eval", perturbations_per_eval
            )
        formatted_baselines = check_baselines(baselines, formatted_inputs)
        forward_args = _format_additional_forward_args(additional_forward_args)
        device = formatted_inputs[0].device
        (activations, output), forward_peak = run_measuring_peak(
            device,
            lambda: layer_activations_and_output(
                self.forward_func,
                self.layer,
                formatted_inputs,
                forward_args,
                self.device_ids,
                attribute_to_layer_input,
            ),
        )
        if perturbations_per_eval is None:
            num_examples = formatted_inputs[0].shape[0]
            input_bytes = sum(x.element_size() * x[0].numel() for x in formatted_inputs)
            perturbations_per_eval = default_batch_size(
                device, forward_peak, num_examples, input_bytes
            )
        targets = flat_target_indices(target, output)
        scorer = MaskedScorer(
            self.forward_func,
            forward_args,
            score_mode,
            perturbations_per_eval,
            noise=noise,
            samples=samples,
            show_progress=show_progress,
            autocast_dtype=autocast_dtype,
            channels_last=channels_last,
        )
        maps = tuple(
            _score_cam_map(
                scorer,
                formatted_inputs,
                activation,
                targets,
                formatted_baselines,
                relu_attributions,
                top_k_channels,
                channel_criterion,
            ).to(device)
            for activation in activations
        )
        return _format_output(len(maps) > 1, maps)


def _check_speed_options(
    autocast_dtype: object, top_k_channels: object, channel_criterion: object
) -> None:
    if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
        raise ValueError(
            f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype!r}."
        )
    if top_k_channels is not None:
        check_positive_int("top_k_channels", top_k_channels)
    if channel_criterion not in CHANNEL_CRITERIA:
        raise ValueError(
            f"channel_criterion must be one of {CHANNEL_CRITERIA}, got {channel_criterion!r}."
        )


def _score_cam_map(
    scorer: MaskedScorer,
    inputs: tuple[Tensor, ...],
    activation: Tensor,
    targets: Tensor,
    baselines: tuple[Tensor, ...] | None,
    relu: bool,
    top_k: int | None = None,
    criterion: str = "variance",
) -> Tensor:
    """``(N, T, *spatial)`` maps for one layer tensor and ``(N, T)`` targets."""
    spatial_dims = activation.dim() - 2
    if not is_supported_spatial_rank(spatial_dims):
        raise ValueError(
            f"the layer's activations have shape {tuple(activation.shape)}; Score-CAM "
            "needs (N, channels, *spatial) with 1 to 3 spatial dimensions."
        )
    if any(tensor.dim() < spatial_dims + 2 for tensor in inputs):
        raise ValueError(
            f"the layer has {spatial_dims} spatial dimensions but an input has fewer "
            "than that after its batch and channel dimensions."
        )
    active = varying_channels(activation)
    has_mask = active.any(dim=1)
    if not bool(has_mask.all()):
        warnings.warn(
            "every channel of the layer is constant for some examples, so they have no "
            "mask and their map is all zeros; choose a layer that varies over space.",
            UserWarning,
            stacklevel=4,
        )
    if top_k is not None:
        active = top_k_channels(active, activation, top_k, criterion)
    scores = scorer.channel_scores(inputs, activation, active, targets, baselines)
    if scorer.score_mode == "channel_softmax":
        weights = scores.masked_fill(~active.unsqueeze(2), float("-inf")).softmax(dim=1)
        weights = weights.nan_to_num(0.0)
    else:
        weights = scores
    maps = torch.einsum("nkt,nk...->nt...", weights.to(activation.dtype), activation)
    return F.relu(maps) if relu else maps
