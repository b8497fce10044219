"""The applications built on the library: command line, report, Insights, evaluation.

Everything here uses only the library's public names (``captum_sscam``,
``captum_sscam.metrics``, ``captum_sscam.visualization``); the library never
imports this package. Modules:

- `captum_sscam.apps.methods`: the registry of compared methods;
- `captum_sscam.apps.arguments`: the command line's arguments, checked before torch loads;
- `captum_sscam.apps.models`: the bundled EfficientNet-Lite0, torchvision
  models (transformers with their reshape transform) and your own;
- `captum_sscam.apps.data`: the bundled photos, image files and folders,
  and the centre crop the model sees;
- `captum_sscam.apps.scores`: the reported metrics, labelled with their direction;
- `captum_sscam.apps.report`: the HTML report;
- `captum_sscam.apps.cli`: the ``captum-sscam`` command;
- `captum_sscam.apps.insights`: Captum Insights (Captum 0.8);
- `captum_sscam.apps.evaluate`: the dataset evaluation (``torchrun``);
- `captum_sscam.apps.annotated_photos`: the photos with object boxes.

The names below are those the examples use, each imported from its module on first use
(PEP 562): importing ``captum_sscam.apps.cli`` does not import torch, Captum or the models.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "add_model_arguments": "arguments",
    "Photo": "data",
    "bundled_photos": "data",
    "center_crop_photo": "data",
    "load_images": "data",
    "UsageError": "errors",
    "COMPARED": "methods",
    "METHODS": "methods",
    "Method": "methods",
    "Options": "methods",
    "explain_functions": "methods",
    "LoadedModel": "models",
    "load_model": "models",
    "model_and_layer": "models",
    "class_name": "report",
    "compare": "report",
    "write_report": "report",
    "METRICS": "scores",
    "metric_values": "scores",
}
"""Each name of ``__all__`` and the module of `captum_sscam.apps` that defines it."""

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """The names of ``__all__``, imported from their module on first use."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'captum_sscam.apps' has no attribute {name!r}")
    return getattr(importlib.import_module(f"captum_sscam.apps.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
