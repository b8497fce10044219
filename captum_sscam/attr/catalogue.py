"""The catalogue of attribution methods by key: the one list the library and the applications share.

Each `AttributionMethod` names a Captum-style class and how it is built and called: as
``cls(model, layer)`` for a layer method (with ``reshape_transform=`` where the class takes
one) or ``cls(model)`` for an input method, and the keyword arguments of ``attribute`` that
never change (``noise_on="mask"``). `AttributionMethod.maps` gives every method's result as
one ``(N, 1, h, w)`` map per example (an input method's ``(N, C, H, W)`` attributions summed
over the channels, as the metrics read them). The applications' registry
(``captum_sscam.apps.methods.METHODS``) adds to each entry the options it reads from the
command line; ``captum_sscam.metrics.quantus_explain_func`` explains with any entry by its key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from captum.attr import Attribution, IntegratedGradients, LayerGradCam
from torch import Tensor, nn

from captum_sscam.attr.group_score_cam import GroupScoreCAM
from captum_sscam.attr.integrated_score_cam import IntegratedScoreCAM
from captum_sscam.attr.score_cam import ScoreCAM
from captum_sscam.attr.smoothed_score_cam import SmoothedScoreCAM


@dataclass(frozen=True)
class AttributionMethod:
    """One attribution method of the catalogue.

    Attributes:
        key: its key (``"ss-cam"``), the command line's name for it.
        name: its display name (``"SS-CAM"``).
        attribution: the Captum-style class.
        summary: what it is, in a line.
        on_layer: a layer method (built with a layer) or an input method.
        takes_reshape_transform: the class takes ``reshape_transform=`` (transformers).
        fixed: keyword arguments of ``attribute`` that never change.
    """

    key: str
    name: str
    attribution: type[Attribution]
    summary: str
    on_layer: bool = True
    takes_reshape_transform: bool = False
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def supports(self, reshape_transform: Callable[[Tensor], Tensor] | None) -> bool:
        """Whether the method can explain a model whose layer needs ``reshape_transform``."""
        return reshape_transform is None or not self.on_layer or self.takes_reshape_transform

    def build(
        self,
        model: nn.Module,
        layer: nn.Module | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> Attribution:
        """The attribution object for ``model`` (and ``layer``, for a layer method).

        Raises:
            ValueError: a layer method without a layer, or a reshape transform for a
                method that cannot take one.
        """
        if not self.on_layer:
            return self.attribution(model)
        if layer is None:
            raise ValueError(f"{self.name} explains a layer: give the layer.")
        if reshape_transform is None:
            return self.attribution(model, layer)
        if not self.takes_reshape_transform:
            methods = ATTRIBUTION_METHODS.items()
            usable = ", ".join(key for key, other in methods if other.supports(reshape_transform))
            raise ValueError(
                f"{self.name} ({self.attribution.__name__}) cannot reshape this layer's output "
                f"(a transformer's tokens); use one of {usable}."
            )
        return self.attribution(model, layer, reshape_transform=reshape_transform)

    def maps(self, attribution: Attribution, inputs: Tensor, target: Any, **kwargs: Any) -> Tensor:
        """``(N, 1, h, w)`` maps: ``attribution.attribute`` with the fixed arguments (which
        ``kwargs`` may override) and ``kwargs``, detached; an input method's attributions
        summed over the channels."""
        arguments = {**self.fixed, **kwargs}
        maps = attribution.attribute(inputs, target=target, **arguments).detach()
        return maps if self.on_layer else maps.sum(dim=1, keepdim=True)


ATTRIBUTION_METHODS: dict[str, AttributionMethod] = {
    method.key: method
    for method in (
        AttributionMethod(
            "ig",
            "Integrated Gradients",
            IntegratedGradients,
            "Captum's IntegratedGradients, zero baseline, summed over colour channels",
            on_layer=False,
        ),
        AttributionMethod(
            "grad-cam",
            "Grad-CAM",
            LayerGradCam,
            "Captum's LayerGradCam with its ReLU",
            fixed={"relu_attributions": True},
        ),
        AttributionMethod(
            "score-cam",
            "Score-CAM",
            ScoreCAM,
            "captum_sscam.ScoreCAM",
            takes_reshape_transform=True,
        ),
        AttributionMethod(
            "ss-cam",
            "SS-CAM",
            SmoothedScoreCAM,
            "captum_sscam.SmoothedScoreCAM, noise on the masks (the paper's variant 1)",
            takes_reshape_transform=True,
            fixed={"noise_on": "mask"},
        ),
        AttributionMethod(
            "ss-cam-input",
            "SS-CAM (input)",
            SmoothedScoreCAM,
            "captum_sscam.SmoothedScoreCAM, noise on the masked inputs (variant 2)",
            takes_reshape_transform=True,
            fixed={"noise_on": "input"},
        ),
        AttributionMethod(
            "is-cam",
            "IS-CAM",
            IntegratedScoreCAM,
            "captum_sscam.IntegratedScoreCAM, 10 integration steps (torchcam's default)",
            takes_reshape_transform=True,
            fixed={"n_steps": 10},
        ),
        AttributionMethod(
            "group-score-cam",
            "Group Score-CAM",
            GroupScoreCAM,
            "captum_sscam.GroupScoreCAM, 32 k-means groups of channels (32 forwards per image)",
            takes_reshape_transform=True,
            fixed={"n_groups": 32},
        ),
    )
}
"""Every method of the catalogue, by key."""

__all__ = ["ATTRIBUTION_METHODS", "AttributionMethod"]
