"""The registry's layer methods in Captum Insights (Captum 0.8.x).

Captum Insights lists the attribution methods of two module-level tables in
``captum.insights.attr_vis.config``: ``ATTRIBUTION_NAMES_TO_METHODS`` (name ->
class) and ``ATTRIBUTION_METHOD_CONFIG`` (name -> the parameters shown in the
dashboard). It builds a method as ``cls(model)`` and calls
``attribute.__wrapped__(method, inputs, additional_forward_args=..., target=...)``
(plus ``baselines=`` when the signature has it), and draws the result as an
image, so it needs an attribution shaped like the input.

Layer methods need a layer as well as the model, and return ``(N, 1, h, w)``
maps. `insights_method` makes an adapter class for one entry of
`captum_sscam.apps.methods.METHODS`: it binds the layer (a function
``layer_of(model)``) and brings the map to the input's shape with
`captum_sscam.metrics.input_shaped` (upsampled bilinearly, every channel
holding the map; Insights draws the normalised channel sum, which is the map).
`register` adds every layer method of the registry to Insights' tables,
under its display name, with the dashboard parameters of
`dashboard_parameters` that it takes. Integrated Gradients, the
registry's input method, is one of Insights' own methods.

Captum Insights was removed in Captum 0.9.0; it needs Captum 0.8.x with
``numpy<2``, ``flask`` and ``flask-compress``: ``pip install 'captum-sscam[insights]'``
in an environment of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar

import captum
import numpy as np
import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_sscam import SCORE_MODES
from captum_sscam.apps.data import Photo, bundled_photos
from captum_sscam.apps.methods import METHODS, Method
from captum_sscam.apps.models import (
    LITE0_INPUT_SIZE,
    efficientnet_lite0,
    imagenet_class_names,
    lite0_preprocess,
    lite0_target_layer,
)
from captum_sscam.metrics import input_shaped

INSIGHTS_ENV_HELP = (
    "Captum Insights exists in Captum 0.8.x only (it was removed in Captum 0.9.0). "
    "Use it from an environment of its own: python -m venv .venv-insights && "
    ".venv-insights/bin/pip install 'captum-sscam[insights]' (it pins captum 0.8, "
    "numpy<2, flask and flask-compress; in this repository: make insights-venv), "
    "then run .venv-insights/bin/captum-sscam insights."
)

ReshapeTransform = Callable[[Tensor], Tensor]


class InsightsUnavailableError(RuntimeError):
    """Captum Insights cannot be imported here (Captum 0.9+, or flask missing)."""


def require_insights() -> ModuleType:
    """Insights' method tables (``captum.insights.attr_vis.config``).

    Raises `InsightsUnavailableError`, saying how to get Insights, where
    it cannot be imported.
    """
    try:
        return importlib.import_module("captum.insights.attr_vis.config")
    except ImportError as error:
        raise InsightsUnavailableError(
            f"Captum Insights cannot be imported with captum {captum.__version__} "
            f"({error}). {INSIGHTS_ENV_HELP}"
        ) from None


class LayerMapForInsights(Attribution):
    """Adapter base: a registry layer method bound to its layer, returning input-shaped maps.

    Subclasses (made by `insights_method`) set ``method`` (the registry
    entry), ``layer_of`` (model -> layer) and ``reshape_transform``.
    """

    method: ClassVar[Method]
    layer_of: ClassVar[Callable[[nn.Module], nn.Module]]
    reshape_transform: ClassVar[ReshapeTransform | None]

    def __init__(self, forward_func: nn.Module) -> None:
        super().__init__(forward_func)
        cls = type(self)
        layer = cls.layer_of(forward_func)
        if cls.reshape_transform is None:
            self.bound = cls.method.attribution(forward_func, layer)
        else:
            self.bound = cls.method.attribution(
                forward_func, layer, reshape_transform=cls.reshape_transform
            )

    @classmethod
    def get_name(cls) -> str:
        return cls.method.name

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> tuple[Tensor, ...]:
        """The layer method's map brought to each input's shape (`input_shaped`).

        The entry's fixed arguments (e.g. SS-CAM's ``noise_on``) are passed;
        keyword arguments (the dashboard's parameters: ``nt_samples``,
        ``stdevs``, ...) go to the layer method.
        """
        formatted = inputs if isinstance(inputs, tuple) else (inputs,)
        maps = self.bound.attribute(
            formatted,
            target=target,
            additional_forward_args=additional_forward_args,
            **type(self).method.fixed,
            **kwargs,
        )
        return input_shaped(maps, formatted)


def insights_method(
    method: Method,
    layer_of: Callable[[nn.Module], nn.Module],
    reshape_transform: ReshapeTransform | None = None,
) -> type[LayerMapForInsights]:
    """A class Insights can build as ``cls(model)``: ``method`` on ``layer_of(model)``."""
    if not method.on_layer:
        raise ValueError(f"{method.name} is not a layer method; Insights builds it itself.")
    class_name = "".join(part for part in method.name.title() if part.isalnum()) + "ForInsights"
    attributes = {
        "method": method,
        "layer_of": staticmethod(layer_of),
        "reshape_transform": staticmethod(reshape_transform) if reshape_transform else None,
    }
    return type(class_name, (LayerMapForInsights,), attributes)


def dashboard_parameters(
    config: ModuleType, nt_samples: int, stdevs: float
) -> dict[str, tuple[Any, Callable[[Any], Any] | None]]:
    """``attribute`` keyword -> (the dashboard field, how to convert its value).

    The dashboard parses number fields as integers, so the noise level is text
    converted to a float.
    """
    return {
        "score_mode": (config.StrEnumConfig(value="probability", limit=list(SCORE_MODES)), None),
        "nt_samples": (config.NumberConfig(value=nt_samples, limit=(1, None)), int),
        "stdevs": (config.StrConfig(value=str(float(stdevs))), float),
    }


def register(
    layer_of: Callable[[nn.Module], nn.Module],
    *,
    nt_samples: int = 8,
    stdevs: float = 2.0,
    reshape_transform: ReshapeTransform | None = None,
) -> list[str]:
    """Add the registry's layer methods to Insights' method list.

    Args:
        layer_of: returns the layer to explain for a model Insights passes
            (e.g. ``lambda model: model.layer4``).
        nt_samples: SS-CAM's samples preset in the dashboard (the papers use
            35; on a CPU a smaller preset keeps the dashboard responsive).
        stdevs: SS-CAM's noise level preset in the dashboard.
        reshape_transform: turns the layer's output into ``(N, K, h, w)`` maps
            (transformers); methods that cannot take one are left out.

    Returns:
        The names registered, as the dashboard lists them.
    """
    config = require_insights()
    known = dashboard_parameters(config, nt_samples, stdevs)
    names = []
    for method in METHODS.values():
        if not method.on_layer or not method.supports(reshape_transform):
            continue
        config.ATTRIBUTION_NAMES_TO_METHODS[method.name] = insights_method(
            method, layer_of, reshape_transform
        )
        shown = {name: known[name] for name in method.options if name in known}
        if shown:
            conversions = {name: convert for name, (_, convert) in shown.items() if convert}
            config.ATTRIBUTION_METHOD_CONFIG[method.name] = config.ConfigParameters(
                params={name: parameter for name, (parameter, _) in shown.items()},
                post_process=conversions or None,
            )
        names.append(method.name)
    return names


def photo_visualizer(
    model: nn.Module,
    layer_of: Callable[[nn.Module], nn.Module],
    photos: Sequence[Photo],
    preprocess: Callable[[Tensor], Tensor],
    class_names: Sequence[str],
    *,
    nt_samples: int = 8,
    reshape_transform: ReshapeTransform | None = None,
) -> Any:
    """An ``AttributionVisualizer`` over ``photos`` with the registry's methods registered.

    Args:
        model: the classifier (eval mode).
        layer_of: model -> the layer to explain.
        photos: photos at the model's input size.
        preprocess: one ``(3, H, W)`` float image in [0, 1] -> the model's input
            ``(3, H, W)`` (Insights applies it per example).
        class_names: the model's class names.
        nt_samples: SS-CAM's samples preset in the dashboard.
        reshape_transform: for a transformer's layer, as in `register`.

    The photos carry no ImageNet label, so each is labelled with the model's
    top class (Insights shows only labelled examples).
    """
    register(layer_of, nt_samples=nt_samples, reshape_transform=reshape_transform)
    from captum.insights import AttributionVisualizer, Batch
    from captum.insights.attr_vis.features import ImageFeature

    images = (
        torch.stack([torch.from_numpy(np.array(photo.image, copy=True)) for photo in photos])
        .permute(0, 3, 1, 2)
        .float()
        / 255.0
    )
    with torch.no_grad():
        labels = model(torch.stack([preprocess(image) for image in images])).argmax(dim=1)
    feature = ImageFeature(
        "Photo", baseline_transforms=[torch.zeros_like], input_transforms=[preprocess]
    )
    return AttributionVisualizer(
        models=[model],
        classes=list(class_names),
        features=[feature],
        dataset=[Batch(images, labels=labels)],
        score_func=lambda outputs: outputs.softmax(dim=1),
    )


def lite0_image_preprocess(image: Tensor) -> Tensor:
    """A ``(3, H, W)`` [0, 1] image -> EfficientNet-Lite0's ``(3, H, W)`` input."""
    return lite0_preprocess((image * 255.0).round().permute(1, 2, 0))[0]


def serve_bundled(port: int = 8000, nt_samples: int = 8, bind_all: bool = False) -> None:
    """Serve the dashboard for the bundled EfficientNet-Lite0 and photos (blocks)."""
    require_insights()
    visualizer = photo_visualizer(
        efficientnet_lite0(),
        lite0_target_layer,
        bundled_photos(LITE0_INPUT_SIZE),
        lite0_image_preprocess,
        imagenet_class_names(),
        nt_samples=nt_samples,
    )
    names = ", ".join(m.name for m in METHODS.values() if m.on_layer)
    print(f"Captum Insights with {names}; Ctrl-C stops it.")
    visualizer.serve(blocking=True, port=port, bind_all=bind_all)


__all__ = [
    "InsightsUnavailableError",
    "LayerMapForInsights",
    "dashboard_parameters",
    "insights_method",
    "photo_visualizer",
    "register",
    "require_insights",
    "serve_bundled",
]
