"""Score-CAM and Smoothed Score-CAM (SS-CAM) for Captum."""

from captum_sscam.attr import ScoreCAM, SmoothedScoreCAM

__version__ = "0.1.0"

__all__ = ["ScoreCAM", "SmoothedScoreCAM", "__version__"]
