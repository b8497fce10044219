"""The applications built on the library: command line, report, Insights, evaluation.

Everything here uses only the library's public names (``captum_sscam``,
``captum_sscam.metrics``, ``captum_sscam.visualization``); the library never
imports this package. Modules:

- `captum_sscam.apps.methods`: the registry of compared methods;
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

The names below are those the examples use.
"""

from captum_sscam.apps.data import Photo, bundled_photos, center_crop_photo, load_images
from captum_sscam.apps.errors import UsageError
from captum_sscam.apps.methods import COMPARED, METHODS, Method, Options, explain_functions
from captum_sscam.apps.models import (
    LoadedModel,
    add_model_arguments,
    load_model,
    model_and_layer,
)
from captum_sscam.apps.report import class_name, compare, write_report
from captum_sscam.apps.scores import METRICS, metric_values

__all__ = [
    "COMPARED",
    "METHODS",
    "METRICS",
    "LoadedModel",
    "Method",
    "Options",
    "Photo",
    "UsageError",
    "add_model_arguments",
    "bundled_photos",
    "center_crop_photo",
    "class_name",
    "compare",
    "explain_functions",
    "load_images",
    "load_model",
    "metric_values",
    "model_and_layer",
    "write_report",
]
