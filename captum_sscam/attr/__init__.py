"""The library's attribution methods: the Score-CAM family as Captum layer attributions."""

from captum_sscam._core.malloc import release_freed_memory, set_keep_freed_memory
from captum_sscam.attr._options import SCORE_MODES
from captum_sscam.attr._perturbations import NOISE_PLACEMENTS
from captum_sscam.attr._sampling import SAMPLE_ALLOCATIONS
from captum_sscam.attr.catalogue import ATTRIBUTION_METHODS, AttributionMethod
from captum_sscam.attr.group_score_cam import GroupScoreCAM
from captum_sscam.attr.integrated_score_cam import IntegratedScoreCAM
from captum_sscam.attr.reshape_transforms import (
    channels_last_reshape_transform,
    vit_reshape_transform,
)
from captum_sscam.attr.score_cam import ScoreCAM
from captum_sscam.attr.smoothed_score_cam import SmoothedScoreCAM
from captum_sscam.targets import (
    DetectionBox,
    EmbeddingSimilarity,
    ExampleTarget,
    MultiLabelClasses,
    SegmentationRegion,
)

__all__ = [
    "ATTRIBUTION_METHODS",
    "NOISE_PLACEMENTS",
    "SAMPLE_ALLOCATIONS",
    "SCORE_MODES",
    "AttributionMethod",
    "DetectionBox",
    "EmbeddingSimilarity",
    "ExampleTarget",
    "GroupScoreCAM",
    "IntegratedScoreCAM",
    "MultiLabelClasses",
    "ScoreCAM",
    "SegmentationRegion",
    "SmoothedScoreCAM",
    "channels_last_reshape_transform",
    "release_freed_memory",
    "set_keep_freed_memory",
    "vit_reshape_transform",
]
