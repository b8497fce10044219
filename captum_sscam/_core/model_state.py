"""The user's model, used safely: eval mode during a call, one call at a time per module.

Masked batches in training mode would make every map depend on the batch it was
scored in (BatchNorm normalises over the batch) and would update the running
statistics with masked and noisy inputs; Dropout would add its own noise. So a
call runs the model in eval mode and restores every module's own ``training``
flag afterwards, also when it raises, with a warning that says what happened.

Finding the model. ``forward_func`` may be the model, a bound method of it, or a
function that calls it (a lambda, a ``functools.partial``, an object with
``__call__``). PyTorch records no module's parent, so the model behind a
function is looked for where Python keeps what the function uses
(``reachable_modules``): a partial's function and arguments, a function's closure
cells, defaults and the globals its code names, a bound method's object and an
object's attributes, a few references deep. With a ``layer``, the largest module
found that contains it is the model. What the search misses is caught when it
runs: during the capture pass, ``EvalModeCall.watching`` puts every module this
thread runs in eval mode before its forward, and the warning then says to pass
``forward_func=model``.

Captum captures activations with forward hooks on the layer, and any forward of
the model fires the hooks of every layer in it. So a call claims both the layer
and its model, all at once (it waits until no other thread holds either; a
thread may claim again what it holds, for nested calls): two calls that share
either run one after the other, whether they pass the model or a function of it.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.module import register_module_forward_pre_hook

from captum_sscam._core.caller_warnings import warn

# How many references deep reachable_modules looks (function -> closure cell -> object
# -> attribute), and how many entries of one container or object it reads.
SEARCH_DEPTH = 3
SEARCH_BREADTH = 256

_CLAIMS = threading.Condition()
_HOLDERS: dict[int, tuple[int, int]] = {}  # id(module) -> (holding thread, claims)


def reachable_modules(forward_func: Callable[..., Any]) -> list[nn.Module]:
    """The ``nn.Module`` objects ``forward_func`` holds, outermost references first.

    The function itself if it is a module; else what it references: a partial's
    function, arguments and keywords; a function's closure cells, defaults and the
    globals its code names; a bound method's object; an object's attributes; the
    entries of lists, tuples and dicts, up to ``SEARCH_DEPTH`` references deep. A
    module found is not searched further (its own submodules belong to it).
    """
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()
    level: list[object] = [forward_func]
    for depth in range(SEARCH_DEPTH + 1):
        following: list[object] = []
        for held in level:
            if id(held) in seen:
                continue
            seen.add(id(held))
            if isinstance(held, nn.Module):
                found.setdefault(id(held), held)
            elif depth < SEARCH_DEPTH:
                following.extend(_held_objects(held))
        level = following
    return list(found.values())


def _held_objects(held: object) -> list[object]:
    """What ``held`` references that may lead to the model (at most ``SEARCH_BREADTH``)."""
    referenced: Iterable[object]
    if isinstance(held, functools.partial):
        referenced = [held.func, *held.args, *held.keywords.values()]
    elif inspect.ismethod(held):
        referenced = [held.__self__, held.__func__]
    elif inspect.isfunction(held):
        code_globals = held.__globals__
        referenced = [
            *(_cell_contents(cell) for cell in held.__closure__ or ()),
            *(held.__defaults__ or ()),
            *(held.__kwdefaults__ or {}).values(),
            *(code_globals[name] for name in held.__code__.co_names if name in code_globals),
        ]
    elif isinstance(held, (list, tuple)):
        referenced = held
    elif isinstance(held, dict):
        referenced = held.values()
    elif isinstance(held, (type, types.ModuleType)) or not hasattr(held, "__dict__"):
        referenced = ()
    else:
        referenced = vars(held).values()  # an object holding the model, e.g. a wrapper
    return [item for item, _ in zip(referenced, range(SEARCH_BREADTH), strict=False)]


def _cell_contents(cell: types.CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet assigned
        return None


def root_module(
    forward_func: Callable[..., Any], layer: nn.Module | None = None
) -> nn.Module | None:
    """The model behind ``forward_func``.

    The module itself or a bound method's module; with a ``layer``, else the largest
    module reachable from the function that contains the layer (``reachable_modules``),
    else the layer. Without a layer, ``None`` for anything but a module or its method.
    """
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module) and (layer is None or _contains(owner, layer)):
        return owner
    if layer is None:
        return None
    models = [module for module in reachable_modules(forward_func) if _contains(module, layer)]
    return max(models, key=lambda module: len(list(module.modules())), default=layer)


def _contains(model: nn.Module, layer: nn.Module) -> bool:
    return any(module is layer for module in model.modules())


@dataclass
class EvalModeCall:
    """What ``model_in_eval_mode`` found: the model (``None`` where it found none, for
    checks against its parameters) and, through ``watching``, the modules it missed."""

    forward_func: Callable[..., Any]
    model: nn.Module | None
    caught: list[nn.Module] = field(default_factory=list)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Put every module that this thread runs in training mode in eval mode, before
        its forward (a global forward pre-hook, for this thread only, removed on exit);
        warn about those that depend on the mode. ``model_in_eval_mode`` restores them."""
        thread = threading.get_ident()
        caught: list[nn.Module] = []

        def switch_to_eval(module: nn.Module, _: object) -> None:
            if module.training and threading.get_ident() == thread:
                module.training = False
                caught.append(module)

        handle = register_module_forward_pre_hook(switch_to_eval)
        try:
            yield
        finally:
            handle.remove()
            self.caught.extend(caught)
            mode_dependent = [module for module in caught if _depends_on_mode(module)]
            if mode_dependent:
                _warn_training(self.forward_func, mode_dependent, found=False)


@contextmanager
def model_in_eval_mode(
    forward_func: Callable[..., Any], layer: nn.Module | None = None
) -> Iterator[EvalModeCall]:
    """Claim the model and the layer, and run the model in eval mode; restore every
    module's flag after (also those that ``EvalModeCall.watching`` caught).

    Without a ``layer`` (the metrics), a plain function's model is not looked for:
    it runs as it is.
    """
    model = root_module(forward_func, layer)
    found = model if model is not layer or forward_func is layer else None  # not the fallback
    call = EvalModeCall(forward_func, found)
    with _claimed([module for module in (model, layer) if module is not None]):
        modules = list(model.modules()) if model is not None else []
        if layer is not None and not any(module is layer for module in modules):
            modules += list(layer.modules())
        training = [module for module in modules if module.training]
        mode_dependent = [module for module in training if _depends_on_mode(module)]
        if mode_dependent:
            _warn_training(forward_func, mode_dependent, found=True)
        for module in training:
            module.training = False
        try:
            yield call
        finally:
            for module in training + call.caught:
                module.training = True


@contextmanager
def _claimed(modules: list[nn.Module]) -> Iterator[None]:
    """Hold ``modules`` for this thread: wait until no other thread holds any of them,
    then take them all at once (so two calls never each hold one and wait for the other)."""
    thread = threading.get_ident()
    keys = {id(module) for module in modules}  # the modules stay alive while held
    with _CLAIMS:
        while any(_HOLDERS.get(key, (thread, 0))[0] != thread for key in keys):
            _CLAIMS.wait()
        for key in keys:
            _HOLDERS[key] = (thread, _HOLDERS.get(key, (thread, 0))[1] + 1)
    try:
        yield
    finally:
        with _CLAIMS:
            for key in keys:
                holder, claims = _HOLDERS.pop(key)
                if claims > 1:
                    _HOLDERS[key] = (holder, claims - 1)
            _CLAIMS.notify_all()


def _depends_on_mode(module: nn.Module) -> bool:
    """Whether ``module`` computes differently in training mode (normalisation, dropout)."""
    if isinstance(module, (_NormBase, _DropoutNd)):
        return True
    return isinstance(module, nn.MultiheadAttention) and module.dropout > 0


def _warn_training(
    forward_func: Callable[..., Any], training: list[nn.Module], found: bool
) -> None:
    kinds = sorted({type(module).__name__ for module in training})
    shown = ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "")
    why = (
        "Score-CAM scores masked batches, which in training mode would make each map depend "
        "on its batch and update BatchNorm statistics, so this call ran them in eval mode "
        "and restored training mode afterwards."
    )
    if not found:
        warn(
            f"{len(training)} modules in training mode that depend on it ({shown}) ran in "
            f"forward_func but are not part of a model reachable from it. {why} Pass "
            "forward_func=model (the module, or a bound method of it) so that its modules "
            "are found before the call, or call model.eval() first.",
        )
        return
    where = "" if isinstance(forward_func, nn.Module) else " (the model found behind the function)"
    warn(
        f"the model is in training mode ({len(training)} modules that depend on it{where}: "
        f"{shown}). {why} Call model.eval() before attributing to silence this warning.",
    )
