"""The registry of the attribution methods the applications compare.

One entry per method of the library's catalogue (``captum_sscam.ATTRIBUTION_METHODS``, the
one list of methods, which ``captum_sscam.metrics.quantus_explain_func`` reads too), keyed
by its command-line name, with the options it reads. The command line (``--method``,
``--methods``), the HTML report, the dataset evaluation and the Captum Insights table all
read this registry, so a new method is one catalogue entry and its options in
`METHOD_OPTIONS`. An entry says:

- ``key`` and ``name``: the command-line key (``ss-cam``) and the display name
  (``SS-CAM``) used in reports, tables, records and the dashboard;
- ``attribution``: the Captum-style class, built as ``cls(model, layer)`` for a
  layer method (``on_layer=True``; with ``reshape_transform=`` when the model
  needs one and the class takes it: ``takes_reshape_transform=True``) or
  ``cls(model)`` for an input method;
- ``fixed``: keyword arguments of ``attribute`` that never change
  (``noise_on="input"``, ``relu_attributions=True``);
- ``options``: keyword arguments of ``attribute`` taken from the user's
  `Options`, each a function ``(options, inputs) -> value``. The
  Insights dashboard shows those it knows as parameters.

For example, Group Score-CAM (`captum_sscam.GroupScoreCAM`, whose own argument is
``n_groups``) came in as a catalogue entry with the library class and its tests, and
``"group-score-cam": SCORE_CAM_OPTIONS`` here (the recipe: docs/architecture.md, "Adding a
method"); its `Method` is:

```python
Method(
    "group-score-cam", "Group Score-CAM", GroupScoreCAM,
    "captum_sscam.GroupScoreCAM, 32 k-means groups of channels (32 forwards per image)",
    takes_reshape_transform=True, fixed={"n_groups": 32}, options=SCORE_CAM_OPTIONS,
)
```

and the same method at other fixed arguments is
``dataclasses.replace(METHODS["group-score-cam"], fixed={"n_groups": 128})``.

`Method.explain` turns an entry into a function ``(inputs, targets) ->
maps``; input methods' ``(N, C, H, W)`` attributions are summed over channels,
so every method gives one ``(N, 1, h, w)`` map per example, what the metrics and
the overlays use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from captum.attr import Attribution
from torch import Tensor, nn

from captum_sscam import ATTRIBUTION_METHODS, AttributionMethod, SmoothedScoreCAM
from captum_sscam.apps.errors import UsageError

Explain = Callable[[Tensor, Tensor], Tensor]
"""``(inputs (N, C, H, W), targets (N,)) -> (N, 1, h, w)`` maps, at any resolution."""

OptionValue = Callable[["Options", Tensor | None], Any]
"""How an ``attribute`` keyword argument is read from the options (and the inputs, which
are ``None`` when the options are validated before any input exists)."""

DEFAULT_BATCH_SIZE = 16
"""Images per forward pass for Integrated Gradients (and the report's metrics)
when `Options.batch_size` is ``None``."""


@dataclass(frozen=True)
class Options:
    """The user's settings, shared by all methods; each method reads the ones it takes.

    Attributes:
        nt_samples: SS-CAM's noise samples per channel (the papers: 35).
        stdevs: SS-CAM's noise standard deviation.
        score_mode: how Score-CAM scores a masked input (``"probability"``,
            the official code, or ``"channel_softmax"``).
        ig_steps: Integrated Gradients' steps (zero baseline).
        batch_size: images per forward pass: Score-CAM's
            ``perturbations_per_eval`` and Integrated Gradients'
            ``internal_batch_size``. ``None``: Score-CAM's own default and
            `DEFAULT_BATCH_SIZE` for Integrated Gradients.
        seed: SS-CAM's noise seed; each call draws from a generator seeded with
            it, so an image's map does not depend on the order of the images.
        top_k_channels: score only the ``k`` channels of largest spatial
            variance (the Score-CAM family's approximation for speed; ``None``:
            every channel, exact).
        show_progress: progress bars over Score-CAM's masked forward passes.
        sample_allocation: SS-CAM's ``"uniform"`` (the paper) or ``"adaptive"``
            allocation of its ``nt_samples`` budget (unbiased; fewer samples for the
            same error).
        autocast_dtype: the Score-CAM family's ``None`` (fp32, exact) or ``"auto"``
            (bf16 or fp16 forwards where the hardware has them; changes the map by
            more than rounding).
        compile_forward: the Score-CAM family's masked forwards through
            ``torch.compile``, once per method object; methods of one model, precision
            and batch share the compiled code, so only the first compiles (pays on a GPU
            over many images).
    """

    nt_samples: int = 35
    stdevs: float = 2.0
    score_mode: str = "probability"
    ig_steps: int = 32
    batch_size: int | None = None
    seed: int = 0
    top_k_channels: int | None = None
    show_progress: bool = False
    sample_allocation: str = "uniform"
    autocast_dtype: str | None = None
    compile_forward: bool = False

    def __post_init__(self) -> None:
        """Validate through the library's own checks (the errors ``attribute`` would raise)."""
        ig_steps = self.ig_steps
        if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
            raise UsageError(f"ig_steps must be an integer >= 1, got {self.ig_steps!r}.")
        if self.autocast_dtype not in (None, "auto"):
            raise UsageError(f"autocast_dtype must be None or 'auto', got {self.autocast_dtype!r}.")
        try:
            SmoothedScoreCAM.check_arguments(
                **{name: value(self, None) for name, value in SS_CAM_OPTIONS.items()}
            )
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from None


def option(name: str) -> OptionValue:
    """The value of the `Options` field ``name``."""
    return lambda options, inputs: getattr(options, name)


def seeded_generator(options: Options, inputs: Tensor | None) -> torch.Generator:
    """A generator on the inputs' device (the CPU without inputs), seeded with
    ``options.seed`` (one per call)."""
    device = inputs.device if inputs is not None else "cpu"
    return torch.Generator(device).manual_seed(options.seed)


def ig_batch_size(options: Options, inputs: Tensor | None) -> int:
    """Integrated Gradients' ``internal_batch_size``: images per forward and backward pass."""
    return options.batch_size or DEFAULT_BATCH_SIZE


SCORE_CAM_OPTIONS: Mapping[str, OptionValue] = {
    "score_mode": option("score_mode"),
    "perturbations_per_eval": option("batch_size"),
    "top_k_channels": option("top_k_channels"),
    "show_progress": option("show_progress"),
    "autocast_dtype": option("autocast_dtype"),
    "compile_forward": option("compile_forward"),
}
"""The options of the Score-CAM family."""

SS_CAM_OPTIONS: Mapping[str, OptionValue] = {
    **SCORE_CAM_OPTIONS,
    "nt_samples": option("nt_samples"),
    "stdevs": option("stdevs"),
    "generator": seeded_generator,
    "sample_allocation": option("sample_allocation"),
}
"""SS-CAM's options: Score-CAM's and the noise."""


@dataclass(frozen=True)
class Method(AttributionMethod):
    """One compared attribution method: a catalogue entry (``captum_sscam.AttributionMethod``:
    key, name, class, summary, how it is built, its fixed arguments) and the options it reads
    (see the module's description)."""

    options: Mapping[str, OptionValue] = field(default_factory=dict)

    def explain(
        self,
        model: nn.Module,
        layer: nn.Module | None,
        options: Options | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> Explain:
        """The function ``(inputs, targets) -> (N, 1, h, w) maps`` of this method.

        Args:
            model: the classifier, in eval mode.
            layer: the layer a layer method explains (ignored by input methods).
            options: the user's settings (default `Options()`).
            reshape_transform: turns the layer's output into ``(N, K, h, w)``
                maps (transformers), passed to the method's constructor.

        Raises:
            UsageError: a layer method without a layer, or a reshape transform
                for a method that cannot take one.
        """
        options = options or Options()
        attribution = self._build(model, layer, reshape_transform)

        def explain(inputs: Tensor, targets: Tensor) -> Tensor:
            arguments = {name: value(options, inputs) for name, value in self.options.items()}
            return self.maps(attribution, inputs, targets, **arguments)

        return explain

    def _build(
        self,
        model: nn.Module,
        layer: nn.Module | None,
        reshape_transform: Callable[[Tensor], Tensor] | None,
    ) -> Attribution:
        try:
            return self.build(model, layer, reshape_transform)
        except ValueError as error:
            raise UsageError(str(error)) from None


METHOD_OPTIONS: Mapping[str, Mapping[str, OptionValue]] = {
    "ig": {"n_steps": option("ig_steps"), "internal_batch_size": ig_batch_size},
    "grad-cam": {},
    "score-cam": SCORE_CAM_OPTIONS,
    "ss-cam": SS_CAM_OPTIONS,
    "ss-cam-input": SS_CAM_OPTIONS,
    "is-cam": SCORE_CAM_OPTIONS,
    "group-score-cam": SCORE_CAM_OPTIONS,
}
"""The options each catalogue method reads, by key (every key of the catalogue has one)."""

METHODS: dict[str, Method] = {
    key: Method(
        **{part.name: getattr(entry, part.name) for part in fields(AttributionMethod)},
        options=METHOD_OPTIONS[key],
    )
    for key, entry in ATTRIBUTION_METHODS.items()
}
"""Every compared method, by command-line key."""

COMPARED = ("ig", "grad-cam", "score-cam", "ss-cam")
"""The methods ``captum-sscam compare`` runs by default."""


def get_method(key: str) -> Method:
    """The registry entry ``key``, or an error listing the keys."""
    try:
        return METHODS[key]
    except KeyError:
        raise UsageError(f"unknown method {key!r}; choose from {', '.join(METHODS)}.") from None


def parse_methods(text: str) -> list[str]:
    """A comma list of method keys (``"ig,score-cam"``), checked against the registry."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise UsageError(f"give at least one method of {', '.join(METHODS)}.")
    for key in keys:
        get_method(key)
    return keys


def supporting(reshape_transform: Callable[[Tensor], Tensor] | None) -> list[str]:
    """The keys of the methods that can explain a layer needing ``reshape_transform``."""
    return [key for key, method in METHODS.items() if method.supports(reshape_transform)]


def explain_functions(
    keys: Sequence[str],
    model: nn.Module,
    layer: nn.Module | None,
    options: Options | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Explain]:
    """Display name -> ``(inputs, targets) -> maps`` for the methods ``keys``, in order."""
    methods = [get_method(key) for key in keys]
    return {
        method.name: method.explain(model, layer, options, reshape_transform) for method in methods
    }


__all__ = [
    "COMPARED",
    "DEFAULT_BATCH_SIZE",
    "METHODS",
    "METHOD_OPTIONS",
    "SCORE_CAM_OPTIONS",
    "SS_CAM_OPTIONS",
    "Explain",
    "Method",
    "Options",
    "explain_functions",
    "get_method",
    "option",
    "parse_methods",
    "seeded_generator",
    "supporting",
]
