"""Capture a layer's activations and the model output in one forward pass (Captum's hooks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from captum._utils.gradient import (
    _extract_device_ids,
    _forward_layer_distributed_eval,
    _gather_distributed_tensors,
)
from torch import Tensor, nn

from captum_sscam._core.caller_warnings import warn
from captum_sscam._core.checks import explain_forward_error
from captum_sscam._core.resize import is_supported_spatial_rank


def check_layer_in_model(forward_func: Callable[..., Any], layer: nn.Module) -> None:
    """Raise if ``forward_func`` is a module that does not contain ``layer``."""
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}.")
    if isinstance(forward_func, nn.Module) and not any(
        module is layer for module in forward_func.modules()
    ):
        raise ValueError(
            f"layer {layer.__class__.__name__} is not a submodule of the model "
            f"{forward_func.__class__.__name__}; pass a module of the model itself, "
            "e.g. model.layer4."
        )


def layer_activations_and_output(
    forward_func: Callable[..., Any],
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    additional_forward_args: tuple[Any, ...] | None,
    device_ids: list[int] | None,
    attribute_to_layer_input: bool,
    *,
    model: nn.Module | None = None,
) -> tuple[tuple[Tensor, ...], Any]:
    """Run the model once; return the layer's tensors and the model output (as it is:
    a Tensor, or a tuple, dict, list of dicts for a callable target).

    The activations come from Captum's own forward hooks (which are removed
    before this returns, also on error). A layer that runs several times in one
    forward is reported with a warning: Captum keeps the last call's tensors. A
    layer whose output (or input) is not a Tensor or a flat tuple of Tensors is
    refused when it runs. Where the forward fails and ``model`` (the model behind
    ``forward_func``, when known) explains it, by the inputs' dtype or channels
    (``_core.checks.explain_forward_error``), that error is raised instead.
    """
    calls = 0

    def count_call(*_: object) -> None:
        nonlocal calls
        calls += 1

    def check_tensors(tensors: object) -> None:
        if not _tensor_or_flat_tuple(tensors):
            which = "input" if attribute_to_layer_input else "output"
            raise TypeError(
                f"layer {layer.__class__.__name__}'s {which} is {_structure(tensors)}; "
                f"Score-CAM reads the layer's {which} as a Tensor or a flat tuple of Tensors "
                "(reshape_transform then applies to each, and cannot reach into nested "
                "structures). Choose a layer that returns Tensors (a submodule of this one, "
                "say), or wrap it in a module that returns the Tensor to explain."
            )

    counter = layer.register_forward_pre_hook(count_call)
    # registered before Captum's hook, so it runs first and Captum never sees the structure
    checker = (
        layer.register_forward_pre_hook(lambda _module, args: check_tensors(args))
        if attribute_to_layer_input
        else layer.register_forward_hook(lambda _module, _args, output: check_tensors(output))
    )
    try:
        saved_layer, output = _forward_layer_distributed_eval(
            forward_func,
            inputs,
            layer,
            additional_forward_args=additional_forward_args,
            attribute_to_layer_input=attribute_to_layer_input,
            forward_hook_with_return=True,
        )
    except AssertionError as error:
        if "did not obtain any outputs" not in str(error):
            raise
        raise ValueError(
            f"layer {layer.__class__.__name__} never ran during the model's forward "
            "pass; choose a layer that the forward actually calls."
        ) from None
    except RuntimeError as error:
        explained = explain_forward_error(inputs, model)
        if explained is None:
            raise
        raise explained from error
    finally:
        counter.remove()
        checker.remove()
    replicas = len(saved_layer[layer])
    if calls > replicas:
        warn(
            f"layer {layer.__class__.__name__} ran {calls // replicas} times in one "
            "forward pass (a shared module?). Captum keeps only the last call's "
            "tensors, so the maps explain that call; hook a module that runs once to "
            "be sure which activations are used.",
        )
    device_ids = _extract_device_ids(forward_func, saved_layer, device_ids)
    activations = _gather_distributed_tensors(saved_layer[layer], device_ids=device_ids)
    return activations, output  # any output: the target says how it is scored


def _tensor_or_flat_tuple(tensors: object) -> bool:
    if isinstance(tensors, Tensor):
        return True
    return (
        isinstance(tensors, (tuple, list))
        and len(tensors) > 0
        and all(isinstance(tensor, Tensor) for tensor in tensors)
    )


def _structure(value: object, depth: int = 0) -> str:
    """``value``'s structure in a few words, e.g. ``tuple(Tensor(2, 4, 8, 8), tuple(...))``."""
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, (tuple, list, dict)):
        items = list(value.values() if isinstance(value, dict) else value)
        if depth >= 2:
            return f"{type(value).__name__}(...)"
        shown = [_structure(item, depth + 1) for item in items[:4]]
        return f"{type(value).__name__}({', '.join(shown)}{', ...' if len(items) > 4 else ''})"
    return type(value).__name__


def check_reshape_transform(reshape_transform: object) -> None:
    if reshape_transform is not None and not callable(reshape_transform):
        raise TypeError(
            "reshape_transform must be a callable (e.g. captum_sscam.vit_reshape_transform) "
            f"or None, got {type(reshape_transform).__name__}."
        )


def layer_maps(
    activation: Tensor,
    inputs: tuple[Tensor, ...],
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> Tensor:
    """The layer tensor as ``(N, K, *spatial)`` maps with the inputs' spatial rank.

    ``reshape_transform`` (when given) is applied first. A tensor that does not
    have the inputs' rank (a transformer's ``(N, tokens, dim)`` for images, say)
    is refused: read as channels over a space, it would give a meaningless map.
    """
    if reshape_transform is not None:
        activation = reshape_transform(activation)
        if not isinstance(activation, Tensor):
            raise TypeError(
                f"reshape_transform returned {type(activation).__name__}; it must return "
                "a Tensor shaped (N, channels, *spatial)."
            )
    num_examples = inputs[0].shape[0]
    if activation.dim() < 3 or activation.shape[0] != num_examples:
        unbatched = (
            f" If input 0, of shape {tuple(inputs[0].shape)}, is one example without its batch "
            "dimension (the layer then gives (channels, *spatial)), pass x.unsqueeze(0)."
            if activation.dim() == inputs[0].dim()
            else ""
        )
        raise ValueError(
            f"the layer gives a tensor of shape {tuple(activation.shape)} for {num_examples} "
            "examples; Score-CAM needs (N, channels, *spatial). Pass reshape_transform= to "
            f"turn it into that shape.{unbatched}"
        )
    rank = activation.dim()
    if not is_supported_spatial_rank(rank - 2):
        raise ValueError(
            f"the layer's activations have shape {tuple(activation.shape)}; Score-CAM needs "
            "(N, channels, *spatial) with 1 to 3 spatial dimensions (masks are resized "
            "linearly, bilinearly or trilinearly). Pass reshape_transform= to turn it into that."
        )
    if any(tensor.dim() != rank for tensor in inputs):
        shapes = ", ".join(str(tuple(tensor.shape)) for tensor in inputs)
        hint = (
            " It looks like transformer tokens (N, tokens, dim): pass "
            "reshape_transform=captum_sscam.vit_reshape_transform (ViT) or "
            "captum_sscam.channels_last_reshape_transform (Swin-style (N, h, w, C))."
            if rank == 3
            else " Pass reshape_transform= to turn it into (N, channels, *spatial)."
        )
        raise ValueError(
            f"the layer's activations have shape {tuple(activation.shape)} ({rank - 2} spatial "
            f"dimension(s)) but the inputs have shape {shapes}; Score-CAM needs activations "
            f"(N, channels, *spatial) with the inputs' spatial rank.{hint}"
        )
    return activation
