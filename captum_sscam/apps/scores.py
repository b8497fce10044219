"""The metrics the applications report, with their labels and directions.

One table, `METRICS`, read by the HTML report and the dataset
evaluation; `metric_values` computes every metric of it with
`captum_sscam.metrics` for one method's maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_sscam.metrics import (
    Curves,
    average_drop,
    deletion_auc,
    energy_pointing_game,
    increase_in_confidence,
    insertion_auc,
    pointing_game,
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Metric:
    """A reported metric: its key in records, what it is, and its direction.

    Attributes:
        key: the name in records, tables and the report (``"deletion"``).
        label: what it is, with its unit (``"Average Drop %"``).
        lower_is_better: the direction in which a map is more faithful.
        needs_boxes: a localisation metric, computed on photos with object boxes only.
    """

    key: str
    label: str
    lower_is_better: bool
    needs_boxes: bool = False

    @property
    def heading(self) -> str:
        """``"Deletion AUC (lower is better)"``."""
        return f"{self.label} ({'lower' if self.lower_is_better else 'higher'} is better)"

    @property
    def arrow(self) -> str:
        """``↓`` when lower is better, ``↑`` when higher is."""
        return "↓" if self.lower_is_better else "↑"


METRICS: dict[str, Metric] = {
    metric.key: metric
    for metric in (
        Metric("deletion", "Deletion AUC", lower_is_better=True),
        Metric("insertion", "Insertion AUC", lower_is_better=False),
        Metric("average_drop", "Average Drop %", lower_is_better=True),
        Metric("increase", "Increase in Confidence %", lower_is_better=False),
        Metric("energy_pg", "Energy pointing game", lower_is_better=False, needs_boxes=True),
        Metric("pointing_game", "Pointing game (15 px)", lower_is_better=False, needs_boxes=True),
    )
}
"""Every reported metric, by key. Deletion: pixels set to zero; insertion: from a
blurred image; both with the softmax probability of the target, 1 % of the
pixels per step by default. Average Drop and Increase in Confidence are
percentages (the mean drop of the target's probability on the image multiplied
by its map, and the share of images whose probability rises). The pointing
games need object boxes."""


@dataclass
class Scores:
    """One method's metric values (key -> one value per example, NaN where a
    localisation metric has no boxes) and its deletion and insertion curves."""

    values: dict[str, list[float]]
    deletion: Curves
    insertion: Curves


def metric_values(
    model: Callable[..., Tensor],
    inputs: Tensor,
    maps: Tensor,
    targets: Tensor,
    boxes: Sequence[Sequence[Box]],
    *,
    step: float = 0.01,
    max_examples_per_batch: int | None = None,
) -> Scores:
    """Every metric of `METRICS` for one method's maps.

    Args:
        model: the classifier.
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per example, at any resolution (``(N, 1, h, w)``).
        targets: ``(N,)`` explained classes.
        boxes: per example, its object boxes in input pixels (may be empty).
        step: fraction of the pixels deleted or inserted per step.
        max_examples_per_batch: perturbed images per forward pass (``None``: all).
    """
    common = {"target": targets, "max_examples_per_batch": max_examples_per_batch}
    deletion = deletion_auc(model, inputs, maps, step=step, return_curves=True, **common)
    insertion = insertion_auc(model, inputs, maps, step=step, return_curves=True, **common)
    values = {
        "deletion": deletion.auc.tolist(),
        "insertion": insertion.auc.tolist(),
        "average_drop": average_drop(model, inputs, maps, **common).tolist(),
        "increase": increase_in_confidence(model, inputs, maps, **common).tolist(),
    }
    with_boxes = [index for index, example in enumerate(boxes) if example]
    if with_boxes:
        size = tuple(inputs.shape[-2:])
        chosen = maps[torch.tensor(with_boxes, device=maps.device)]
        chosen_boxes = [boxes[index] for index in with_boxes]
        localisation = {"energy_pg": energy_pointing_game, "pointing_game": pointing_game}
        for key, function in localisation.items():
            scores = function(chosen, chosen_boxes, size).tolist()
            column = [float("nan")] * len(boxes)
            for index, value in zip(with_boxes, scores, strict=True):
                column[index] = value
            values[key] = column
    return Scores(values, deletion, insertion)


__all__ = ["METRICS", "Metric", "Scores", "metric_values"]
