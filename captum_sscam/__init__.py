"""Score-CAM and Smoothed Score-CAM (SS-CAM) for Captum.

The library's public names. Everything an application needs (the command line,
the report, the Insights adapter, the dataset evaluation in ``captum_sscam.apps``)
is imported from here, from ``captum_sscam.metrics`` or from
``captum_sscam.visualization``, never from a private module.

The names are those of `captum_sscam.attr`, imported on first use (PEP 562): ``import
captum_sscam`` alone imports neither torch nor Captum, so the command line (under this package)
answers ``--help`` and usage errors at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and the API reference read; at run time, __getattr__
    from captum_sscam.attr import *  # noqa: F403 - the library's public names, attr.__all__

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``attr``, ``__all__`` and `captum_sscam.attr`'s public names, imported on first use."""
    if name.startswith("__") and name != "__all__":  # probes (__wrapped__, ...) import nothing
        raise AttributeError(f"module 'captum_sscam' has no attribute {name!r}")
    attr = importlib.import_module("captum_sscam.attr")
    if name == "__all__":
        return [*attr.__all__, "__version__"]
    if name == "attr" or name in attr.__all__:
        return attr if name == "attr" else getattr(attr, name)
    raise AttributeError(f"module 'captum_sscam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
