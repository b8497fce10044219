r"""Targets for what people explain beyond single-label classification.

A Score-CAM-family method (and the faithfulness metrics) accepts as ``target`` a
function of the model's output for a batch of (masked) inputs, returning one score
per input, ``(B,)``, or ``T`` of them, ``(B, T)`` (``T`` maps from the same forward
passes). It works whatever the model returns: a tensor, a tuple, a dict, a list of
dicts. Its scores are used as they are: ``score_mode``'s softmax or sigmoid does not
apply (``score_mode="channel_softmax"`` still weights the channels by
$\mathrm{softmax}_k(a)$; every other mode by $w_k = a_k$).

Two protocols:

- a plain callable is called as ``target(output)``, e.g.
  ``lambda output: output["logits"][:, 3]``;
- an [ExampleTarget][captum_sscam.targets.ExampleTarget] is called as
  ``target(output, examples)``, where ``examples`` ``(B,)`` holds the index, among the
  call's inputs, of the example each row was made from: rows of one batch of masked
  inputs can belong to different examples. The targets below are ``ExampleTarget``\s:
  each takes its data (a region, a box, a reference embedding, a class set) once for
  all examples or with one row per example.

- [SegmentationRegion][captum_sscam.targets.SegmentationRegion]: a class's mean
  probability (or logit) over a mask or box of a ``(N, C, H, W)`` or ``{"out": ...}``
  output;
- [DetectionBox][captum_sscam.targets.DetectionBox]: for torchvision detections (a list
  of ``{"boxes", "labels", "scores"}``), the best score of a label's predictions times
  their IoU with a box;
- [EmbeddingSimilarity][captum_sscam.targets.EmbeddingSimilarity]: the cosine
  similarity of ``(N, D)`` embeddings to a reference embedding;
- [MultiLabelClasses][captum_sscam.targets.MultiLabelClasses]: the sum of several
  classes' sigmoids of ``(N, C)`` logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from captum_sscam._core.checks import check_choice
from captum_sscam._core.targets import ExampleTarget

__all__ = [
    "DetectionBox",
    "EmbeddingSimilarity",
    "ExampleTarget",
    "MultiLabelClasses",
    "SegmentationRegion",
]


class _PerExample(ExampleTarget):
    """Data held once for all examples (one row) or per example (``N`` rows)."""

    def __init__(self, rows: int) -> None:
        self._rows = rows
        self._copies: dict[tuple[int, torch.device], Tensor] = {}  # data on each device

    @property
    def num_examples(self) -> int | None:
        return None if self._rows == 1 else self._rows

    def _of(self, data: Tensor, examples: Tensor) -> Tensor:
        """The rows of ``data`` (one or ``N``) for a batch of rows of ``examples``."""
        key = (id(data), examples.device)
        if key not in self._copies:  # copied to the device once, not per batch
            self._copies[key] = data.to(examples.device)
        data = self._copies[key]
        if data.shape[0] == 1:
            return data.expand(len(examples), *data.shape[1:])
        return data[examples]


class SegmentationRegion(_PerExample):
    r"""A class's mean probability (or logit) over a region of a segmentation output.

    For a model returning per-pixel class scores $z$ ``(N, C, H, W)``, or a dict
    holding them under ``output_key`` (torchvision's ``{"out": ...}``), the score of an
    input is

    $$
    S = \frac{\sum_{i,j} m_{ij}\, p_{c,ij}}{\sum_{i,j} m_{ij}}, \qquad
    p_{c,ij} = \mathrm{softmax}_c(z_{\cdot,ij})  \text{ (``score="probability"``)}
    \quad\text{or}\quad z_{c,ij} \text{ (``score="logit"``)},
    $$

    over the region $m$: a boolean (or soft, non-negative) ``mask`` at the output's
    resolution, ``(H, W)`` for every example or ``(N, H, W)`` one per example; or a
    ``box`` ``(x0, y0, x1, y1)`` in output pixels (ends excluded), ``(4,)`` or ``(N, 4)``;
    or neither: the whole image. The map then says which parts of the input make the
    model see class $c$ in that region.

    Args:
        class_index: the class $c$: an int, or one per example (a sequence or 1-D tensor).
        mask: the region as a mask (give ``mask`` or ``box``, or neither).
        box: the region as a box.
        score: ``"probability"`` (softmax over the classes at each pixel, default) or
            ``"logit"``.
        output_key: where a dict output holds the per-pixel scores (``"out"``).
    """

    def __init__(
        self,
        class_index: int | Sequence[int] | Tensor,
        mask: Tensor | None = None,
        box: Sequence[float] | Tensor | None = None,
        score: str = "probability",
        output_key: str = "out",
    ) -> None:
        check_choice("score", score, ("probability", "logit"))
        classes = _class_rows(class_index)
        if mask is not None and box is not None:
            raise ValueError("SegmentationRegion takes a mask or a box, not both.")
        region = None if mask is None else _mask_rows(mask)
        boxes = None if box is None else _box_rows(box, "box")
        rows = {
            len(classes),
            1 if region is None else len(region),
            1 if boxes is None else len(boxes),
        }
        if len(rows - {1}) > 1:
            raise ValueError(
                f"SegmentationRegion got per-example data of different lengths {sorted(rows)}; "
                "give each per-example argument one row per example."
            )
        super().__init__(max(rows))
        self.classes, self.mask, self.box = classes, region, boxes
        self.score, self.output_key = score, output_key
        # per output size: the region's weights within its bounding box, and that box
        self._regions: dict[tuple[int, ...], tuple[Tensor, tuple[int, int, int, int]]] = {}

    def __call__(self, output: Any, examples: Tensor) -> Tensor:
        logits = _tensor_in(output, self.output_key, "SegmentationRegion")
        if logits.dim() != 4:
            raise ValueError(
                "SegmentationRegion needs per-pixel class scores (N, C, H, W), got shape "
                f"{tuple(logits.shape)}."
            )
        if int(self.classes.max()) >= logits.shape[1]:  # on the host: no device sync
            raise ValueError(
                f"SegmentationRegion class {int(self.classes.max())} is out of range for an "
                f"output with {logits.shape[1]} classes."
            )
        region, (top, bottom, left, right) = self._region(tuple(logits.shape[2:]))
        logits = logits[:, :, top:bottom, left:right].float()  # the softmax is needed there only
        scores = logits.softmax(dim=1) if self.score == "probability" else logits
        rows = torch.arange(len(examples), device=scores.device)
        class_map = scores[rows, self._of(self.classes, examples).to(scores.device)]  # (B, h, w)
        weights = self._of(region, examples).to(class_map)
        return (class_map * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)

    def _region(self, size: tuple[int, ...]) -> tuple[Tensor, tuple[int, int, int, int]]:
        """The region's weights within its bounding box (over all examples) and that box
        ``(top, bottom, left, right)`` in output pixels, made on the host once per size."""
        if size not in self._regions:
            weights = self._weights(size)
            ys, xs = weights.sum(dim=0).nonzero(as_tuple=True)
            top, bottom, left, right = (
                int(ys.min()),
                int(ys.max()) + 1,
                int(xs.min()),
                int(xs.max()) + 1,
            )
            cropped = weights[:, top:bottom, left:right].contiguous()
            self._regions[size] = (cropped, (top, bottom, left, right))
        return self._regions[size]

    def _weights(self, size: tuple[int, ...]) -> Tensor:
        """``(1, H, W)`` or ``(N, H, W)`` region weights at the output's size ``(H, W)``."""
        if self.mask is not None:
            if tuple(self.mask.shape[1:]) != size:
                raise ValueError(
                    f"SegmentationRegion mask has size {tuple(self.mask.shape[1:])} but the "
                    f"output's per-pixel scores are {size}; give the mask at the output's "
                    "resolution."
                )
            return self.mask
        height, width = size
        if self.box is None:
            return torch.ones(1, height, width)
        ys = torch.arange(height).view(1, -1, 1) + 0.5  # pixel centres
        xs = torch.arange(width).view(1, 1, -1) + 0.5
        box = self.box[:, :, None, None]
        inside = (xs >= box[:, 0]) & (xs < box[:, 2]) & (ys >= box[:, 1]) & (ys < box[:, 3])
        if not bool(inside.flatten(1).any(1).all()):
            raise ValueError(
                f"a SegmentationRegion box covers no pixel of the {height}x{width} output; "
                "give boxes (x0, y0, x1, y1) in output pixels."
            )
        return inside.float()


class DetectionBox(_PerExample):
    r"""How strongly a detector finds an object of ``label`` at ``box``.

    For torchvision-style detector outputs (in eval mode: one dict per image with
    ``"boxes"`` ``(K, 4)`` as ``(x0, y0, x1, y1)``, ``"labels"`` ``(K,)`` and
    ``"scores"`` ``(K,)``), the score of an input is

    $$
    S = \max_{k:\ l_k = c} s_k \,\mathrm{IoU}(b_k, b^*)
    \quad (0 \text{ when no prediction has label } c),
    $$

    the best confidence $s_k$ among the predictions of the given label $c$, times their
    intersection over union with the given box $b^*$ (a prediction elsewhere counts for
    nothing). The map says which parts of the input make the detector find that object
    there. Detectors drop predictions under their score threshold: with few
    predictions left many masked inputs score 0 (lower ``box_score_thresh`` /
    ``score_thresh`` to see more).

    Args:
        box: ``(x0, y0, x1, y1)`` in input pixels, ``(4,)`` for every example or ``(N, 4)``.
        label: the class $c$: an int, or one per example.
    """

    def __init__(self, box: Sequence[float] | Tensor, label: int | Sequence[int] | Tensor) -> None:
        boxes, labels = _box_rows(box, "box"), _class_rows(label)
        if len(boxes) != len(labels) and 1 not in (len(boxes), len(labels)):
            raise ValueError(
                f"DetectionBox got {len(boxes)} boxes and {len(labels)} labels; give one of "
                "each for all examples, or one per example."
            )
        super().__init__(max(len(boxes), len(labels)))
        self.box, self.label = boxes, labels

    def __call__(self, output: Any, examples: Tensor) -> Tensor:
        if not isinstance(output, (list, tuple)) or len(output) != len(examples):
            raise TypeError(
                "DetectionBox needs a detector's output, one dict with boxes, labels and "
                f"scores per input ({len(examples)}), got {type(output).__name__}"
                f"{f' of {len(output)}' if isinstance(output, (list, tuple)) else ''}."
            )
        boxes, labels = self._of(self.box, examples), self._of(self.label, examples)
        scores = []
        for row, detections in enumerate(output):
            if not isinstance(detections, Mapping) or not {"boxes", "labels", "scores"} <= set(
                detections
            ):
                raise TypeError(
                    "DetectionBox needs one dict with 'boxes', 'labels' and 'scores' per input, "
                    f"got {type(detections).__name__}."
                )
            match = detections["labels"] == labels[row].to(detections["labels"].device)
            overlap = box_iou(
                detections["boxes"][match].float(),
                boxes[row : row + 1].to(detections["boxes"].device),
            )[:, 0]
            found = detections["scores"][match].float() * overlap
            scores.append(found.max() if len(found) else found.new_zeros(()))
        return torch.stack(scores).to(examples.device)


class EmbeddingSimilarity(_PerExample):
    r"""The cosine similarity of the model's embedding to a reference embedding.

    For a model returning embeddings $e$ ``(N, D)`` (or a dict or tuple holding them
    under ``output_key``; larger per-example shapes are flattened), the score of an
    input is

    $$
    S = \frac{\langle e, r \rangle}{\lVert e \rVert\, \lVert r \rVert},
    $$

    with $r$ the ``reference``: ``(D,)`` for every example or ``(N, D)`` one per example
    (e.g. the embedding of a query image or of a text prompt). The map says which parts of
    the input make its embedding resemble the reference (retrieval, CLIP-style,
    metric-learning models).

    Args:
        reference: the reference embedding(s).
        output_key: a key or index into a dict or tuple output; ``None`` for a tensor.
    """

    def __init__(self, reference: Tensor, output_key: str | int | None = None) -> None:
        if not isinstance(reference, Tensor) or not reference.dtype.is_floating_point:
            raise TypeError("EmbeddingSimilarity reference must be a floating-point tensor.")
        rows = reference.detach().float()
        rows = rows.reshape(1, -1) if rows.dim() == 1 else rows.flatten(1)
        if not bool(rows.norm(dim=1).gt(0).all()) or not bool(torch.isfinite(rows).all()):
            raise ValueError("EmbeddingSimilarity reference must be finite and nonzero.")
        super().__init__(rows.shape[0])
        self.reference, self.output_key = rows, output_key

    def __call__(self, output: Any, examples: Tensor) -> Tensor:
        embedding = _tensor_in(output, self.output_key, "EmbeddingSimilarity")
        embedding = embedding.float().flatten(1)
        reference = self._of(self.reference, examples).to(embedding)
        if embedding.shape[1] != reference.shape[1]:
            raise ValueError(
                f"EmbeddingSimilarity reference has {reference.shape[1]} dimensions but the "
                f"model's embeddings have {embedding.shape[1]}."
            )
        return torch.nn.functional.cosine_similarity(embedding, reference, dim=1)


class MultiLabelClasses(_PerExample):
    r"""The sum of several classes' sigmoids: a set of labels of a multi-label classifier.

    For a model returning logits $z$ ``(N, C)`` (or a dict or tuple holding them under
    ``output_key``), the score of an input is

    $$
    S = \sum_{c \in \mathcal{C}} \sigma(z_c), \qquad \sigma(t) = \frac{1}{1 + e^{-t}},
    $$

    over the class set $\mathcal{C}$: a sequence of class indices for every example, or
    an ``(N, C)`` multi-hot tensor of each example's labels. The map says which parts of
    the input support those labels together (for one class, ``score_mode="sigmoid"``
    with an index target gives the same).

    Args:
        classes: the class indices, or ``(N, C)`` multi-hot labels.
        output_key: a key or index into a dict or tuple output; ``None`` for a tensor.
    """

    def __init__(
        self, classes: Sequence[int] | Tensor, output_key: str | int | None = None
    ) -> None:
        if isinstance(classes, Tensor) and classes.dim() == 2:
            hot = classes.detach().float()
        else:
            indices = torch.as_tensor(classes).reshape(-1)
            if len(indices) == 0 or indices.dtype.is_floating_point or int(indices.min()) < 0:
                raise ValueError(
                    "MultiLabelClasses classes must be non-negative class indices or an "
                    f"(N, C) multi-hot tensor, got {classes!r}."
                )
            hot = torch.zeros(1, int(indices.max()) + 1)
            hot[0, indices.long()] = 1.0
        super().__init__(hot.shape[0])
        self.hot, self.output_key = hot, output_key

    def __call__(self, output: Any, examples: Tensor) -> Tensor:
        logits = _tensor_in(output, self.output_key, "MultiLabelClasses").float().flatten(1)
        hot = self._of(self.hot, examples).to(logits)
        if hot.shape[1] > logits.shape[1]:
            raise ValueError(
                f"MultiLabelClasses asks for class {hot.shape[1] - 1} but the model returns "
                f"{logits.shape[1]} classes."
            )
        return (logits[:, : hot.shape[1]].sigmoid() * hot).sum(dim=1)


def box_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """``(K, M)`` intersection over union of ``(x0, y0, x1, y1)`` boxes (torchvision's if
    it is installed)."""
    try:
        from torchvision.ops import box_iou as torchvision_box_iou
    except ImportError:
        top_left = torch.maximum(boxes[:, None, :2], others[None, :, :2])
        bottom_right = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
        intersection = (bottom_right - top_left).clamp(min=0).prod(dim=2)
        areas = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
        other_areas = (others[:, 2:] - others[:, :2]).clamp(min=0).prod(dim=1)
        union = areas[:, None] + other_areas[None, :] - intersection
        return intersection / union.clamp(min=torch.finfo(union.dtype).tiny)
    return torchvision_box_iou(boxes, others)


def _tensor_in(output: Any, key: str | int | None, name: str) -> Tensor:
    """The tensor a target reads: the output itself, or its entry ``key``."""
    value = output
    if key is not None and isinstance(output, (Mapping, list, tuple)):
        try:
            value = output[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"{name}: the model's output has no entry {key!r}.") from None
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} needs a Tensor output (or a dict or tuple holding one under output_key), "
            f"got {type(value).__name__}."
        )
    return value


def _class_rows(classes: int | Sequence[int] | Tensor) -> Tensor:
    """``(1,)`` or ``(N,)`` long class indices."""
    rows = torch.as_tensor(classes).reshape(-1)
    if len(rows) == 0 or rows.dtype.is_floating_point or rows.dtype == torch.bool:
        raise TypeError(f"a class must be an int or one int per example, got {classes!r}.")
    if int(rows.min()) < 0:
        raise ValueError(f"classes must be non-negative, got {classes!r}.")
    return rows.long()


def _box_rows(box: Sequence[float] | Tensor, name: str) -> Tensor:
    """``(1, 4)`` or ``(N, 4)`` float boxes, checked."""
    rows = torch.as_tensor(box, dtype=torch.float32)
    rows = rows.view(1, -1) if rows.dim() == 1 else rows
    if rows.dim() != 2 or rows.shape[1] != 4 or len(rows) == 0:
        raise ValueError(
            f"{name} must be (x0, y0, x1, y1) or an (N, 4) tensor of them, got shape "
            f"{tuple(rows.shape)}."
        )
    if not bool(torch.isfinite(rows).all()) or not bool((rows[:, 2:] > rows[:, :2]).all()):
        raise ValueError(f"{name} must be finite with x1 > x0 and y1 > y0, got {box!r}.")
    return rows


def _mask_rows(mask: Tensor) -> Tensor:
    """``(1, H, W)`` or ``(N, H, W)`` float weights of a boolean or soft mask, checked."""
    if not isinstance(mask, Tensor) or mask.dim() not in (2, 3):
        raise ValueError(
            "mask must be a tensor (H, W) for every example or (N, H, W) one per example."
        )
    rows = mask.detach().float()
    rows = rows.unsqueeze(0) if rows.dim() == 2 else rows
    if not bool(torch.isfinite(rows).all()) or bool((rows < 0).any()):
        raise ValueError("mask must be finite and non-negative (a boolean or soft mask).")
    if not bool(rows.flatten(1).sum(1).gt(0).all()):
        raise ValueError("mask selects no pixel (for some example); give a non-empty region.")
    return rows
