"""Score-CAM as a Captum layer attribution."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args, _format_output
from captum._utils.typing import BaselineType
from captum.attr import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_sscam._core.batch_size import default_batch_size, run_measuring_peak
from captum_sscam._core.checks import check_baselines, check_inputs, check_inputs_fit_model
from captum_sscam._core.malloc import keep_freed_memory
from captum_sscam._core.model_state import model_in_eval_mode
from captum_sscam._core.scorer import BatchScorer, MemoryFormatCalibration, check_forward_args
from captum_sscam._core.targets import AnyTarget, resolve_targets
from captum_sscam.attr._layer import (
    check_layer_in_model,
    check_reshape_transform,
    layer_activations_and_output,
    layer_maps,
)
from captum_sscam.attr._options import ChannelCriterion, ScoreCAMOptions, ScoreMode
from captum_sscam.attr._perturbations import Perturbation
from captum_sscam.attr._run import LayerRun
from captum_sscam.attr._sampling import Sampling


class ScoreCAM(LayerAttribution, PerturbationAttribution):
    r"""Score-CAM: class activation maps weighted by the score of masked inputs.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops 2020, https://arxiv.org/abs/1910.01279.

    For inputs $X$ and activations $A$ (``N, K, h, w``) of ``layer``:

    $$
    H_k = s(U(A_k)), \qquad M_k = X \odot H_k, \qquad
    a_k = \mathrm{score}_c(M_k) - \mathrm{score}_c(b), \qquad
    L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big)
    $$

    where $U$ upsamples bilinearly to the input size (``align_corners=False``)
    and $s$ rescales each map to [0, 1] by its own min and max. With a
    baseline $b$, $M_k = X \odot H_k + b \odot (1 - H_k)$ and its score
    is subtracted; without one, nothing is. Channels whose map is constant (at
    the layer's resolution or once resized to the input) have no mask and get
    weight 0 (exact: the official code skips them).

    How a masked input is scored, for model output $z$ and class $c$, and how the
    channels' scores become weights, by ``score_mode``:

    - ``"probability"`` (default, the official code):
      $\mathrm{score}_c = \mathrm{softmax}(z)_c$ and $w_k = a_k$ (single-label classifiers);
    - ``"sigmoid"``: $\mathrm{score}_c = \sigma(z_c)$, each class on its own, and
      $w_k = a_k$ (multi-label classifiers: the map of class $c$ does not depend on
      the other classes' logits);
    - ``"logit"``: $\mathrm{score}_c = z_c$, the raw output, and $w_k = a_k$
      (regression, unnormalised scores);
    - ``"channel_softmax"`` (the paper's Algorithm 1, torchcam, grad-cam):
      $\mathrm{score}_c = z_c$ and $w_k = \mathrm{softmax}_k(a_k)$ over the
      non-constant channels.

    ``target`` may also be a function of the model's output for a batch of
    (masked) inputs, whatever the model returns (a tensor, tuple, dict, list of
    dicts), giving one score per input: $\mathrm{score} = f(\mathrm{model}(M_k))$,
    used as it is (the score mode's softmax or sigmoid does not apply; ``"channel_softmax"``
    still weights by $\mathrm{softmax}_k$, every other mode by $w_k = a_k$). See
    ``captum_sscam.targets`` for segmentation, detection, embeddings and class sets.

    The result has the layer's resolution, ``(N, 1, h, w)``; use
    ``LayerAttribution.interpolate`` to view it at input size. A 2-D ``(N, T)``
    target gives ``T`` maps per example, ``(N, T, h, w)``, from the same forward
    passes (one masked forward scores every class).

    Transformers: pass ``reshape_transform`` to turn the layer's output into
    ``(N, channels, h, w)`` maps, e.g. [vit_reshape_transform][captum_sscam.vit_reshape_transform]
    for a ViT block's tokens. The model runs in eval mode during a call (its
    modules' ``training`` flags are restored afterwards, with a warning if any
    was set), and calls on one model from several threads run one at a time.

    Speed options (see the performance page of the docs): ``channels_last``
    (chosen automatically by default) makes each forward cheaper and changes the
    map only by rounding; ``autocast_dtype`` (mixed precision, opt-in) is cheaper
    still but changes the map by more than rounding; ``top_k_channels`` scores
    only the ``k`` channels with the largest spatial variance (or energy) and is
    an approximation.
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: nn.Module,
        device_ids: list[int] | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """
        Args:
            forward_func: the model, or any function returning its scores.
            layer: the module whose activations become masks (usually the last
                convolutional block, e.g. ``model.layer4``).
            device_ids: device IDs, needed only when ``forward_func`` wraps a
                ``DataParallel`` model without being one.
            reshape_transform: a function applied to the layer's output (or
                input) before anything else, returning ``(N, channels, *spatial)``
                maps with the inputs' spatial rank; for transformer layers, e.g.
                ``captum_sscam.vit_reshape_transform``.
        """
        check_layer_in_model(forward_func, layer)
        check_reshape_transform(reshape_transform)
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        PerturbationAttribution.__init__(self, forward_func)
        self.reshape_transform = reshape_transform
        self._memory_formats: dict[Any, bool] = {}  # channels_last=None's choices
        self._compiled_forward: Callable[..., Any] | None = None  # compile_forward=True's

    @classmethod
    def get_name(cls) -> str:
        return "Score-CAM"

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
    ) -> Tensor | tuple[Tensor, ...]:
        r"""Score-CAM maps of ``target`` for each example of ``inputs``.

        ``inputs``, ``target`` and ``additional_forward_args`` may be given by
        position (Captum's order); every other argument is keyword-only, and the
        arguments shared by the Score-CAM family come in the same order in
        ``ScoreCAM``, ``SmoothedScoreCAM`` and ``IntegratedScoreCAM``.

        Args:
            inputs: ``(N, C, H, W)`` images, or a tuple of such tensors. Every
                input tensor is masked: each gets the channel's map upsampled to
                its own spatial size. The layer's maps must have the inputs'
                spatial rank. Non-spatial inputs belong in
                ``additional_forward_args``.
            target: any Captum target form (int, tuple, tensor, list), per
                example in a batch; or an ``(N, T)`` integer tensor for ``T``
                classes per example (e.g. ``model(x).topk(3).indices``), explained
                by the same forward passes as one class. Or a callable of the
                model's output for a batch of ``B`` inputs returning ``(B,)`` scores
                (``(B, T)`` for ``T`` maps), used as they are: ``target(output)``,
                or ``target(output, examples)`` for an
                [ExampleTarget][captum_sscam.targets.ExampleTarget] that needs each
                row's example index ([captum_sscam.targets][] has them for
                segmentation, detection, embeddings and class sets). Its result on
                the inputs is checked (shape, floating dtype, device, finite).
            additional_forward_args: passed to every forward after the inputs.
                As Captum documents, a tensor's first dimension is the batch:
                each masked input gets its example's row. A tensor with another
                number of rows is refused (close over it instead, e.g. with
                ``functools.partial``).
            baselines: optional; a number, or a tensor per input broadcastable to
                it. Masked inputs become ``X * H + b * (1 - H)`` and ``score(b)``
                is subtracted from every channel's score.
            attribute_to_layer_input: use the layer's input instead of its output.
            relu_attributions: apply the final ReLU (True, as in the paper).
            score_mode: ``"probability"`` (softmax over classes, the official code),
                ``"sigmoid"`` (each class's own sigmoid: multi-label), ``"logit"`` (the
                raw output) or ``"channel_softmax"`` (logits, weights
                ``softmax_k(a)``); the formulas are above.
            perturbations_per_eval: masked inputs per forward pass; memory is
                bounded by it. Default: 32 on CPU; on CUDA, as many as fit in
                half the device's free memory (measured on the capture forward,
                at most 1024).
            show_progress: ``True`` shows a progress bar over the masked forward
                passes, ``False`` never; ``None`` (default) shows one when the
                call makes more than 1,000 of them.
            autocast_dtype: ``torch.bfloat16`` or ``torch.float16`` to run the
                masked forwards under ``torch.autocast`` (mixed precision);
                ``"auto"`` for the hardware's fastest: bf16 on CPUs with bf16 units
                (AMX or AVX512-BF16, read from the CPU) and on CUDA devices that
                support it, fp16 on older CUDA devices, fp32 (with a one-time note)
                elsewhere; ``None`` (default) for full precision. Reduced precision
                changes the map by more than rounding (see the performance page).
            channels_last: ``True`` passes 4-D masked inputs in channels-last
                memory format, ``False`` as they are. ``None`` (default) times the
                first full batches of the call in both formats and keeps the
                faster (the timed batches' scores are used; the choice is kept on
                this object per device, input shape, batch size and precision).
                Either way the map is the same up to rounding.
            top_k_channels: score only the ``k`` non-constant channels with the
                highest ``channel_criterion`` per example; the others get weight 0
                (approximate; ``None``, the default, scores all of them).
            channel_criterion: ``"variance"`` (spatial variance of $A_k$, as
                Faster Score-CAM) or ``"energy"`` ($\sum A_k^2$).
            compile_forward: run the masked forwards through
                ``torch.compile(forward_func, dynamic=False)``, compiled on the first
                call and kept on this object (the activation pass stays eager, so
                the layer's hook works as always). The last batch of each phase is
                padded to the full batch, so the compiler sees one shape per batch
                size, precision and memory format (the automatic CUDA batch is then
                rounded down to a power of two, so that it stays put). With
                ``channels_last=None`` the compiler chooses the layout and no
                calibration runs. The map is the same up to rounding. Hooks that
                you register on the model may not run in the compiled passes. Pays
                where compiling (seconds to a minute) is repaid over many calls:
                exact SS-CAM on ResNet-50 ran 1.6x faster on an H100; on a CPU fp32
                gained 1.2x and bf16 lost (see the performance page). Default
                ``False``.

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (``(N, T, h, w)`` for
            an ``(N, T)`` target), detached, on the inputs' device; a tuple of
            maps if the layer returns several tensors.
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
        options, perturbation, sampling = self._plan(options, None)
        return self._attribute(
            inputs, target, additional_forward_args, baselines, options, perturbation, sampling
        )

    @classmethod
    def check_arguments(cls, **arguments: Any) -> None:
        """Check keyword arguments of ``attribute`` without a model or inputs.

        Raises the ``ValueError`` or ``TypeError`` that ``attribute`` would raise for
        them, e.g. to validate a configuration before loading a model; arguments left
        out take their defaults. What depends on the inputs (``baselines``, the number
        of ``stdevs`` per input) is checked by ``attribute`` only.

        Example: ``SmoothedScoreCAM.check_arguments(nt_samples=0)`` raises
        ``ValueError: nt_samples must be an integer >= 1, got 0.``
        """
        accepted = [
            name
            for name, parameter in inspect.signature(cls.attribute).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY
        ]
        unknown = sorted(set(arguments) - set(accepted))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.attribute takes no argument {', '.join(unknown)}; its "
                f"keyword arguments are {', '.join(accepted)}."
            )
        shared = {option.name for option in dataclasses.fields(ScoreCAMOptions)}
        options = ScoreCAMOptions(**{k: v for k, v in arguments.items() if k in shared})
        own = {k: v for k, v in arguments.items() if k not in shared and k != "baselines"}
        cls._plan(options, None, **own)

    @classmethod
    def _plan(
        cls, options: ScoreCAMOptions, num_inputs: int | None
    ) -> tuple[ScoreCAMOptions, Perturbation, Sampling]:
        """The method's own arguments (none for Score-CAM), validated: the options, the
        perturbation of each sample and the sampling plan. Each member of the family
        overrides it with its own keyword-only arguments; ``num_inputs`` is ``None``
        where ``check_arguments`` validates without inputs."""
        return options, Perturbation(), Sampling()

    def _attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: AnyTarget,
        additional_forward_args: Any,
        baselines: BaselineType,
        options: ScoreCAMOptions,
        perturbation: Perturbation,
        sampling: Sampling,
        return_error: bool = False,
        channel_transform: Callable[[Tensor], Tensor] = lambda maps: maps,
    ) -> Any:
        """Maps from perturbed masked inputs of every non-constant channel.

        The family's extension points: ``perturbation`` changes each sample's mask
        or masked input (none for Score-CAM, noise for SS-CAM, scaling for IS-CAM);
        ``sampling`` says how many samples each channel gets and how they are
        allocated; ``options.score_mode`` says how a masked input is scored and how
        scores become weights; ``channel_transform`` turns the layer's
        ``(N, K, *spatial)`` maps into the channels that are masked, scored and
        combined (the identity; Group Score-CAM sums groups of channels). With
        ``return_error`` the result is ``(maps, standard_errors)``.
        """
        keep_freed_memory()
        formatted_inputs = check_inputs(inputs)
        formatted_baselines = check_baselines(baselines, formatted_inputs)
        forward_args = _format_additional_forward_args(additional_forward_args)
        check_forward_args(forward_args, formatted_inputs[0].shape[0])
        perturbation.check_inputs(formatted_inputs)
        with model_in_eval_mode(self.forward_func, self.layer) as model_call:
            check_inputs_fit_model(formatted_inputs, model_call.model)
            device = formatted_inputs[0].device
            with model_call.watching():  # modules it did not find: eval mode as they run
                (activations, output), forward_peak = run_measuring_peak(
                    device,
                    lambda: layer_activations_and_output(
                        self.forward_func,
                        self.layer,
                        formatted_inputs,
                        forward_args,
                        self.device_ids,
                        options.attribute_to_layer_input,
                        model=model_call.model,
                    ),
                )
            targets = resolve_targets(target, output, formatted_inputs[0].shape[0], device)
            batch_size = options.perturbations_per_eval or _default_batch(
                formatted_inputs, device, forward_peak, options.compile_forward
            )
            autocast_dtype = options.autocast_on(device)
            channels_last = options.channels_last if _any_image(formatted_inputs) else False
            if options.compile_forward and channels_last is None:
                channels_last = False  # the compiler chooses the layout
            scorer = BatchScorer(
                self._masked_forward(options.compile_forward),
                forward_args,
                options.score_kind,
                batch_size,
                autocast_dtype,
                channels_last,
                MemoryFormatCalibration(
                    self._memory_formats,
                    (
                        device,
                        tuple(tuple(x.shape[1:]) for x in formatted_inputs),
                        batch_size,
                        autocast_dtype,
                    ),
                ),
                fixed_batches=options.compile_forward,
            )
            run = LayerRun(
                scorer,
                formatted_inputs,
                formatted_baselines,
                targets,
                options,
                perturbation,
                sampling,
                self.get_name(),
                return_error,
            )
            results = [
                run.maps(
                    channel_transform(
                        layer_maps(activation, formatted_inputs, self.reshape_transform)
                    )
                )
                for activation in activations
            ]
        maps = _format_output(len(results) > 1, tuple(m.to(device) for m, _ in results))
        if not return_error:
            return maps
        errors = _format_output(
            len(results) > 1, tuple(e.to(device) for _, e in results if e is not None)
        )
        return maps, errors

    def _masked_forward(self, compile_forward: bool) -> Callable[..., Any]:
        """The function the masked passes call: the model, or its compiled form (kept)."""
        if not compile_forward:
            return self.forward_func
        if self._compiled_forward is None:
            self._compiled_forward = torch.compile(self.forward_func, dynamic=False)
        return self._compiled_forward


def _any_image(inputs: tuple[Tensor, ...]) -> bool:
    """Whether a memory format applies: channels-last exists for 4-D tensors only."""
    return any(x.dim() == 4 for x in inputs)


def _default_batch(
    inputs: tuple[Tensor, ...], device: torch.device, peak: int | None, compiled: bool
) -> int:
    input_bytes = sum(x.element_size() * x[0].numel() for x in inputs)
    return default_batch_size(device, peak, inputs[0].shape[0], input_bytes, power_of_two=compiled)
