"""Callable targets: the same maps as index targets through every method and sampling path,
the plain reference loop on models returning tuples and dicts, per-example targets, and
clear errors (the model left bit-identical) for a callable that raises or returns NaN, a map,
a Python float or integers. The task targets of captum_sscam.targets by hand and against the
reference loop on torchvision's segmentation and detection models (random weights). The
metrics with the same targets."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import sensitivity_max
from torch import Tensor, nn

from captum_sscam import GroupScoreCAM, IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam._core.targets import ExampleTarget
from captum_sscam.metrics import (
    average_drop,
    deletion_auc,
    increase_in_confidence,
    insertion_auc,
    tuple_explanation,
)
from captum_sscam.targets import (
    DetectionBox,
    EmbeddingSimilarity,
    MultiLabelClasses,
    SegmentationRegion,
    box_iou,
)
from tests.reference import reference_score_cam, replayed_noise
from tests.test_metrics_hardening import assert_unchanged, snapshot, training_model
from tests.tiny_models import SmallCNN

MODES = ["probability", "sigmoid", "logit", "channel_softmax"]
CLASSES = [0, 3]


def index_scores(score_mode: str, classes: list[int]) -> ExampleTarget:
    """A callable computing what an index target of ``classes`` scores in ``score_mode``."""

    class Scores(ExampleTarget):
        def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
            picked = torch.tensor(classes, device=examples.device)[examples]
            if score_mode == "probability":
                output = output.softmax(dim=1)
            rows = output[torch.arange(len(examples)), picked]
            return rows.sigmoid() if score_mode == "sigmoid" else rows

    return Scores()


def smoothed(**kwargs: Any) -> dict[str, Any]:
    return {"nt_samples": 4, "stdevs": 0.3, "generator": torch.Generator().manual_seed(5)} | kwargs


# Every method and sampling path, each with a callable scoring exactly what the index target
# scores: the maps (and errors) must agree.
PATHS = {
    "score-cam": (ScoreCAM, {}),
    "score-cam-baseline": (ScoreCAM, {"baselines": 0.5}),
    "ss-cam-mask": (SmoothedScoreCAM, smoothed(noise_on="mask")),
    "ss-cam-input": (SmoothedScoreCAM, smoothed(noise_on="input", baselines=0.2)),
    "ss-cam-adaptive": (SmoothedScoreCAM, smoothed(nt_samples=6, sample_allocation="adaptive")),
    "ss-cam-error": (SmoothedScoreCAM, smoothed(return_error=True)),
    "ss-cam-target-error": (
        SmoothedScoreCAM,
        smoothed(nt_samples=16, target_error=0.2, return_error=True, noise_sampling="antithetic"),
    ),
    "is-cam": (IntegratedScoreCAM, {"n_steps": 3}),
    "group-score-cam": (GroupScoreCAM, {"n_groups": 3}),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("score_mode", MODES)
def test_a_callable_gives_the_maps_of_the_index_target(path: str, score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method, kwargs = PATHS[path]

    def call(target: object) -> Any:
        fresh = {k: v for k, v in kwargs.items() if k != "generator"}
        if "generator" in kwargs:
            fresh["generator"] = torch.Generator().manual_seed(5)
        return method(model, model.layer).attribute(
            x, target=target, score_mode=score_mode, perturbations_per_eval=5, **fresh
        )

    by_index = call(CLASSES)
    by_callable = call(index_scores(score_mode, CLASSES))
    if kwargs.get("return_error"):
        scale = float(by_index[1].abs().max())
        torch.testing.assert_close(by_callable[1], by_index[1], rtol=1e-5, atol=1e-5 * scale)
        by_index, by_callable = by_index[0], by_callable[0]
    scale = float(by_index.abs().max())
    assert scale > 0  # up to rounding, relative to the map's scale (sums cancel near 0)
    torch.testing.assert_close(by_callable, by_index, rtol=1e-5, atol=1e-5 * scale)


def test_a_plain_callable_is_called_with_the_output_only() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    seen: list[tuple[int, ...]] = []

    def third_logit(output: Tensor) -> Tensor:
        seen.append(tuple(output.shape))
        return output[:, 2]

    maps = ScoreCAM(model, model.layer).attribute(x, target=third_logit, perturbations_per_eval=4)
    expected = ScoreCAM(model, model.layer).attribute(x, target=2, score_mode="logit")
    torch.testing.assert_close(maps, expected)
    # the capture forward (2 inputs), then 12 masked inputs in batches of 4
    assert seen == [(2, 5)] + [(4, 5)] * 3


def test_an_example_target_is_told_each_rows_example() -> None:
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 16, 16)
    told: list[list[int]] = []

    class Recorded(ExampleTarget):
        def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
            told.append(examples.tolist())
            return output[:, 1]

    ScoreCAM(model, model.layer).attribute(x, target=Recorded(), perturbations_per_eval=4)
    assert told[0] == [0, 1, 2]  # the capture forward
    masked = [example for batch in told[1:] for example in batch]
    assert masked == [0] * 6 + [1] * 6 + [2] * 6  # 6 channels each, example-major
    assert any(len(set(batch)) > 1 for batch in told[1:])  # a batch mixes examples


class TupleAndDict(nn.Module):
    """SmallCNN whose output is ``(logits, {"embedding": features})``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN()

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.net(x)
        return logits, {"embedding": torch.tanh(logits[:, :3] * 2)}


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_a_callable_of_a_tuple_and_dict_output_matches_the_reference_loop(score_mode: str) -> None:
    model = TupleAndDict().eval()
    x = torch.randn(2, 3, 16, 16)
    baseline = torch.rand(2, 3, 16, 16)

    def score(output: tuple[Tensor, dict[str, Tensor]]) -> Tensor:
        return output[1]["embedding"].sum(dim=1) + output[0][:, 4]

    for noise_on in ("mask", "input"):
        maps = SmoothedScoreCAM(model, model.net.layer).attribute(
            x, target=score, baselines=baseline, score_mode=score_mode, nt_samples=3,
            stdevs=0.2, noise_on=noise_on, generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
        expected = reference_score_cam(
            model, model.net.layer, x, None, score_mode, baseline, samples=3,
            noise=replayed_noise(2, 0.2, noise_on), noise_on=noise_on,
            score_of=lambda output, _n: score(output)[0],
        )  # fmt: skip
        assert expected.abs().max() > 0
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def test_a_callable_with_several_scores_gives_one_map_each() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    maps = method.attribute(x, target=lambda output: output[:, [1, 4]], score_mode="logit")
    expected = method.attribute(x, target=torch.tensor([[1, 4], [1, 4]]), score_mode="logit")
    assert maps.shape == (2, 2, 8, 8)
    torch.testing.assert_close(maps, expected)


def test_a_callable_works_through_noise_tunnel() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    tunnel = NoiseTunnel(ScoreCAM(model, model.layer))
    kwargs = {"nt_type": "smoothgrad", "nt_samples": 2, "stdevs": 0.0, "score_mode": "logit"}
    maps = tunnel.attribute(x, target=lambda output: output[:, 3], **kwargs)
    expected = tunnel.attribute(x, target=3, **kwargs)
    torch.testing.assert_close(maps, expected)


def test_an_index_target_of_a_tuple_output_says_to_pass_a_callable() -> None:
    model = TupleAndDict().eval()
    message = r"must return a Tensor .* got: tuple of 2 \(first: Tensor.*target= a"
    with pytest.raises(TypeError, match=message):
        ScoreCAM(model, model.net.layer).attribute(torch.randn(1, 3, 8, 8), target=0)


class NaNAfter(ExampleTarget):
    """Logit 1, then NaN from the ``calls``-th call on (the capture forward is call 0)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.count = calls, 0

    def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
        self.count += 1
        scores = output[:, 1]
        return scores * float("nan") if self.count > self.calls else scores


def raising(output: Tensor) -> Tensor:
    return output.logits  # type: ignore[attr-defined]


BAD = [
    # (target, kwargs, error, message)
    (raising, {}, RuntimeError, r"raised AttributeError: .* inputs \(Tensor of shape \(2, 3\)\)"),
    (lambda output: output[:, 0] * float("nan"), {}, ValueError, r"NaN scores for the inputs"),
    (lambda output: torch.zeros(2, 8, 8), {}, ValueError, r"shape \(2, 8, 8\) .* expected \(2,\)"),
    (lambda output: float(output[0, 0]), {}, TypeError, r"target returned float .* \(2,\)"),
    (lambda output: output.argmax(dim=1), {}, TypeError, r"dtype torch.int64.*floating point"),
    (lambda output: output[:1, 0], {}, ValueError, r"shape \(1,\) for a batch of 2 inputs"),
    (NaNAfter(1), {}, ValueError, r"NaN scores for some masked inputs"),
    (NaNAfter(1), {"baselines": 0.0}, ValueError, r"NaN scores for the baselines"),
]


@pytest.mark.parametrize(("target", "kwargs", "error", "message"), BAD)
def test_a_bad_callable_gets_a_clear_error_and_the_model_is_untouched(
    target: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    if isinstance(target, NaNAfter):
        target.count = 0
    model = training_model()  # BatchNorm and dropout in training mode, a hook, a frozen weight
    before = snapshot(model)
    with pytest.raises(error, match=message), pytest.warns(UserWarning, match="training mode"):
        ScoreCAM(model, model.stem).attribute(torch.randn(2, 3, 8, 8), target=target, **kwargs)
    assert_unchanged(model, before)


def test_a_raising_callable_keeps_its_error_as_the_cause() -> None:
    model = SmallCNN().eval()
    with pytest.raises(RuntimeError) as caught:
        ScoreCAM(model, model.layer).attribute(torch.randn(2, 3, 8, 8), target=raising)
    assert isinstance(caught.value.__cause__, AttributeError)


def test_a_callable_whose_later_batches_change_shape_is_refused() -> None:
    model = SmallCNN().eval()
    calls = []

    def shifting(output: Tensor) -> Tensor:
        calls.append(1)
        return output[:, :1] if len(calls) == 1 else output[:, :2]

    with pytest.raises(ValueError, match=r"shape \(3, 2\) .* expected \(3,\) or \(3, 1\)"):
        ScoreCAM(model, model.layer).attribute(
            torch.randn(2, 3, 8, 8), target=shifting, perturbations_per_eval=3
        )


def test_an_example_target_for_another_batch_is_refused() -> None:
    class ForThree(ExampleTarget):
        num_examples = 3

        def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
            return output[:, 0]

    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="target holds data for 3 examples but the inputs have 2"):
        ScoreCAM(model, model.layer).attribute(torch.randn(2, 3, 8, 8), target=ForThree())


# --- the task targets (captum_sscam.targets) ----------------------------------------------------


def test_the_task_targets_are_public() -> None:
    import captum_sscam
    from captum_sscam import targets

    for name in targets.__all__:
        assert getattr(captum_sscam, name) is getattr(targets, name)
    assert targets.ExampleTarget is ExampleTarget


def test_segmentation_region_by_hand() -> None:
    # two classes on a 2 x 3 output; class 1's softmax at each pixel is sigmoid(z_1 - z_0)
    logits = torch.tensor(
        [[[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]]]
    )
    examples = torch.tensor([0])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    probability = SegmentationRegion(1, mask=mask)(logits, examples)
    expected = torch.sigmoid(torch.tensor(1.0)) + torch.sigmoid(torch.tensor(3.0))
    expected = (expected + torch.sigmoid(torch.tensor(4.0))) / 3
    torch.testing.assert_close(probability, expected.view(1))
    logit = SegmentationRegion(1, mask=mask, score="logit")({"out": logits}, examples)
    torch.testing.assert_close(logit, torch.tensor([(1.0 + 3.0 + 4.0) / 3]))
    # the box (x0, y0, x1, y1) = (1, 0, 3, 2) holds columns 1 and 2 of both rows
    box = SegmentationRegion(1, box=(1, 0, 3, 2), score="logit")(logits, examples)
    torch.testing.assert_close(box, torch.tensor([(2.0 + 3.0 - 1.0 + 4.0) / 4]))
    whole = SegmentationRegion(1, score="logit")(logits, examples)
    torch.testing.assert_close(whole, torch.tensor([9.0 / 6]))


def test_segmentation_region_per_example() -> None:
    logits = torch.randn(3, 4, 5, 5)
    masks = torch.rand(2, 5, 5) > 0.5
    masks[:, 0, 0] = True
    target = SegmentationRegion([2, 3], mask=masks, score="logit")
    assert target.num_examples == 2
    # rows made from examples 1, 0, 1
    scores = target(logits, torch.tensor([1, 0, 1]))
    for row, example in enumerate([1, 0, 1]):
        expected = logits[row, [2, 3][example]][masks[example]].mean()
        torch.testing.assert_close(scores[row], expected)


def test_detection_box_by_hand() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    detections = [
        {  # label 3 twice: IoU 1 with score 0.2, IoU 100/200 with score 0.9 -> max(0.2, 0.45)
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0, 0, 10, 20]]),
            "labels": torch.tensor([3, 7, 3]),
            "scores": torch.tensor([0.2, 0.99, 0.9]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
         "scores": torch.zeros(0)},  # no prediction: 0
        {"boxes": torch.tensor([[20.0, 20.0, 30.0, 30.0]]), "labels": torch.tensor([3]),
         "scores": torch.tensor([0.8])},  # label 3 elsewhere: IoU 0
    ]  # fmt: skip
    scores = DetectionBox(box, label=3)(detections, torch.tensor([0, 0, 0]))
    torch.testing.assert_close(scores, torch.tensor([0.45, 0.0, 0.0]))


def test_box_iou_without_torchvision_equals_torchvision(monkeypatch) -> None:
    from torchvision.ops import box_iou as torchvision_box_iou

    boxes = torch.rand(5, 2) * 10
    boxes = torch.cat([boxes, boxes + torch.rand(5, 2) * 10 + 0.1], dim=1)
    others = torch.tensor([[1.0, 2.0, 8.0, 9.0], [20.0, 20.0, 21.0, 22.0]])
    expected = torchvision_box_iou(boxes, others)
    monkeypatch.setitem(sys.modules, "torchvision.ops", None)  # the import now fails
    torch.testing.assert_close(box_iou(boxes, others), expected)


def test_embedding_similarity_and_multi_label_classes_by_hand() -> None:
    embeddings = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    similarity = EmbeddingSimilarity(torch.tensor([0.0, 2.0]))(embeddings, torch.tensor([0, 0]))
    torch.testing.assert_close(similarity, torch.tensor([0.8, 0.0]))
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    labels = MultiLabelClasses([0, 2])(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(labels, torch.sigmoid(logits[:, 0]) + torch.sigmoid(logits[:, 2]))
    hot = MultiLabelClasses(torch.tensor([[1, 0, 0], [0, 1, 1]]))
    torch.testing.assert_close(
        hot(logits, torch.tensor([1, 0])),
        torch.stack([torch.sigmoid(logits[0, 1:]).sum(), torch.sigmoid(logits[1, 0])]),
    )


def test_multi_label_classes_map_is_the_sum_of_the_sigmoid_maps() -> None:
    # with w = a and no ReLU the map is linear in the scores: the set's map is the sum
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    both = method.attribute(x, target=MultiLabelClasses([1, 3]), relu_attributions=False)
    one = method.attribute(x, target=1, score_mode="sigmoid", relu_attributions=False)
    other = method.attribute(x, target=3, score_mode="sigmoid", relu_attributions=False)
    torch.testing.assert_close(both, one + other, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("score_mode", ["logit", "channel_softmax"])
def test_embedding_similarity_matches_the_reference_loop(score_mode: str) -> None:
    model = SmallCNN(classes=8).eval()  # its 8 outputs as an embedding
    x = torch.randn(2, 3, 16, 16)
    references = torch.randn(2, 8)
    maps = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=EmbeddingSimilarity(references), score_mode=score_mode, nt_samples=2,
        stdevs=0.2, generator=torch.Generator().manual_seed(4),
    )  # fmt: skip

    def cosine(output: Tensor, n: int) -> float:
        e, r = output[0], references[n]
        return float(e @ r / (e.norm() * r.norm()))

    expected = reference_score_cam(
        model, model.layer, x, None, score_mode, samples=2, noise=replayed_noise(4, 0.2),
        score_of=cosine,
    )  # fmt: skip
    assert expected.abs().max() > 0
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def segmentation_model() -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()


def region_mean(output: dict[str, Tensor], cls: int, box: tuple[int, int, int, int]) -> float:
    """A class's mean probability over a box, written out for the reference loop."""
    x0, y0, x1, y1 = box
    return float(output["out"][0].softmax(dim=0)[cls, y0:y1, x0:x1].mean())


@pytest.mark.parametrize("method", ["score-cam", "ss-cam-mask", "ss-cam-input", "is-cam"])
def test_segmentation_region_on_torchvision_matches_the_reference_loop(method: str) -> None:
    model = segmentation_model()
    layer = model.backbone["1"]  # 16 channels at 32 x 32
    x = torch.rand(2, 3, 64, 64)
    box = (8, 16, 40, 48)
    target = SegmentationRegion([3, 5], box=box)
    kwargs: dict[str, Any] = {}
    reference_kwargs: dict[str, Any] = {}
    if method.startswith("ss-cam"):
        placement = method.split("-")[-1]
        kwargs = {"nt_samples": 2, "stdevs": 0.3, "noise_on": placement,
                  "generator": torch.Generator().manual_seed(9)}  # fmt: skip
        reference_kwargs = {"samples": 2, "noise": replayed_noise(9, 0.3, placement),
                            "noise_on": placement}  # fmt: skip
        maps = SmoothedScoreCAM(model, layer).attribute(x, target=target, **kwargs)
    elif method == "is-cam":
        maps = IntegratedScoreCAM(model, layer).attribute(x, target=target, n_steps=2)
        reference_kwargs = {"samples": 2, "mask_scales": [0.5, 1.5]}
    else:
        maps = ScoreCAM(model, layer).attribute(x, target=target)
    expected = reference_score_cam(
        model, layer, x, None, score_of=lambda output, n: region_mean(output, [3, 5][n], box),
        **reference_kwargs,
    )  # fmt: skip
    assert maps.shape == (2, 1, 32, 32)
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(maps, expected, rtol=1e-3, atol=1e-4 * scale)


def detector() -> nn.Module:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    # random weights score every class about 1/91: keep them all (box_score_thresh=0), but
    # few proposals and detections, so that a forward stays cheap
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0,
        rpn_post_nms_top_n_test=20, box_detections_per_img=20,
    )  # fmt: skip
    return model.eval()


def best_box_score(output: list[dict[str, Tensor]], label: int, box: Tensor) -> float:
    """max over the label's predictions of score x IoU, written out for the reference loop."""
    best = 0.0
    found = output[0]
    for b, lab, s in zip(found["boxes"], found["labels"], found["scores"], strict=True):
        if int(lab) != label:
            continue
        width = (torch.minimum(b[2], box[2]) - torch.maximum(b[0], box[0])).clamp(min=0)
        height = (torch.minimum(b[3], box[3]) - torch.maximum(b[1], box[1])).clamp(min=0)
        inter = width * height
        union = (b[2] - b[0]) * (b[3] - b[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
        best = max(best, float(s * inter / union))
    return best


def test_detection_box_on_torchvision_matches_the_reference_loop() -> None:
    model = detector()
    layer = model.backbone.body["1"]  # 16 channels
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        found = model(x)[0]
    box, label = found["boxes"][0].clone(), int(found["labels"][0])
    maps = ScoreCAM(model, layer).attribute(
        x, target=DetectionBox(box, label), baselines=0.0, perturbations_per_eval=8
    )
    expected = reference_score_cam(
        model, layer, x, None, baseline=torch.zeros_like(x),
        score_of=lambda output, _n: best_box_score(output, label, box),
    )  # fmt: skip
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(maps, expected, rtol=1e-3, atol=1e-4 * scale)


def test_detection_box_through_adaptive_ss_cam_with_errors() -> None:
    # adaptive allocation, return_error and target_error on a detector's list of dicts:
    # without noise every sample scores what Score-CAM scores, and the error is 0
    model = detector()
    layer = model.backbone.body["1"]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        found = model(x)[0]
    target = DetectionBox(found["boxes"][0], int(found["labels"][0]))
    exact = ScoreCAM(model, layer).attribute(x, target=target)
    maps, errors = SmoothedScoreCAM(model, layer).attribute(
        x, target=target, nt_samples=2, stdevs=0.0, sample_allocation="adaptive",
        return_error=True, target_error=0.5,
    )  # fmt: skip
    torch.testing.assert_close(maps, exact, rtol=1e-4, atol=1e-4 * float(exact.abs().max()))
    assert float(errors.abs().max()) <= 1e-6 * float(exact.abs().max())


BAD_TASK_TARGETS = [
    (
        lambda: SegmentationRegion(1, mask=torch.ones(4, 4, dtype=torch.bool)),
        RuntimeError,
        r"mask has size \(4, 4\) but the output's per-pixel scores are \(8, 8\)",
    ),
    (lambda: SegmentationRegion(1, box=(100, 100, 120, 120)), RuntimeError, "covers no pixel"),
    (lambda: SegmentationRegion(9), RuntimeError, "class 9 is out of range .* 5 classes"),
    (lambda: DetectionBox((0, 0, 4, 4), 1), RuntimeError, "DetectionBox needs a detector's"),
    (lambda: EmbeddingSimilarity(torch.ones(3)), RuntimeError, "3 dimensions but .* have 5"),
    (lambda: MultiLabelClasses([7]), RuntimeError, "asks for class 7 .* returns 5 classes"),
]


class PixelScores(nn.Module):
    """A segmentation-like model: SmallCNN's stem and layer upsampled to 5 classes per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.classify = nn.Conv2d(6, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        net = self.net
        features = net.act(net.layer(net.stem_act(net.stem(x))))
        return nn.functional.interpolate(self.classify(features), size=x.shape[2:])


@pytest.mark.parametrize(("make", "error", "message"), BAD_TASK_TARGETS)
def test_a_task_target_that_does_not_fit_the_output_says_why(make, error, message) -> None:
    model = PixelScores().eval()
    is_pixel_target = isinstance(make(), SegmentationRegion)
    forward = model if is_pixel_target else (lambda x: model(x).mean(dim=(2, 3)))
    with pytest.raises(error, match=message):
        ScoreCAM(forward, model.net.layer).attribute(torch.randn(2, 3, 8, 8), target=make())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SegmentationRegion(1, mask=torch.ones(2, 2), box=(0, 0, 1, 1)), "not both"),
        (lambda: SegmentationRegion(1, mask=torch.zeros(2, 2)), "selects no pixel"),
        (lambda: SegmentationRegion(1, score="sigmoid"), "score must be one of"),
        (lambda: SegmentationRegion([1, 2, 3], box=torch.ones(2, 4).cumsum(1)), "lengths"),
        (lambda: DetectionBox((0, 0, 4), 1), r"box must be \(x0, y0, x1, y1\)"),
        (lambda: DetectionBox((4, 0, 0, 4), 1), "x1 > x0"),
        (lambda: DetectionBox(torch.ones(3, 4).cumsum(1), [1, 2]), "3 boxes and 2 labels"),
        (lambda: EmbeddingSimilarity(torch.zeros(4)), "finite and nonzero"),
        (lambda: MultiLabelClasses([-1]), "non-negative"),
    ],
)
def test_task_targets_check_their_arguments(make, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# --- the metrics with the same targets -----------------------------------------------------------


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
def test_a_segmentation_region_in_the_metrics_equals_the_pooled_index_target(metric: str) -> None:
    # the whole image's mean logit of class 2 is the logit of a model that pools over pixels
    model = PixelScores().eval()
    x = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 1, 4, 4)
    area = deletion_auc if metric == "deletion" else insertion_auc
    by_region = area(
        model, x, maps, target=SegmentationRegion(2, score="logit"), step=0.2, return_curves=True,
        max_examples_per_batch=3,
    )  # fmt: skip
    pooled = area(
        lambda images: model(images).mean(dim=(2, 3)), x, maps, target=2, score="logit",
        step=0.2, return_curves=True,
    )  # fmt: skip
    torch.testing.assert_close(by_region.scores, pooled.scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_region.auc, pooled.auc, rtol=1e-5, atol=1e-6)


def test_average_drop_of_a_detection_box_by_its_formula() -> None:
    model = detector()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        found = model(x)[0]
    box, label = found["boxes"][0].clone(), int(found["labels"][0])
    maps = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    drop = average_drop(model, x, maps, target=DetectionBox(box, label))
    mask = nn.functional.interpolate(maps, size=(64, 64), mode="bilinear", align_corners=False)
    mask = (mask - mask.min()) / (mask.max() - mask.min())
    with torch.no_grad():
        y = best_box_score(model(x), label, box)
        o = best_box_score(model(x * mask), label, box)
    assert y > 0
    torch.testing.assert_close(
        drop, torch.tensor([100 * max(0.0, y - o) / y]), rtol=1e-4, atol=1e-4
    )


def test_the_metrics_score_a_tuple_output_with_a_callable() -> None:
    model = TupleAndDict().eval()
    x = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 1, 4, 4)
    by_callable = increase_in_confidence(model, x, maps, target=lambda output: output[0][:, 1])
    by_index = increase_in_confidence(
        lambda images: model(images)[0], x, maps, target=1, score="logit"
    )
    torch.testing.assert_close(by_callable, by_index)
    # without a callable, the metrics' own clear error for a tuple output stands
    with pytest.raises(TypeError, match=r"must return a Tensor.*got tuple.*or pass target= a"):
        increase_in_confidence(model, x, maps, target=1)


def test_the_metrics_take_one_score_per_example() -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="one score per example, but target returned 2"):
        deletion_auc(
            model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 4, 4), target=lambda out: out[:, :2]
        )


def test_sensitivity_max_takes_a_callable_target_through_tuple_explanation() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    explain = tuple_explanation(ScoreCAM(model, model.layer).attribute)
    results = []
    for target in (lambda output: output[:, 2], 2):
        torch.manual_seed(0)
        results.append(
            sensitivity_max(explain, x, target=target, score_mode="logit", n_perturb_samples=2)
        )
    assert results[0].abs().max() > 0
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("score_mode", MODES)
def test_group_score_cam_with_a_region_target_and_one_group_per_channel_is_score_cam(
    score_mode: str,
) -> None:
    model = PixelScores().eval()
    x = torch.randn(2, 3, 8, 8)
    target = SegmentationRegion([1, 4], box=(1, 2, 6, 7))
    kwargs = {"target": target, "score_mode": score_mode, "relu_attributions": False}
    grouped = GroupScoreCAM(model, model.net.layer).attribute(x, n_groups=6, **kwargs)
    exact = ScoreCAM(model, model.net.layer).attribute(x, **kwargs)
    assert exact.abs().max() > 0
    torch.testing.assert_close(grouped, exact, rtol=1e-5, atol=1e-6)
