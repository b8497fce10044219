"""Faithfulness and localisation metrics of the Score-CAM and SS-CAM papers.

Functional, in the style of `captum.metrics`: each takes the model, the
inputs and the attributions of any method (layer maps at any resolution, or
input attributions with channels) and returns one value per example.
"""

from captum_sscam.metrics.captum_adapters import input_shaped, tuple_explanation
from captum_sscam.metrics.confidence import average_drop, increase_in_confidence
from captum_sscam.metrics.deletion_insertion import Curves, deletion_auc, insertion_auc
from captum_sscam.metrics.pointing import energy_pointing_game, pointing_game
from captum_sscam.metrics.quantus_adapter import quantus_explain_func, road_perturb_func
from captum_sscam.metrics.randomisation import (
    Randomisation,
    model_randomisation,
    randomisation_layers,
)

__all__ = [
    "Curves",
    "Randomisation",
    "average_drop",
    "deletion_auc",
    "energy_pointing_game",
    "increase_in_confidence",
    "input_shaped",
    "insertion_auc",
    "model_randomisation",
    "pointing_game",
    "quantus_explain_func",
    "randomisation_layers",
    "road_perturb_func",
    "tuple_explanation",
]
