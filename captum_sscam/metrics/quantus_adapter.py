"""Quantus (https://github.com/understandable-machine-intelligence-lab/Quantus), the field's
metrics toolkit, with every method of the catalogue (``captum_sscam.ATTRIBUTION_METHODS``).

Quantus calls ``explain_func(model=model, inputs=x_batch, targets=y_batch,
**explain_func_kwargs)`` with numpy arrays and expects numpy maps back:
`quantus_explain_func` is that function; `road_perturb_func` makes Quantus 0.6.0's ROAD run
on 3-channel images. The docs' page "Can this map be trusted?" has the recipes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from captum_sscam import ATTRIBUTION_METHODS, AttributionMethod
from captum_sscam._core.checks import check_choice
from captum_sscam._core.model_state import model_in_eval_mode
from captum_sscam._core.resize import resize

SHAPES: tuple[str, ...] = ("map", "input")


def quantus_explain_func(
    model: nn.Module,
    inputs: np.ndarray | Tensor,
    targets: np.ndarray | Tensor | Sequence[int] | int,
    *,
    method: str | AttributionMethod = "ss-cam",
    layer: str | None = None,
    shape: str = "map",
    seed: int | None = 0,
    device: str | torch.device | None = None,
    **method_kwargs: Any,
) -> np.ndarray:
    """Maps of a catalogue method in Quantus's ``explain_func`` contract: numpy in, numpy out.

    Args:
        model: the model Quantus passes (the user's, or MPRT's randomised copy).
        inputs: ``(N, C, H, W)`` images, channels first (a numpy array or a Tensor).
        targets: the class to explain per example (``(N,)``), or one for all.
        method: a key of ``captum_sscam.ATTRIBUTION_METHODS`` (``"ig"``, ``"grad-cam"``,
            ``"score-cam"``, ``"ss-cam"``, ``"ss-cam-input"``, ``"is-cam"``, ...), or an
            `AttributionMethod` of your own.
        layer: a layer method's layer, by its path in the model (``"layer4"``: a name of
            ``model.named_modules()``), resolved on the model Quantus passes; ignored by
            input methods.
        shape: ``"map"`` (default): ``(N, 1, H, W)`` maps, what Quantus's localisation
            metrics and MPRT take with ``(N, 1, H, W)`` segmentation masks; ``"input"``: the
            map repeated over the input's ``C`` channels, ``(N, C, H, W)``, for metrics that
            need the input's shape (ROAD).
        seed: a method that takes a ``generator`` (SS-CAM) gets a fresh one seeded with
            ``seed`` at every call, so that every call (and every randomised copy MPRT
            explains) draws the same noise; ``None``: the global random state.
        device: where the inputs go (Quantus passes its ``device=``); default: the device
            of the model's parameters.
        method_kwargs: further keyword arguments of the method's ``attribute`` (e.g.
            ``top_k_channels=32``, ``nt_samples=8``, ``n_steps=16``).

    Returns:
        float32 maps at the input's resolution (layer maps resized bilinearly,
        ``align_corners=False``; an input method's attributions summed over the channels).
        The model runs in eval mode during the call (every module's flag restored after).
    """
    check_choice("shape", shape, SHAPES)
    entry = _catalogue_entry(method)
    images = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs)
    if images.dim() != 4:
        raise ValueError(
            f"inputs must be (N, C, H, W) images, channels first, got shape {tuple(images.shape)}; "
            "pass channel_first=True to the Quantus metric for channels-last data."
        )
    target_device = torch.device(device) if device is not None else _device_of(model)
    images = images.to(device=target_device, dtype=torch.float32)
    classes = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=target_device)
    classes = classes.expand(images.shape[0]) if classes.dim() == 0 else classes.reshape(-1)
    attribution = entry.build(model, _layer_of(model, layer) if entry.on_layer else None)
    if seed is not None and "generator" in inspect.signature(attribution.attribute).parameters:
        method_kwargs.setdefault(
            "generator", torch.Generator(target_device).manual_seed(seed)
        )
    with model_in_eval_mode(model):
        maps = entry.maps(attribution, images, classes, **method_kwargs)
    maps = resize(maps.float(), images.shape[2:])
    if shape == "input":
        maps = maps.expand(-1, images.shape[1], -1, -1)
    return maps.cpu().numpy().astype(np.float32, copy=True)


def road_perturb_func(arr: np.ndarray, indices: Any, **kwargs: Any) -> np.ndarray:
    """Quantus 0.6.0's ROAD imputation on pixels: ``perturb_func=road_perturb_func``.

    ROAD ranks the ``C x H x W`` positions of an attribution of the input's shape and hands
    the top ones to ``noisy_linear_imputation``, which imputes ``H x W`` pixel positions
    of a channels-first image: a position of channel 1 or 2 is out of range there, so
    ROAD fails on every 3-channel input with its default perturb function. With
    ``shape="input"`` maps (each pixel's value repeated over the channels, so ROAD's
    percentage counts ``C x H x W`` positions, about ``C`` per pixel), this wrapper turns
    the positions into pixels (``index % (H * W)``), keeps each pixel once in rank order,
    the first ``len(indices) // C`` of them (the requested share of the pixels; ties in
    the map are ordered as ROAD's sort left them), and imputes those with
    ``quantus.functions.perturb_func.noisy_linear_imputation`` (``kwargs``: its
    ``noise``).
    """
    try:
        from quantus.functions.perturb_func import noisy_linear_imputation
    except ImportError:
        raise ImportError(
            "road_perturb_func calls Quantus's imputation: pip install 'captum-sscam[quantus]'"
        ) from None
    channels, pixels_per_channel = arr.shape[0], int(np.prod(arr.shape[1:]))
    positions = np.asarray(indices).reshape(-1) % pixels_per_channel
    _, first = np.unique(positions, return_index=True)
    pixels = positions[np.sort(first)][: max(1, len(positions) // channels)]
    return noisy_linear_imputation(arr, cast(Any, pixels), **kwargs)  # their hint: a Sequence


def _catalogue_entry(method: str | AttributionMethod) -> AttributionMethod:
    if isinstance(method, AttributionMethod):
        return method
    if not isinstance(method, str) or method not in ATTRIBUTION_METHODS:
        raise ValueError(
            f"method must be a key of captum_sscam.ATTRIBUTION_METHODS "
            f"({', '.join(ATTRIBUTION_METHODS)}) or an AttributionMethod, got {method!r}."
        )
    return ATTRIBUTION_METHODS[method]


def _layer_of(model: nn.Module, layer: object) -> nn.Module:
    """The module named ``layer`` in ``model`` (the one Quantus passes, maybe a copy)."""
    if isinstance(layer, nn.Module):
        raise TypeError(
            "layer must be the layer's name in the model (e.g. 'layer4'), not the module: "
            "Quantus's MPRT explains deep copies of the model, on which the name resolves "
            "and your module object does not. Find it with "
            "[name for name, m in model.named_modules() if m is layer]."
        )
    if not isinstance(layer, str) or not layer:
        raise ValueError(
            "a layer method needs layer=, the layer's name in the model (e.g. 'layer4'), "
            f"got {layer!r}."
        )
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(
            f"layer {layer!r} names no module of the {type(model).__name__}; use a name of "
            "model.named_modules(), e.g. 'layer4' or 'features.8'."
        ) from None


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


__all__ = ["SHAPES", "quantus_explain_func", "road_perturb_func"]
