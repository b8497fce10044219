"""Score-CAM and SS-CAM layer attributions."""

from captum_sscam.attr.score_cam import ScoreCAM
from captum_sscam.attr.smoothed_score_cam import SmoothedScoreCAM

__all__ = ["ScoreCAM", "SmoothedScoreCAM"]
