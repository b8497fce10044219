"""Turn every Captum target form into flat indices into the model's output."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from captum._utils.typing import TargetType
from torch import Tensor


def flat_target_indices(target: TargetType, output: Tensor) -> Tensor:
    """Return ``(N, T)`` indices into ``output.reshape(N, -1)`` for a Captum target.

    Accepts every form Captum accepts: ``None`` (a scalar output per example), an
    int or one-element tensor (the same class for every example), a tuple (one
    index per output dimension after the batch), a 1-D tensor or a list of ints
    or tuples with one entry per example; all give ``T = 1``. Beyond Captum, a
    2-D ``(N, T)`` integer tensor (e.g. ``logits.topk(T).indices``) asks for
    ``T`` classes per example at once.
    """
    num_examples = output.shape[0]
    per_example_shape = tuple(output.shape[1:])
    if target is None:
        if math.prod(per_example_shape) != 1:
            raise ValueError(
                f"target is None but the model returns {per_example_shape} values per "
                "example; pass target= (a class index, a tuple or one per example)."
            )
        return torch.zeros(num_examples, 1, dtype=torch.long, device=output.device)
    if isinstance(target, Tensor):
        return _tensor_target(target, output)
    if isinstance(target, list):
        if len(target) != num_examples:
            raise ValueError(
                f"target is a list of {len(target)} entries but the batch has "
                f"{num_examples} examples; give one target per example."
            )
        indices = [_flatten_one(t, per_example_shape) for t in target]
        return torch.tensor(indices, dtype=torch.long, device=output.device).unsqueeze(1)
    index = _flatten_one(target, per_example_shape)
    return torch.full((num_examples, 1), index, dtype=torch.long, device=output.device)


def _flatten_one(target: object, per_example_shape: tuple[int, ...]) -> int:
    index: Sequence[int]
    if isinstance(target, tuple):
        index = target
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        index = (int(target),)
    else:
        raise TypeError(
            f"target entries must be ints or tuples of ints, got {type(target).__name__}."
        )
    if len(index) != len(per_example_shape):
        raise ValueError(
            f"target {target!r} has {len(index)} indices but the model output has "
            f"{len(per_example_shape)} dimension(s) per example {per_example_shape}; "
            "use an int for (N, classes) outputs and a tuple for larger ones."
        )
    for i, size in zip(index, per_example_shape, strict=False):
        if not isinstance(i, numbers.Integral) or not -size <= int(i) < size:
            raise ValueError(
                f"target {target!r} is out of range for a model output of shape "
                f"{per_example_shape} per example."
            )
    return _ravel(
        [int(i) % size for i, size in zip(index, per_example_shape, strict=False)],
        per_example_shape,
    )


def _ravel(index: Sequence[int], shape: tuple[int, ...]) -> int:
    flat = 0
    for i, size in zip(index, shape, strict=False):
        flat = flat * size + i
    return flat


def _tensor_target(target: Tensor, output: Tensor) -> Tensor:
    num_examples = output.shape[0]
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(
            f"target tensors must hold integer class indices, got dtype {target.dtype}; "
            "for a boolean mask of classes use mask.nonzero() or an index tensor."
        )
    if target.numel() == 1:
        return flat_target_indices(int(target.item()), output)
    if target.dim() not in (1, 2) or target.shape[0] != num_examples or target.numel() == 0:
        raise ValueError(
            f"target tensor has shape {tuple(target.shape)} but the batch has "
            f"{num_examples} examples; give a 1-D tensor with one class per example, "
            "or an (N, T) tensor with T classes per example."
        )
    if output.dim() != 2:
        raise ValueError(
            "a target tensor selects a class of a (N, classes) output, but the model "
            f"returns {tuple(output.shape)}; use a list of tuples instead."
        )
    num_classes = output.shape[1]
    low, high = int(target.min()), int(target.max())
    if low < -num_classes or high >= num_classes:
        raise ValueError(
            f"target holds class {high if high >= num_classes else low}, out of range "
            f"for a model with {num_classes} classes."
        )
    flat = target.to(device=output.device, dtype=torch.long) % num_classes
    return flat.view(num_examples, -1)
