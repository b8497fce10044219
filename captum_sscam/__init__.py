"""Score-CAM and Smoothed Score-CAM (SS-CAM) for Captum.

The library's public names. Everything an application needs (the command line,
the report, the Insights adapter, the dataset evaluation in ``captum_sscam.apps``)
is imported from here, from ``captum_sscam.metrics`` or from
``captum_sscam.visualization``, never from a private module.
"""

from captum_sscam.attr import (
    NOISE_PLACEMENTS,
    SCORE_MODES,
    IntegratedScoreCAM,
    ScoreCAM,
    SmoothedScoreCAM,
    channels_last_reshape_transform,
    release_freed_memory,
    set_keep_freed_memory,
    vit_reshape_transform,
)

__version__ = "0.1.0"

__all__ = [
    "NOISE_PLACEMENTS",
    "SCORE_MODES",
    "IntegratedScoreCAM",
    "ScoreCAM",
    "SmoothedScoreCAM",
    "__version__",
    "channels_last_reshape_transform",
    "release_freed_memory",
    "set_keep_freed_memory",
    "vit_reshape_transform",
]
