"""IntegratedScoreCAM (IS-CAM): its coefficients, Score-CAM at one step, the reference loop
with scaled masks (torchcam parity: test_peers.py)."""

from __future__ import annotations

import pytest
import torch

from captum_sscam import IntegratedScoreCAM, ScoreCAM
from captum_sscam.attr._perturbations import integration_coefficients
from tests.reference import reference_score_cam
from tests.tiny_models import SmallCNN


def test_coefficients_are_cumulative_as_in_algorithm_1() -> None:
    # c_s = sum_{j<=s} j / m: for m = 4, 1/4, 3/4, 6/4, 10/4; c_m = (m + 1) / 2
    assert integration_coefficients(4) == pytest.approx((0.25, 0.75, 1.5, 2.5))
    assert integration_coefficients(10)[-1] == pytest.approx(5.5)
    assert integration_coefficients(1) == (1.0,)


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_one_step_is_score_cam(score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[1, 4], score_mode=score_mode)
    integrated = IntegratedScoreCAM(model, model.layer).attribute(
        x, target=[1, 4], score_mode=score_mode, n_steps=1
    )
    torch.testing.assert_close(integrated, exact)


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_matches_reference_loop_with_scaled_masks(score_mode: str, with_baseline: bool) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    baseline = torch.rand(2, 3, 16, 16) if with_baseline else None
    steps = 5
    ours = IntegratedScoreCAM(model, model.layer).attribute(
        x,
        target=[0, 3],
        baselines=baseline,
        score_mode=score_mode,
        n_steps=steps,
        perturbations_per_eval=7,
    )
    expected = reference_score_cam(
        model,
        model.layer,
        x,
        [0, 3],
        score_mode=score_mode,
        baseline=baseline,
        samples=steps,
        mask_scales=[sum(j / steps for j in range(1, s + 2)) for s in range(steps)],
    )
    assert expected.abs().max() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    score_cam = ScoreCAM(model, model.layer).attribute(
        x, target=[0, 3], baselines=baseline, score_mode=score_mode
    )
    assert (ours - score_cam).abs().max() > 1e-4  # the integration changed the maps


@pytest.mark.parametrize("n_steps", [0, -1, 2.5, True])
def test_bad_n_steps_is_refused(n_steps: object) -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        IntegratedScoreCAM(model, model.layer).attribute(
            torch.randn(1, 3, 8, 8), target=0, n_steps=n_steps
        )
