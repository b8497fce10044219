"""The model parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps")."""

from __future__ import annotations

import contextlib
import copy
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum._utils.typing import TargetType
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_sscam._core.checks import check_choice, check_flag
from captum_sscam._core.model_state import model_in_eval_mode
from captum_sscam.metrics._similarity import is_constant, spearman, ssim

Order = Literal["cascading", "independent"]
ORDERS: tuple[str, ...] = ("cascading", "independent")
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# show_progress=None shows a bar over the steps when they are expected to take longer than this
PROGRESS_SECONDS = 10.0


@dataclass(frozen=True, repr=False)
class Randomisation:
    """The result of [model_randomisation][captum_sscam.metrics.model_randomisation].

    Attributes:
        layers: the randomised modules' names (paths in the model), one per step.
        order: ``"cascading"`` (step ``s`` has ``layers[0..s]`` randomised) or
            ``"independent"`` (step ``s`` has only ``layers[s]`` randomised).
        spearman: ``(steps, N)`` Spearman rank correlation of each step's map with the
            original map, per example; NaN exactly where ``constant`` or
            ``original_constant`` says the correlation is undefined.
        spearman_abs: the same on the maps' absolute values (NaN also where an absolute
            map is constant while the map is not: a map of the values -c and c only).
        ssim: ``(steps, N)`` SSIM of each step's map with the original (min-max scaled
            maps; defined for constant maps too, which scale to all zeros).
        constant: ``(steps, N)`` bool: the step's map of the example is constant (a single
            value, e.g. all zeros after a ReLU): the randomisation destroyed the map, and
            a rank correlation with it is undefined.
        original_constant: ``(N,)`` bool: the original map is constant, so no step's
            correlation is defined for the example.
        original: the original maps, when asked for (``return_maps=True``).
        maps: ``(steps, N, ...)`` the maps after each step, when asked for.
    """

    layers: tuple[str, ...]
    order: str
    spearman: Tensor
    spearman_abs: Tensor
    ssim: Tensor
    constant: Tensor
    original_constant: Tensor
    original: Tensor | None = None
    maps: Tensor | None = None

    def summary(self) -> str:
        """One line per step: the median correlations, the mean SSIM and the constant maps."""
        steps, num_examples = self.spearman.shape
        lines = [
            f"model randomisation, {self.order}, {steps} steps, {num_examples} examples "
            "(median Spearman over the examples where it is defined, mean SSIM):"
        ]
        for step, name in enumerate(self.layers):
            undefined = self.constant[step] | self.original_constant
            note = (
                f", {int(undefined.sum())} of {num_examples} undefined (constant map)"
                if bool(undefined.any())
                else ""
            )
            lines.append(
                f"  {step + 1}. {name}: spearman {_median(self.spearman[step])}, "
                f"|spearman| {_median(self.spearman_abs[step])}, "
                f"ssim {float(self.ssim[step].mean()):.3f}{note}"
            )
        if bool(self.original_constant.any()):
            lines.append(
                f"  the original map of {int(self.original_constant.sum())} example(s) is "
                "constant: their correlations are undefined (NaN) at every step."
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Randomisation(\n{self.summary()}\n)"


def _median(values: Tensor) -> str:
    defined = values[~values.isnan()]
    return "undefined" if defined.numel() == 0 else f"{float(defined.quantile(0.5)):.3f}"


def model_randomisation(
    model: nn.Module,
    make_method: Callable[[nn.Module], Any],
    inputs: Tensor | tuple[Tensor, ...],
    target: TargetType = None,
    *,
    layers: Sequence[nn.Module | str] | None = None,
    order: Order = "cascading",
    attribute_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    return_maps: bool = False,
    show_progress: bool | None = None,
    original: Tensor | None = None,
) -> Randomisation:
    r"""The model parameter randomisation test: does the map change with the weights?

    Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for Saliency
    Maps", NeurIPS 2018, https://arxiv.org/abs/1810.03292. A map that survives the
    randomisation of the model's weights explains the image, not the model.

    The original map is computed on a deep copy of ``model``; then, for each of the
    ``layers`` in turn (output side first), the copy's module of that name is
    re-initialised and the map computed again with ``make_method(copy)``:
    ``"cascading"`` randomises cumulatively (step $s$ has the first $s$ layers
    random, the classic figure), ``"independent"`` one module at a time (a fresh copy
    per step). Each step's map is compared with the original per example by Spearman's
    rank correlation (ties averaged), on the maps and on their absolute values, and by
    SSIM, at the map's own resolution (as the method returns it; no interpolation).

    Re-initialisation: every submodule of a randomised module that has
    ``reset_parameters()`` (convolutions, linear layers, normalisation layers: what
    PyTorch initialises a fresh module with, as Quantus's MPRT does) calls it under a
    forked random state seeded from ``seed`` and the module's name; a parameter that
    no ``reset_parameters`` covers (e.g. a ViT's position embedding) is re-drawn from a
    normal distribution with its own mean and standard deviation, from a generator
    seeded the same way. A module thus gets the same weights in both orders and in
    every run with the same ``seed``, and the global random state is left as it was.
    Normalisation layers reset to the identity (weight 1, bias 0, running mean 0,
    variance 1), as in a fresh model.

    The user's model is never touched: every step runs on a copy (its parameters,
    buffers, training flags and hooks stay bit-identical; hooks registered on the
    model are copied with it and run on the copies' forwards). The copies run in eval
    mode (with the methods' warning when the model was in training mode). Every step's
    attribution starts from the same random state (the global generators forked and
    restored, a ``torch.Generator`` in ``attribute_kwargs`` rewound to its starting
    state), so a stochastic method such as SS-CAM draws the same noise at every step
    and the comparison measures the weights, not the noise. The test costs
    ``len(layers) + 1`` attributions (``len(layers)`` with ``original`` given) and one
    deep copy of the model (one per step more with ``"independent"``).

    Args:
        model: the model to test (``nn.Module``).
        make_method: builds the attribution for a model copy, e.g.
            ``lambda m: ScoreCAM(m, m.layer4)``; any object with Captum's
            ``attribute(inputs, target=..., **kwargs)`` returning one Tensor of maps.
            It must take its layer from the copy it is given.
        inputs: the inputs to explain, as ``attribute`` takes them.
        target: passed as ``target=`` to every call (any form the method takes); the
            same classes are explained at every step.
        layers: the modules of ``model`` to randomise, in order, output side first
            (modules, or their names in ``model.named_modules()``); found by name on
            the copies. Default: the model's direct children that own parameters, in
            reverse registration order, a container (``nn.Sequential``,
            ``nn.ModuleList``, ``nn.ModuleDict``) replaced by its children in the same
            way (torchvision's ResNet-18: ``fc``, ``layer4.1``, ``layer4.0``, ...,
            ``bn1``, ``conv1``). Registration order is the forward order in most
            models; pass ``layers`` where it is not.
        order: ``"cascading"`` (default) or ``"independent"``.
        attribute_kwargs: further keyword arguments of every ``attribute`` call (e.g.
            ``{"top_k_channels": 32}``).
        seed: the re-initialisation's seed.
        return_maps: also return the original maps and each step's maps.
        show_progress: a progress bar over the steps; ``None`` (default) shows it when
            the steps are expected to take longer than 10 s (the first attribution's time
            per step).
        original: the original maps, when you have them already: what
            ``make_method(model).attribute(inputs, target=target, **attribute_kwargs)``
            returned (for a stochastic method, drawn from the random state this call
            starts from); saves one attribution. ``None`` (default): computed first.

    Returns:
        A [Randomisation][captum_sscam.metrics.Randomisation]: ``layers``,
        ``spearman``, ``spearman_abs``, ``ssim`` and ``constant`` per step and example,
        ``original_constant`` per example, and the maps on request. Its ``summary()``
        (and its repr) lists the steps and which correlations are undefined.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (it is copied and randomised), got "
            f"{type(model).__name__}."
        )
    if not callable(make_method):
        raise TypeError(
            "make_method builds the attribution for a model copy, e.g. "
            f"lambda m: ScoreCAM(m, m.layer4); got {type(make_method).__name__}."
        )
    check_choice("order", order, ORDERS)
    check_flag("return_maps", return_maps)
    check_flag("show_progress", show_progress, allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    if attribute_kwargs is not None and not isinstance(attribute_kwargs, Mapping):
        raise TypeError(
            "attribute_kwargs must be a dict of keyword arguments for attribute, got "
            f"{type(attribute_kwargs).__name__}."
        )
    kwargs = dict(attribute_kwargs or {})
    if "target" in kwargs:
        raise ValueError(
            "give the target as model_randomisation's target argument, not in attribute_kwargs."
        )
    names = _checked_layers(model, layers)

    given = None if original is None else _one_map(original, "the original maps given").detach()

    working = copy.deepcopy(model)  # the cascade's copy; independent steps copy it again
    with model_in_eval_mode(working), _same_randomness(working, inputs, kwargs) as rewind:

        def attribute(copy_: nn.Module, step: str) -> Tensor:
            method = make_method(copy_)
            if not callable(getattr(method, "attribute", None)):
                raise TypeError(
                    f"make_method returned {type(method).__name__}, which has no attribute() "
                    "method; return an attribution, e.g. lambda m: ScoreCAM(m, m.layer4)."
                )
            with rewind():
                maps = _one_map(method.attribute(inputs, target=target, **kwargs), step)
            return maps.detach()

        began = time.perf_counter()
        reference = attribute(working, "the original model") if given is None else given
        maps: list[Tensor] = []
        bar: tqdm | None = None
        try:
            for index, name in enumerate(names):
                if bar is None and (given is None or index == 1):
                    seconds = (time.perf_counter() - began) * (len(names) - index)
                    show = seconds > PROGRESS_SECONDS if show_progress is None else show_progress
                    bar = tqdm(
                        total=len(names), initial=index, desc="randomisation", unit="step",
                        disable=not show, leave=False,
                    )  # fmt: skip
                randomised = working if order == "cascading" else copy.deepcopy(working)
                reinitialise(randomised.get_submodule(name), _module_seed(seed, name))
                step_maps = attribute(randomised, f"the step randomising {name!r}")
                if step_maps.shape != reference.shape:
                    raise ValueError(
                        f"the maps after randomising {name!r} have shape "
                        f"{tuple(step_maps.shape)}, the original maps {tuple(reference.shape)}; "
                        "the method must return maps of one shape for one input (and "
                        "original=, when given, the maps of these inputs)."
                    )
                maps.append(step_maps)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    stacked, original_maps = torch.stack(maps), reference
    reference = reference.cpu()
    return Randomisation(
        layers=tuple(names),
        order=order,
        spearman=torch.stack([spearman(m.cpu(), reference) for m in maps]),
        spearman_abs=torch.stack([spearman(m.cpu().abs(), reference.abs()) for m in maps]),
        ssim=torch.stack([ssim(m.cpu(), reference) for m in maps]),
        constant=torch.stack([is_constant(m.cpu()) for m in maps]),
        original_constant=is_constant(reference),
        original=original_maps if return_maps else None,
        maps=stacked if return_maps else None,
    )


def _checked_layers(model: nn.Module, layers: Sequence[nn.Module | str] | None) -> list[str]:
    """The names of the modules a run randomises: ``layers`` checked, or the default blocks."""
    if layers is None:
        return randomisation_layers(model)
    if isinstance(layers, (nn.Module, str)) or not isinstance(layers, Sequence):
        raise TypeError(
            "layers must be a list of modules of the model (or their names), output side "
            f"first, e.g. [model.fc, model.layer4]; got {type(layers).__name__}."
        )
    if len(layers) == 0:
        raise ValueError(
            "layers is empty: give the modules to randomise, output side first, or None for "
            "the model's parameterised blocks."
        )
    by_identity = {id(module): name for name, module in model.named_modules()}
    by_name = dict(model.named_modules())
    names = []
    for index, layer in enumerate(layers):
        if isinstance(layer, str):
            if layer not in by_name:
                raise ValueError(
                    f"layers[{index}] is {layer!r}, which names no module of the model; use a "
                    "name of model.named_modules(), e.g. 'layer4.1'."
                )
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_identity:
                raise ValueError(
                    f"layers[{index}] ({type(layer).__name__}) is not a module of the model; "
                    "give the model's own modules (e.g. model.fc), not copies or modules of "
                    "another model."
                )
            name = by_identity[id(layer)]
        else:
            raise TypeError(
                f"layers[{index}] must be a module of the model or its name, got "
                f"{type(layer).__name__}."
            )
        if name == "":
            raise ValueError(
                f"layers[{index}] is the model itself; give its submodules (randomising "
                "them in a cascade ends with the whole model random)."
            )
        if name in names:
            raise ValueError(f"layers[{index}] ({name!r}) is listed twice.")
        if not any(True for _ in by_name[name].parameters()):
            raise ValueError(
                f"layers[{index}] ({name!r}, {type(by_name[name]).__name__}) has no parameters "
                "to randomise."
            )
        names.append(name)
    return names


def randomisation_layers(model: nn.Module) -> list[str]:
    """The model's parameterised blocks, output side first (see ``model_randomisation``)."""
    blocks = list(_blocks(model, prefix=""))
    if not blocks:
        raise ValueError("the model has no submodules with parameters to randomise.")
    return blocks[::-1]


def _blocks(module: nn.Module, prefix: str) -> Iterator[str]:
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, CONTAINERS):
            yield from _blocks(child, prefix=f"{path}.")
        else:
            yield path


def _module_seed(seed: int, name: str) -> int:
    """A seed of its own for each module: the same in both orders and in every run."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


@torch.no_grad()
def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``module``, reproducibly from ``seed``.

    Submodules with ``reset_parameters()`` call it under a forked random state seeded
    with ``seed``; parameters no ``reset_parameters`` covers are re-drawn from a normal
    distribution with their own mean and standard deviation (a constant parameter: its
    mean's magnitude, 1 for zeros) from a generator seeded with ``seed``.
    """
    reset: set[int] = set()
    devices = _cuda_devices(module.parameters())
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for submodule in module.modules():
            reset_parameters = getattr(submodule, "reset_parameters", None)
            if callable(reset_parameters):
                reset_parameters()
                reset |= {id(p) for p in submodule.parameters(recurse=False)}
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        if id(parameter) in reset:
            continue
        mean = float(parameter.double().mean())
        spread = float(parameter.double().std(correction=0))
        if not spread > 0:
            spread = abs(mean) or 1.0
        draw = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
        parameter.copy_((draw * spread + mean).to(parameter.dtype))


def _cuda_devices(tensors: Iterator[Tensor]) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


@contextlib.contextmanager
def _same_randomness(
    model: nn.Module, inputs: Tensor | tuple[Tensor, ...], kwargs: dict[str, Any]
) -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """``rewind()``: a context in which an attribution starts from the run's starting
    random state (global generators forked, ``kwargs``' generators rewound)."""
    generators = [value for value in kwargs.values() if isinstance(value, torch.Generator)]
    states = [generator.get_state() for generator in generators]
    tensors = [*model.parameters(), *(inputs if isinstance(inputs, tuple) else (inputs,))]
    devices = _cuda_devices(t for t in tensors if isinstance(t, Tensor))
    cpu_state = torch.get_rng_state()
    cuda_states = [torch.cuda.get_rng_state(device) for device in devices]

    @contextlib.contextmanager
    def rewind() -> Iterator[None]:
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(cpu_state)
            for device, state in zip(devices, cuda_states, strict=True):
                torch.cuda.set_rng_state(state, device)
            for generator, state in zip(generators, states, strict=True):
                generator.set_state(state)
            yield

    yield rewind


def _one_map(maps: object, step: str) -> Tensor:
    """The attribution's maps as one Tensor (Captum's one-element tuple unwrapped)."""
    if isinstance(maps, tuple) and len(maps) == 1:
        maps = maps[0]
    if not isinstance(maps, Tensor):
        raise TypeError(
            f"attribute returned {type(maps).__name__} for {step}; the test compares one "
            "Tensor of maps per call (for several inputs, wrap the method to return one)."
        )
    if maps.dim() < 3:
        raise ValueError(
            f"attribute returned shape {tuple(maps.shape)} for {step}; the test compares "
            "one (..., h, w) map per example: (N, h, w), (N, 1, h, w) or (N, C, H, W)."
        )
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"attribute returned NaN or infinite values for {step}.")
    return maps


__all__ = ["ORDERS", "Randomisation", "model_randomisation", "randomisation_layers"]
