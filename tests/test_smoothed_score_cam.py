"""SmoothedScoreCAM: equals Score-CAM without noise, the reference loop with the same
noise, the expectation with much noise, and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from tests.reference import layer_output, reference_score_cam, replayed_noise
from tests.tiny_models import LinearHead, SmallCNN


@pytest.mark.parametrize("noise_on", ["mask", "input"])
@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_zero_noise_equals_score_cam(noise_on: str, score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[1, 2], score_mode=score_mode)
    smoothed = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=[1, 2], score_mode=score_mode, stdevs=0, nt_samples=3, noise_on=noise_on
    )
    # equal up to float32 rounding (the batches hold different items)
    torch.testing.assert_close(smoothed, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise_on", ["mask", "input"])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_matches_reference_loop_with_the_same_noise(noise_on: str, with_baseline: bool) -> None:
    # Each work item's noise depends only on the call's seed and the item, so the
    # reference loop replays the same draws (and the batch size does not matter).
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    baseline = torch.rand(2, 3, 16, 16) if with_baseline else None
    generator = torch.Generator().manual_seed(7)
    smoothed = SmoothedScoreCAM(model, model.layer).attribute(
        x,
        target=[0, 3],
        baselines=baseline,
        nt_samples=4,
        stdevs=0.3,
        noise_on=noise_on,
        generator=generator,
        perturbations_per_eval=3,
    )
    expected = reference_score_cam(
        model,
        model.layer,
        x,
        [0, 3],
        baseline=baseline,
        samples=4,
        noise=replayed_noise(7, 0.3, noise_on),
        noise_on=noise_on,
    )
    assert expected.abs().max() > 0
    torch.testing.assert_close(smoothed, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("noise_on", ["mask", "input"])
def test_noisy_channel_scores_converge_to_the_expectation(noise_on: str) -> None:
    # LinearHead's logit is linear in the input, so with zero-mean noise the expected
    # logit of every noisy masked input is the noiseless one: in channel-softmax mode
    # SS-CAM's mean score a_k estimates Score-CAM's a_k. Each a_k is a mean of
    # nt_samples draws with standard error sigma * ||w * x|| / sqrt(nt_samples)
    # (mask noise) or sigma * ||w|| / sqrt(nt_samples) (input noise).
    model = LinearHead().eval()
    x = torch.randn(1, 3, 8, 8)
    target, sigma, samples = 1, 0.5, 4000
    scores: dict[str, torch.Tensor] = {}

    def capture_weights(method: ScoreCAM, **kwargs: object) -> torch.Tensor:
        # recover a_k from the map: A is (1, 4, 4, 4) and weights = softmax(a)
        cam = method.attribute(
            x, target=target, score_mode="channel_softmax", relu_attributions=False, **kwargs
        )
        activations = layer_output(model, model.layer, x)[0].flatten(1)  # (4, 16)
        weights = torch.linalg.lstsq(activations.T.double(), cam.flatten().double()).solution
        return torch.log(weights)  # log softmax(a) = a - logsumexp(a)

    scores["exact"] = capture_weights(ScoreCAM(model, model.layer))
    scores["noisy"] = capture_weights(
        SmoothedScoreCAM(model, model.layer),
        nt_samples=samples,
        stdevs=sigma,
        noise_on=noise_on,
        generator=torch.Generator().manual_seed(0),
        perturbations_per_eval=1000,
    )
    w = model.head.weight.detach()[target].view(1, 3, 8, 8)
    spread = (w * x).norm() if noise_on == "mask" else w.norm()
    standard_error = float(sigma * spread / np.sqrt(samples))
    # compare a_k - mean(a): the logsumexp offset cancels
    exact = scores["exact"] - scores["exact"].mean()
    noisy = scores["noisy"] - scores["noisy"].mean()
    difference = (noisy - exact).abs().max().item()
    assert difference < 5 * standard_error, (difference, standard_error)
    # and the noise really was applied: a tiny sample differs from the exact scores
    few = capture_weights(
        SmoothedScoreCAM(model, model.layer),
        nt_samples=2,
        stdevs=sigma,
        noise_on=noise_on,
        generator=torch.Generator().manual_seed(0),
    )
    assert ((few - few.mean()) - exact).abs().max().item() > standard_error


def test_same_generator_seed_gives_the_same_map() -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    method = SmoothedScoreCAM(model, model.layer)

    def run(seed: int) -> torch.Tensor:
        return method.attribute(
            x, target=2, nt_samples=5, generator=torch.Generator().manual_seed(seed)
        )

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.equal(run(3), run(4))


def test_global_seed_gives_the_same_map() -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    method = SmoothedScoreCAM(model, model.layer)
    torch.manual_seed(11)
    first = method.attribute(x, target=2, nt_samples=5)
    torch.manual_seed(11)
    second = method.attribute(x, target=2, nt_samples=5)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_stdevs_accepts_any_real_number() -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    method = SmoothedScoreCAM(model, model.layer)
    maps = [
        method.attribute(
            x, target=1, nt_samples=3, stdevs=stdev, generator=torch.Generator().manual_seed(0)
        )
        for stdev in (1, 1.0, np.float32(1.0), np.int64(1), torch.tensor(1.0))
    ]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0])


def test_forward_count_is_samples_times_varying_channels() -> None:
    model = SmallCNN(channels=6).eval()
    with torch.no_grad():
        model.layer.bias[[0, 5]] = -1e3  # two dead channels: constant after the ReLU
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape[0]))
    SmoothedScoreCAM(model, model.act).attribute(
        torch.randn(2, 3, 16, 16), target=0, nt_samples=5, perturbations_per_eval=7
    )
    # one capture forward of 2 examples, then 2 examples x 4 channels x 5 samples in 7s
    assert seen[0] == 2
    assert sum(seen[1:]) == 2 * 4 * 5 and max(seen[1:]) == 7


def test_nt_samples_batch_size_sets_the_forward_batch() -> None:
    model = SmallCNN().eval()
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape[0]))
    SmoothedScoreCAM(model, model.layer).attribute(
        torch.randn(1, 3, 16, 16), target=0, nt_samples=4, nt_samples_batch_size=5
    )
    assert max(seen[1:]) == 5
    with pytest.raises(ValueError, match="give only one"):
        SmoothedScoreCAM(model, model.layer).attribute(
            torch.randn(1, 3, 16, 16), nt_samples_batch_size=5, perturbations_per_eval=6, target=0
        )


def test_get_name() -> None:
    assert SmoothedScoreCAM.get_name() == "SS-CAM"
