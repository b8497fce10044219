"""Score-CAM, SS-CAM and an upsampled Grad-CAM in Captum Insights (Captum 0.8.x).

Captum Insights lists the attribution methods of two module-level tables in
``captum.insights.attr_vis.config``: ``ATTRIBUTION_NAMES_TO_METHODS`` (name ->
class) and ``ATTRIBUTION_METHOD_CONFIG`` (name -> the parameters shown in the
dashboard). It builds a method as ``cls(model)`` and calls
``attribute.__wrapped__(method, inputs, additional_forward_args=..., target=...)``
(plus ``baselines=`` when the signature has it), and draws the result as an
image, so it needs an attribution shaped like the input.

Layer methods need a layer as well as the model, and return ``(N, 1, h, w)``
maps. :func:`insights_method` makes an adapter class that binds the layer (a
function ``layer_of(model)``), upsamples the map bilinearly to each input's size
and spreads it evenly over the input's channels, so that Captum's
visualization, which sums channels, draws exactly the map. :func:`register`
adds the three methods to Insights' tables.

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
from captum.attr import Attribution, LayerAttribution, LayerGradCam
from captum.log import log_usage
from torch import Tensor, nn

from captum_sscam.attr import ScoreCAM, SmoothedScoreCAM
from captum_sscam.attr._noise import NOISE_TARGETS
from captum_sscam.attr._scoring import SCORE_MODES
from captum_sscam.data import Photo
from captum_sscam.visualization import upsample_map

GRAD_CAM_NAME = "Grad-CAM (upsampled)"
INSIGHTS_ENV_HELP = (
    "Captum Insights exists in Captum 0.8.x only (it was removed in Captum 0.9.0). "
    "Use it from an environment of its own: python -m venv .venv-insights && "
    ".venv-insights/bin/pip install 'captum-sscam[insights]' (it pins captum 0.8, "
    "numpy<2, flask and flask-compress; in this repository: make insights-venv), "
    "then run .venv-insights/bin/captum-sscam insights."
)


class InsightsUnavailableError(RuntimeError):
    """Captum Insights cannot be imported here (Captum 0.9+, or flask missing)."""


def require_insights() -> ModuleType:
    """Insights' method tables (``captum.insights.attr_vis.config``).

    Raises :class:`InsightsUnavailableError`, saying how to get Insights, where
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
    """Adapter base: a layer method bound to its layer, returning input-shaped maps.

    Subclasses (made by :func:`insights_method`) set ``layer_method`` (e.g.
    :class:`~captum_sscam.ScoreCAM`), ``layer_of`` (model -> layer) and
    ``display_name``.
    """

    layer_method: ClassVar[type[LayerAttribution]]
    layer_of: ClassVar[Callable[[nn.Module], nn.Module]]
    display_name: ClassVar[str]

    def __init__(self, forward_func: nn.Module) -> None:
        super().__init__(forward_func)
        self.bound = self.layer_method(forward_func, type(self).layer_of(forward_func))

    @classmethod
    def get_name(cls) -> str:
        return cls.display_name

    @log_usage()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> tuple[Tensor, ...]:
        """The layer method's map, upsampled to each input and shared over its channels.

        For an input of ``C`` channels every channel gets ``map / C``, so the
        channel sum (what Captum's image visualization draws) is the map.
        Keyword arguments go to the layer method (``nt_samples``, ``stdevs``, ...).
        """
        formatted = inputs if isinstance(inputs, tuple) else (inputs,)
        maps = self.bound.attribute(
            formatted, target=target, additional_forward_args=additional_forward_args, **kwargs
        )
        return tuple(input_shaped(maps, tensor) for tensor in formatted)


def input_shaped(maps: Tensor, like: Tensor) -> Tensor:
    """``(N, 1, h, w)`` maps -> ``like``'s shape ``(N, C, H, W)``, each channel ``map / C``."""
    channels = like.shape[1]
    upsampled = upsample_map(maps, tuple(like.shape[-2:])) / channels
    return upsampled.expand(-1, channels, -1, -1).contiguous().to(like.device)


def insights_method(
    layer_method: type[LayerAttribution],
    layer_of: Callable[[nn.Module], nn.Module],
    name: str,
) -> type[LayerMapForInsights]:
    """A class Insights can build as ``cls(model)``: ``layer_method`` on ``layer_of(model)``."""
    class_name = "".join(part for part in name.title() if part.isalnum()) + "ForInsights"
    attributes = {
        "layer_method": layer_method,
        "layer_of": staticmethod(layer_of),
        "display_name": name,
    }
    return type(class_name, (LayerMapForInsights,), attributes)


def register(
    layer_of: Callable[[nn.Module], nn.Module],
    *,
    nt_samples: int = 8,
    stdevs: float = 2.0,
) -> list[str]:
    """Add Score-CAM, SS-CAM and Grad-CAM (upsampled) to Insights' method list.

    Args:
        layer_of: returns the layer to explain for a model Insights passes
            (e.g. ``lambda model: model.layer4``).
        nt_samples: SS-CAM's samples preset in the dashboard (the papers use
            35; on a CPU a smaller preset keeps the dashboard responsive).
        stdevs: SS-CAM's noise level preset in the dashboard.

    Returns:
        The names registered, as the dashboard lists them.
    """
    config = require_insights()
    score_mode = config.StrEnumConfig(value="probability", limit=list(SCORE_MODES))
    parameters = {
        ScoreCAM: config.ConfigParameters(params={"score_mode": score_mode}),
        SmoothedScoreCAM: config.ConfigParameters(
            params={
                "nt_samples": config.NumberConfig(value=nt_samples, limit=(1, None)),
                # the dashboard parses number fields as integers: the noise level is text
                "stdevs": config.StrConfig(value=str(float(stdevs))),
                "noise_on": config.StrEnumConfig(value="mask", limit=list(NOISE_TARGETS)),
                "score_mode": score_mode,
            },
            post_process={"nt_samples": int, "stdevs": float},
        ),
        LayerGradCam: None,
    }
    names = []
    for method, method_config in parameters.items():
        name = GRAD_CAM_NAME if method is LayerGradCam else method.get_name()
        config.ATTRIBUTION_NAMES_TO_METHODS[name] = insights_method(method, layer_of, name)
        if method_config is not None:
            config.ATTRIBUTION_METHOD_CONFIG[name] = method_config
        names.append(name)
    return names


def photo_visualizer(
    model: nn.Module,
    layer_of: Callable[[nn.Module], nn.Module],
    photos: Sequence[Photo],
    preprocess: Callable[[Tensor], Tensor],
    class_names: Sequence[str],
    *,
    nt_samples: int = 8,
) -> Any:
    """An ``AttributionVisualizer`` over ``photos`` with the three methods registered.

    Args:
        model: the classifier (eval mode).
        layer_of: model -> the layer to explain.
        photos: photos at the model's input size.
        preprocess: one ``(3, H, W)`` float image in [0, 1] -> the model's input
            ``(3, H, W)`` (Insights applies it per example).
        class_names: the model's class names.
        nt_samples: SS-CAM's samples preset in the dashboard.

    The photos carry no ImageNet label, so each is labelled with the model's
    top class (Insights shows only labelled examples).
    """
    register(layer_of, nt_samples=nt_samples)
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
    from captum_sscam.models import lite0_preprocess

    return lite0_preprocess((image * 255.0).round().permute(1, 2, 0))[0]


def serve_bundled(port: int = 8000, nt_samples: int = 8, bind_all: bool = False) -> None:
    """Serve the dashboard for the bundled EfficientNet-Lite0 and photos (blocks)."""
    require_insights()
    from captum_sscam.cli import bundled_photos
    from captum_sscam.models import efficientnet_lite0, imagenet_class_names, lite0_target_layer

    visualizer = photo_visualizer(
        efficientnet_lite0(),
        lite0_target_layer,
        bundled_photos(224),
        lite0_image_preprocess,
        imagenet_class_names(),
        nt_samples=nt_samples,
    )
    print("Captum Insights with Score-CAM, SS-CAM and Grad-CAM (upsampled); Ctrl-C stops it.")
    visualizer.serve(blocking=True, port=port, bind_all=bind_all)


__all__ = [
    "GRAD_CAM_NAME",
    "InsightsUnavailableError",
    "LayerMapForInsights",
    "input_shaped",
    "insights_method",
    "photo_visualizer",
    "register",
    "require_insights",
    "serve_bundled",
]
