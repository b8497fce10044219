"""Warnings reported at the user's line, whatever path inside the package emitted them.

A fixed ``stacklevel`` is right for one call path only: the same note reached through
``SmoothedScoreCAM.attribute``, ``ScoreCAM.attribute``, Captum's ``NoiseTunnel`` or a
metric sits at a different depth each time (Captum's ``log_usage`` and torch's
``no_grad`` decorators add frames too). ``warn`` counts the frames that belong to this
package, to Captum or to torch, and reports the warning at the first frame outside
them: the line that called into the library. (Python 3.12's ``skip_file_prefixes``
does the same; the package supports 3.10.)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import FrameType

import captum
import torch

_PACKAGE_DIRECTORY = Path(__file__).resolve().parent.parent  # captum_sscam/
_LIBRARY_DIRECTORIES: tuple[str, ...] = tuple(
    str(directory) + "/"
    for directory in (
        _PACKAGE_DIRECTORY,
        *(Path(str(module.__file__)).resolve().parent for module in (captum, torch)),
    )
)
_PYTHON_INTERNALS = ("/contextlib.py", "/functools.py")


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the caller of the library."""
    warnings.warn(message, category, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside this package, Captum and torch."""
    frame: FrameType | None = sys._getframe(2)  # the caller of warn()
    level = 2
    while frame is not None and _inside_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level


def _inside_library(filename: str) -> bool:
    if filename.endswith(_PYTHON_INTERNALS) or filename.startswith("<frozen"):
        return True
    path = str(Path(filename).resolve())
    return path.startswith(_LIBRARY_DIRECTORIES)
