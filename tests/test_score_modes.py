"""The four score modes: hand-computed maps, the plain reference loop for every method, the
multi-label property of "sigmoid", which modes need an adaptive pilot, and the metrics
scoring in every mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from captum_sscam import SCORE_MODES, IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam.metrics import average_drop, deletion_auc, increase_in_confidence, insertion_auc
from tests.reference import reference_score_cam, replayed_noise
from tests.tiny_models import SmallCNN, TwoChannelSum

SIGMOID_1 = 1 / (1 + math.exp(-1))
MODES = ["probability", "sigmoid", "logit", "channel_softmax"]


def hand_input() -> Tensor:
    return torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])


def test_the_modes_are_public_in_one_order() -> None:
    assert tuple(MODES) == SCORE_MODES


# TwoChannelSum: A_0 = x, A_1 = 1 - x, logits [sum(x), 0]. On hand_input the masked inputs
# are M_0 = x (logits [1, 0]) and M_1 = x * (1 - x) = 0 (logits [0, 0]); L = a_0 x + a_1 (1 - x).
HAND = [
    # sigmoid, class 0: sigma(1) and sigma(0) = 0.5 (as the softmax of [s, 0] is sigma(s))
    ("sigmoid", 0, SIGMOID_1, 0.5),
    # sigmoid, class 1: its logit is 0 whatever the input, sigma(0) = 0.5 for both channels
    # (the probability mode gives 1 - sigma(1) and 0.5: it depends on class 0's logit)
    ("sigmoid", 1, 0.5, 0.5),
    ("probability", 1, 1 - SIGMOID_1, 0.5),
    # logit: the raw logits 1 and 0, weights w = a
    ("logit", 0, 1.0, 0.0),
    ("logit", 1, 0.0, 0.0),
]


@pytest.mark.parametrize(("score_mode", "target", "a_0", "a_1"), HAND)
def test_hand_computed_maps(score_mode: str, target: int, a_0: float, a_1: float) -> None:
    model = TwoChannelSum()
    x = hand_input()
    cam = ScoreCAM(model, model.layer).attribute(x, target=target, score_mode=score_mode)
    torch.testing.assert_close(cam, a_0 * x + a_1 * (1 - x))


def test_hand_computed_logit_mode_with_a_baseline() -> None:
    # baseline 0: logit(b) = 0, so a_0 = 1 - 0, a_1 = 0 - 0; sigmoid: a_0 = sigma(1) - 0.5
    model = TwoChannelSum()
    method = ScoreCAM(model, model.layer)
    x = hand_input()
    logit = method.attribute(x, target=0, baselines=0.0, score_mode="logit")
    torch.testing.assert_close(logit, x)
    sigmoid = method.attribute(x, target=0, baselines=0.0, score_mode="sigmoid")
    torch.testing.assert_close(sigmoid, (SIGMOID_1 - 0.5) * x)


class ScaledOthers(nn.Module):
    """SmallCNN with every logit but class 0's multiplied by ``scale``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.net = SmallCNN()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        logits = self.net(x)
        return torch.cat([logits[:, :1], self.scale * logits[:, 1:]], dim=1)


def test_a_sigmoid_map_depends_on_its_class_alone() -> None:
    # Multi-label: class 0's sigmoid map is the same whatever the other classes' logits;
    # its probability map (a softmax over all classes) is not.
    x = torch.randn(2, 3, 16, 16)
    maps = {}
    for scale in (1.0, 3.0):
        model = ScaledOthers(scale).eval()
        method = ScoreCAM(model, model.net.layer)
        maps[scale] = {
            mode: method.attribute(x, target=0, score_mode=mode)
            for mode in ("sigmoid", "probability")
        }
    torch.testing.assert_close(maps[1.0]["sigmoid"], maps[3.0]["sigmoid"])
    assert (maps[1.0]["probability"] - maps[3.0]["probability"]).abs().max() > 1e-3


@pytest.mark.parametrize("score_mode", MODES)
@pytest.mark.parametrize("with_baseline", [False, True])
def test_score_cam_matches_the_reference_loop(score_mode: str, with_baseline: bool) -> None:
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 16, 16)
    baseline = torch.rand(3, 3, 16, 16) if with_baseline else None
    classes = [0, 3, 4]
    cam = ScoreCAM(model, model.layer).attribute(
        x, target=classes, baselines=baseline, score_mode=score_mode, perturbations_per_eval=5
    )
    expected = reference_score_cam(model, model.layer, x, classes, score_mode, baseline)
    assert expected.abs().max() > 0
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("score_mode", MODES)
@pytest.mark.parametrize("noise_on", ["mask", "input"])
def test_ss_cam_matches_the_reference_loop_with_the_same_noise(
    score_mode: str, noise_on: str
) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    baseline = torch.rand(2, 3, 16, 16)
    smoothed = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=[0, 3], baselines=baseline, score_mode=score_mode, nt_samples=3, stdevs=0.3,
        noise_on=noise_on, generator=torch.Generator().manual_seed(11), perturbations_per_eval=4,
    )  # fmt: skip
    expected = reference_score_cam(
        model, model.layer, x, [0, 3], score_mode, baseline, samples=3,
        noise=replayed_noise(11, 0.3, noise_on), noise_on=noise_on,
    )  # fmt: skip
    assert expected.abs().max() > 0
    torch.testing.assert_close(smoothed, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("score_mode", MODES)
def test_is_cam_matches_the_reference_loop(score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    steps = 3
    ours = IntegratedScoreCAM(model, model.layer).attribute(
        x, target=[2, 1], score_mode=score_mode, n_steps=steps
    )
    expected = reference_score_cam(
        model, model.layer, x, [2, 1], score_mode, samples=steps,
        mask_scales=[sum(j / steps for j in range(1, s + 2)) for s in range(steps)],
    )  # fmt: skip
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("score_mode", MODES)
def test_several_classes_at_once_equal_one_call_each(score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    both = method.attribute(x, target=torch.tensor([[0, 2], [4, 1]]), score_mode=score_mode)
    for t, classes in enumerate(([0, 4], [2, 1])):
        one = method.attribute(x, target=classes, score_mode=score_mode)
        torch.testing.assert_close(both[:, t : t + 1], one, rtol=1e-5, atol=1e-7)


def count_masked_forwards(model: nn.Module, call) -> tuple[Tensor, int]:
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        result = call()
    finally:
        handle.remove()
    return result, sum(sizes[1:])  # sizes[0]: the capture forward


@pytest.mark.parametrize("score_mode", MODES)
def test_adaptive_without_noise_is_score_cam_and_spends_its_budget(score_mode: str) -> None:
    # w = a (probability, sigmoid, logit): the allocation needs no pilot, so a budget of
    # nt_samples=2 is allowed; channel-softmax spends a pilot first and needs at least 3.
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[1, 2], score_mode=score_mode)
    samples = 3 if score_mode == "channel_softmax" else 2
    maps, forwards = count_masked_forwards(
        model,
        lambda: SmoothedScoreCAM(model, model.layer).attribute(
            x, target=[1, 2], score_mode=score_mode, nt_samples=samples, stdevs=0.0,
            sample_allocation="adaptive", return_error=True,
        ),
    )  # fmt: skip
    torch.testing.assert_close(maps[0], exact, rtol=1e-5, atol=1e-6)
    assert float(maps[1].abs().max()) < 1e-6  # no noise: every sample scores the same
    channels = 6 * 2
    pilot = 2 * channels if score_mode == "channel_softmax" else 0
    assert pilot <= forwards <= samples * channels


@pytest.mark.parametrize("score_mode", ["probability", "sigmoid", "logit"])
def test_only_softmax_weights_need_a_pilot(score_mode: str) -> None:
    SmoothedScoreCAM.check_arguments(
        score_mode=score_mode, nt_samples=2, sample_allocation="adaptive"
    )
    with pytest.raises(ValueError, match="pilot"):
        SmoothedScoreCAM.check_arguments(
            score_mode="channel_softmax", nt_samples=2, sample_allocation="adaptive"
        )


def test_an_unknown_mode_lists_the_four() -> None:
    with pytest.raises(ValueError, match=r"score_mode must be one of .*'sigmoid', 'logit'"):
        ScoreCAM.check_arguments(score_mode="softmax")


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
def test_the_metrics_score_in_every_mode(metric: str) -> None:
    # the sigmoid curve is the sigmoid of the logit curve; channel_softmax scores the logit
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 1, 4, 4)
    area = deletion_auc if metric == "deletion" else insertion_auc
    curves = {
        mode: area(model, x, maps, target=[1, 3], score=mode, step=0.25, return_curves=True)
        for mode in MODES
    }
    logit = curves["logit"].scores
    torch.testing.assert_close(curves["sigmoid"].scores, logit.sigmoid())
    torch.testing.assert_close(curves["channel_softmax"].scores, logit)
    assert (curves["probability"].scores - logit.sigmoid()).abs().max() > 1e-3
    for result in curves.values():
        torch.testing.assert_close(
            result.auc, torch.trapezoid(result.scores, result.fractions, dim=1)
        )


def test_average_drop_in_sigmoid_mode_by_its_formula() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 1, 8, 8)
    drop = average_drop(model, x, maps, target=[0, 2], score="sigmoid")
    scaled = (maps - maps.amin((2, 3), keepdim=True)) / (
        maps.amax((2, 3), keepdim=True) - maps.amin((2, 3), keepdim=True)
    )
    with torch.no_grad():
        y = model(x)[[0, 1], [0, 2]].sigmoid()
        o = model(x * scaled)[[0, 1], [0, 2]].sigmoid()
    torch.testing.assert_close(drop, 100 * (y - o).clamp(min=0) / y)
    rise = increase_in_confidence(model, x, maps, target=[0, 2], score="sigmoid")
    torch.testing.assert_close(rise, 100 * (o > y).float())
