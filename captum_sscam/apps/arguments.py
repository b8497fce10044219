"""The command line's arguments, checked before torch, Captum or a model is imported.

``captum-sscam --help`` and every mistake in the arguments answer at once because this
module imports only the standard library: the parser (`captum_sscam.apps.cli`) is built
from it, and the heavy modules are imported only once the arguments are known to be good.

What the parser must know without importing them is written here once more: the method
keys of `captum_sscam.apps.methods.METHODS` and its `COMPARED` default, and the library's
`captum_sscam.SCORE_MODES` and `captum_sscam.SAMPLE_ALLOCATIONS` (tests/test_cli.py
checks each copy against its source). The number types below reject what can never be
right (``--nt-samples 0``) in the argument's own words; what depends on more than one
argument is left to the library's checks, which `captum_sscam.apps.methods.Options`
runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

METHOD_KEYS = (
    "ig", "grad-cam", "score-cam", "ss-cam", "ss-cam-input", "is-cam", "group-score-cam",
)  # fmt: skip
"""The keys of `captum_sscam.apps.methods.METHODS`, in its order."""

COMPARED = ("ig", "grad-cam", "score-cam", "ss-cam")
"""`captum_sscam.apps.methods.COMPARED`: the methods ``compare`` runs by default."""

TASK_METHODS = ("score-cam", "ss-cam", "ss-cam-input", "is-cam", "group-score-cam")
"""The methods ``explain --target-box`` runs: the Score-CAM family, which takes callable
targets (`captum_sscam.apps.tasks`)."""

SCORE_MODES = ("probability", "sigmoid", "logit", "channel_softmax")
"""`captum_sscam.SCORE_MODES`."""

SAMPLE_ALLOCATIONS = ("uniform", "adaptive")
"""`captum_sscam.SAMPLE_ALLOCATIONS`."""

BUNDLED_MODEL = "lite0"
"""``--model``'s default: the bundled pretrained EfficientNet-Lite0."""


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}.") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}.")
        return value

    return parse


def non_negative_number(text: str) -> float:
    """An argparse ``type``: a finite number ``>= 0`` (SS-CAM's ``--stdevs``)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}.")
    return value


def fraction(text: str) -> float:
    """An argparse ``type``: a fraction in ``(0, 1]`` (the metrics' deletion/insertion step)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction of the pixels in (0, 1], got {text}.")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}.") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}.")
    return value


def box(text: str) -> tuple[float, float, float, float]:
    """An argparse ``type``: a box ``x0,y0,x1,y1`` in pixels, ``x1 > x0`` and ``y1 > y0``."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(
            f"must be four numbers x0,y0,x1,y1 (pixels of the model's input), got {text!r}."
        )
    x0, y0, x1, y1 = (_number(part) for part in parts)
    if not (x1 > x0 and y1 > y0):
        raise argparse.ArgumentTypeError(f"must have x1 > x0 and y1 > y0, got {text}.")
    return x0, y0, x1, y1


def method_keys(text: str) -> list[str]:
    """An argparse ``type``: a comma list of method keys (``"ig,score-cam"``)."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise argparse.ArgumentTypeError(f"give at least one method of {', '.join(METHOD_KEYS)}.")
    unknown = [key for key in keys if key not in METHOD_KEYS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method {unknown[0]!r}; choose from {', '.join(METHOD_KEYS)}."
        )
    return keys


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--layer`` and ``--size`` (read by
    `captum_sscam.apps.models.model_and_layer`)."""
    parser.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help="'lite0' (bundled pretrained EfficientNet-Lite0, default), a torchvision model "
        "name (CNNs, vit_b_16, swin_t, lraspp_mobilenet_v3_large, "
        "fasterrcnn_mobilenet_v3_large_320_fpn, ...), 'timm:NAME' (a timm model, e.g. "
        "timm:resnet18), or 'package.module:function' returning an nn.Module",
    )
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        help="torchvision weights: DEFAULT (must be on this machine), a weights name, "
        "a state_dict file, or 'random'; timm: DEFAULT (the cached pretrained weights, else "
        "random, said when so), a state_dict file, or 'random'",
    )
    parser.add_argument("--layer", help="the module to explain (default: the model's last block)")
    parser.add_argument(
        "--size",
        type=integer_at_least(1),
        default=None,
        help="input size (default: the pretrained weights' size, else 224)",
    )


__all__ = [
    "BUNDLED_MODEL",
    "COMPARED",
    "METHOD_KEYS",
    "SAMPLE_ALLOCATIONS",
    "SCORE_MODES",
    "TASK_METHODS",
    "add_model_arguments",
    "box",
    "fraction",
    "integer_at_least",
    "method_keys",
    "non_negative_number",
]
