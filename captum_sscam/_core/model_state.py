"""The user's model, used safely: eval mode during a call, one call at a time per model.

Masked batches in training mode would make every map depend on the batch it was
scored in (BatchNorm normalises over the batch) and would update the running
statistics with masked and noisy inputs; Dropout would add its own noise. So a
call runs the model in eval mode and restores every module's own ``training``
flag afterwards, also when it raises, with a warning that says what happened.

Captum captures activations with forward hooks on the layer. Two threads
attributing on one model would see each other's masked batches in those hooks,
so calls on the same model take a lock and run one after another.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

from captum_sscam._core.caller_warnings import warn

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def root_module(
    forward_func: Callable[..., Any], layer: nn.Module | None = None
) -> nn.Module | None:
    """The model behind ``forward_func``: the module itself, a bound method's module,
    or (for a plain function) the layer; ``None`` for a plain function without one."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else layer


@contextmanager
def model_in_eval_mode(
    forward_func: Callable[..., Any], layer: nn.Module | None = None
) -> Iterator[None]:
    """Hold the model's lock and run it in eval mode; restore every module's flag after.

    Without a ``layer`` (the metrics), a plain function's model cannot be reached:
    it runs as it is.
    """
    model = root_module(forward_func, layer)
    if model is None:
        yield
        return
    with _lock_of(model):
        modules = list(model.modules())
        if layer is not None and not any(module is layer for module in modules):
            modules += list(layer.modules())
        training = [module for module in modules if module.training]
        mode_dependent = [module for module in training if _depends_on_mode(module)]
        if mode_dependent:
            _warn_training(forward_func, mode_dependent)
        for module in training:
            module.training = False
        try:
            yield
        finally:
            for module in training:
                module.training = True


def _depends_on_mode(module: nn.Module) -> bool:
    """Whether ``module`` computes differently in training mode (normalisation, dropout)."""
    if isinstance(module, (_NormBase, _DropoutNd)):
        return True
    return isinstance(module, nn.MultiheadAttention) and module.dropout > 0


def _lock_of(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def _warn_training(forward_func: Callable[..., Any], training: list[nn.Module]) -> None:
    kinds = sorted({type(module).__name__ for module in training})
    shown = ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "")
    where = "" if isinstance(forward_func, nn.Module) else " (only the modules reachable from it)"
    warn(
        f"the model is in training mode ({len(training)} modules that depend on it{where}: "
        f"{shown}). "
        "Score-CAM scores masked batches, which in training mode would make each map depend "
        "on its batch and update BatchNorm statistics, so this call ran the model in eval "
        "mode and restored training mode afterwards. Call model.eval() before attributing "
        "to silence this warning.",
    )
