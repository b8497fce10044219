"""Argument checks shared by the methods and the metrics: clear errors instead of silent NaNs."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from captum._utils.common import _format_baseline, _format_tensor_into_tuples
from captum._utils.typing import BaselineType
from torch import Tensor, nn


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming ``name`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def check_flag(name: str, value: object, allow_none: bool = False) -> bool | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        expected = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {expected}, got {value!r}.")
    return value


def check_inputs(inputs: object) -> tuple[Tensor, ...]:
    """Inputs as a tuple of floating-point ``(N, ..., *spatial)`` tensors of one batch size."""
    if not isinstance(inputs, (Tensor, tuple)) or (
        isinstance(inputs, tuple) and not all(isinstance(x, Tensor) for x in inputs)
    ):
        raise TypeError(
            f"inputs must be a Tensor or a tuple of Tensors, got {type(inputs).__name__}."
        )
    formatted = _format_tensor_into_tuples(inputs)
    if len(formatted) == 0:
        raise ValueError("inputs is an empty tuple; pass at least one input tensor.")
    batch_size = formatted[0].shape[0] if formatted[0].dim() > 0 else 0
    for index, tensor in enumerate(formatted):
        if tensor.dim() < 3:
            raise ValueError(
                f"input {index} has shape {tuple(tensor.shape)}: Score-CAM masks the "
                "spatial dimensions of an (N, C, H, W)-like input, so inputs need a batch "
                "dimension and at least two more; pass non-spatial tensors through "
                "additional_forward_args."
            )
        if not tensor.dtype.is_floating_point:
            raise TypeError(
                f"input {index} has dtype {tensor.dtype}; masks scale the input, so it "
                "must be floating point (e.g. x.float())."
            )
        if tensor.shape[0] != batch_size:
            raise ValueError(
                f"input {index} has {tensor.shape[0]} examples but input 0 has {batch_size}."
            )
        if batch_size == 0:
            raise ValueError("inputs hold no examples (batch size 0).")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"input {index} contains NaN or infinite values.")
    return formatted


def check_baselines(
    baselines: BaselineType, inputs: tuple[Tensor, ...]
) -> tuple[Tensor, ...] | None:
    """Baselines expanded to the inputs' shapes, or ``None`` when not given."""
    if baselines is None:
        return None
    entries = baselines if isinstance(baselines, tuple) else (baselines,)
    for entry in entries:
        if isinstance(entry, bool) or not isinstance(entry, (numbers.Real, Tensor)):
            raise TypeError(
                "baselines must be None, a number, a Tensor, or a tuple of those (one per "
                f"input); got {type(entry).__name__} {entry!r}. For an all-zero baseline "
                "pass baselines=0."
            )
    formatted = _format_baseline(baselines, inputs)
    if len(formatted) != len(inputs):
        raise ValueError(
            f"got {len(formatted)} baselines for {len(inputs)} inputs; give one per input."
        )
    expanded = []
    for index, (baseline, tensor) in enumerate(zip(formatted, inputs, strict=False)):
        if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
            baseline = torch.tensor(float(baseline))
        if not isinstance(baseline, Tensor):
            raise TypeError(
                f"baseline {index} must be a number or a Tensor, got {type(baseline).__name__}."
            )
        if baseline.dim() == tensor.dim() and baseline.shape[0] not in (1, tensor.shape[0]):
            raise ValueError(
                f"baseline {index} has {baseline.shape[0]} examples but the inputs have "
                f"{tensor.shape[0]}; give one baseline per example, or one for all."
            )
        expanded.append(
            broadcast_finite(baseline, tensor, f"baseline {index}", f"input {index}'s shape")
        )
    return tuple(expanded)


def broadcast_finite(value: Tensor, like: Tensor, name: str, like_name: str) -> Tensor:
    """``value`` on ``like``'s device and dtype, broadcast to its shape, and finite.

    Raises a ValueError naming ``name`` when it does not broadcast to ``like_name``
    (e.g. ``"input 0's shape"``) or holds NaN or infinite values.
    """
    try:
        expanded = torch.broadcast_to(value.to(device=like.device, dtype=like.dtype), like.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}, which does not broadcast to "
            f"{like_name} {tuple(like.shape)}."
        ) from None
    if not bool(torch.isfinite(expanded).all()):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return expanded


def check_inputs_fit_model(inputs: tuple[Tensor, ...], model: nn.Module | None) -> None:
    """Refuse, before the first forward, inputs that clearly cannot fit ``model``.

    On another device than every parameter and buffer of the model (not a
    ``DataParallel`` model, which moves its inputs itself); without the batch
    dimension that the model's first convolution needs (a ``(C, H, W)`` image: its
    first dimension equals the convolution's input channels); or channels last
    (``(N, H, W, C)``) for a convolution that takes ``(N, C, H, W)``: Score-CAM masks
    an input's trailing dimensions as its space, so neither could give a meaningful
    map even where the model accepts it. ``model`` ``None`` (not known): nothing.
    """
    if model is None:
        return
    device = _single_device(model)
    for index, tensor in enumerate(inputs):
        if device is not None and tensor.device != device:
            raise ValueError(
                f"input {index} is on {tensor.device} but the model's parameters are on "
                f"{device}; move the inputs to the model's device first, e.g. "
                f"x.to('{device}') (or the model to the inputs' with model.to(x.device))."
            )
    convolution = _first_convolution(model)
    if convolution is None:
        return
    rank = len(convolution.kernel_size)  # spatial dimensions it convolves
    channels = convolution.in_channels
    shape = tuple(inputs[0].shape)
    name = type(convolution).__name__
    if len(shape) == rank + 1 and shape[0] == channels:
        raise ValueError(
            f"input 0 has shape {shape}: one example without its batch dimension, it seems "
            f"(the model's first convolution, {name}, takes {channels} channels, and reads "
            f"a {rank + 1}-D tensor as one unbatched example). Score-CAM needs a batch "
            f"(N, C, *spatial): pass x.unsqueeze(0)."
        )
    if len(shape) == rank + 2 and shape[1] != channels and shape[-1] == channels:
        order = ", ".join(["0", str(rank + 1), *(str(axis) for axis in range(1, rank + 1))])
        raise ValueError(
            f"input 0 has shape {shape}: channels last, it seems, but the model's first "
            f"convolution ({name}) takes {channels} channels in dimension 1, (N, C, *spatial); "
            f"Score-CAM also masks the last dimensions as the input's space. Pass "
            f"x.permute({order})."
        )


def explain_forward_error(inputs: tuple[Tensor, ...], model: nn.Module | None) -> Exception | None:
    """A clear error for a first forward that raised, where the inputs do not fit ``model``.

    Checked after the forward fails, not before, since a model may convert its inputs
    itself (Hugging Face models cast ``pixel_values`` to their own dtype): inputs of
    another floating dtype than every floating parameter of the model (a ``TypeError``
    saying what to convert), or of another channel count than the model's first
    convolution takes (a ``ValueError``). ``None`` where neither explains it.
    """
    if model is None:
        return None
    dtypes = {parameter.dtype for parameter in model.parameters() if parameter.is_floating_point()}
    if len(dtypes) == 1:
        (dtype,) = dtypes
        for index, tensor in enumerate(inputs):
            if tensor.dtype != dtype:
                return TypeError(
                    f"input {index} is {tensor.dtype} but the model's parameters are {dtype}; "
                    f"give both one dtype: the model with model.{_dtype_method(tensor.dtype)}()"
                    f" or the inputs with x.{_dtype_method(dtype)}()."
                )
    convolution = _first_convolution(model)
    shape = tuple(inputs[0].shape)
    if (
        convolution is not None
        and len(shape) == len(convolution.kernel_size) + 2
        and shape[1] != convolution.in_channels
    ):
        return ValueError(
            f"input 0 has shape {shape}, {shape[1]} channels in dimension 1, but the "
            f"model's first convolution ({type(convolution).__name__}) takes "
            f"{convolution.in_channels}; give the inputs as (N, C, *spatial) with the "
            "model's channels."
        )
    return None


def _single_device(model: nn.Module) -> torch.device | None:
    """The one device of all the model's parameters and buffers, or ``None`` (several, none,
    or a ``DataParallel`` / ``DistributedDataParallel`` model, which moves its inputs)."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    if any(isinstance(module, parallel) for module in model.modules()):
        return None
    devices = {tensor.device for tensor in (*model.parameters(), *model.buffers())}
    return devices.pop() if len(devices) == 1 else None


def _first_convolution(model: nn.Module) -> nn.modules.conv._ConvNd | None:
    """The model's first registered convolution, usually the one that reads the input."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module
    return None


def _dtype_method(dtype: torch.dtype) -> str:
    """The Tensor/Module method that converts to ``dtype``, e.g. ``double`` for float64."""
    methods = {torch.float64: "double", torch.float32: "float", torch.float16: "half"}
    return methods.get(dtype, "bfloat16" if dtype == torch.bfloat16 else f"to({dtype})")
