"""SS-CAM's sampling: Neyman allocation by hand, adaptive sampling within its budget, exact
without noise, unbiased, and less spread than uniform at an equal budget; standard errors that
match the spread over seeds; target_error; seeded maps independent of batching at 299 px;
progress bars by default on long calls; clear errors for bad settings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam.attr._sampling import ChannelStats, neyman_counts, shrunk_variances
from tests.tiny_models import SmallCNN


def test_neyman_counts_are_proportional_to_the_weights_with_one_each() -> None:
    # example 0: weights 1 and 3, 10 units -> 1 + floor([1/4, 3/4] * 8) = [3, 7]
    # example 1: all-zero weights share uniformly: 1 + floor([1/3] * 3 * (6 - 3)) = 2 each
    weights = torch.tensor([1.0, 3.0, 0.0, 0.0, 0.0])
    example = torch.tensor([0, 0, 1, 1, 1])
    counts = neyman_counts(weights, example, torch.tensor([10, 6]), num_examples=2)
    assert counts.tolist() == [3, 7, 2, 2, 2]
    # weights 1 and 2, 6 units: 4 to share -> [4/3, 8/3] -> floors [1, 2] and one unit
    # left, to the larger remainder (2/3): [1 + 1, 1 + 3]; every unit is spent
    counts = neyman_counts(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), torch.tensor([6]), 1)
    assert counts.tolist() == [2, 4]


def test_shrunk_variances_by_hand() -> None:
    # two pairs of one example: samples [0, 2] (variance 2) and [1, 1, 1, 1] (variance 0);
    # pooled = (2 * 1 + 0 * 3) / 4 = 0.5; shrunk = (dof * own + 4 * pooled) / (dof + 4)
    stats = ChannelStats.empty(2, 1, torch.device("cpu"))
    scores = torch.tensor([[0.0], [2.0], [1.0], [1.0], [1.0], [1.0]])
    stats.add(torch.tensor([0, 0, 1, 1, 1, 1]), scores)
    shrunk = shrunk_variances(stats, torch.tensor([0, 0]), num_examples=1)
    assert shrunk[:, 0].tolist() == pytest.approx([(1 * 2 + 4 * 0.5) / 5, (3 * 0 + 4 * 0.5) / 7])


class UnevenChannels(nn.Module):
    """A CNN whose layer's channels differ in scale by 100x, so their effect on the map
    (||A_k|| times the score's spread) differs a lot: Neyman allocation has room to help."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.layer = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            scales = torch.logspace(-1, 1, 8).view(8, 1, 1, 1)
            self.layer.weight.mul_(scales)
        self.head = nn.Linear(3 * 16 * 16, 4)

    def forward(self, x: Tensor) -> Tensor:
        features = self.layer(torch.relu(self.stem(x)))
        return self.head(torch.tanh(x).flatten(1)) + 0 * features.sum()


def count_forwards(model: nn.Module, call) -> tuple[Tensor, int]:
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        result = call()
    finally:
        handle.remove()
    return result, sum(sizes[1:])  # sizes[0]: the capture forward


def test_adaptive_stays_within_its_budget_and_is_exact_without_noise() -> None:
    model = UnevenChannels().eval()
    x = torch.randn(2, 3, 16, 16)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[1, 2])
    method = SmoothedScoreCAM(model, model.layer)
    for antithetic in (False, True):
        maps, forwards = count_forwards(
            model,
            lambda antithetic=antithetic: method.attribute(
                x, target=[1, 2], nt_samples=10, stdevs=0.0, sample_allocation="adaptive",
                noise_sampling="antithetic" if antithetic else "iid",
            ),
        )  # fmt: skip
        assert forwards <= 10 * 8 * 2
        assert forwards >= 0.8 * 10 * 8 * 2  # the budget is used, not wasted
        torch.testing.assert_close(maps, exact, rtol=1e-5, atol=1e-6)


class TwoHalves(nn.Module):
    """A layer with two fixed channels: 1 on the left half, 3 on the right half of a
    4 x 4 map (``||A_1|| = 3 ||A_0||``); the output depends on the input."""

    def __init__(self) -> None:
        super().__init__()
        pattern = torch.zeros(2, 4, 4)
        pattern[0, :, :2] = 1.0
        pattern[1, :, 2:] = 3.0
        self.register_buffer("pattern", pattern)
        self.layer = nn.Identity()
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        self.layer(self.pattern.expand(x.shape[0], -1, -1, -1) + 0 * x[:, :1])
        return self.head(x.flatten(1))


def test_adaptive_shares_the_budget_in_proportion_to_the_activation_norms() -> None:
    # 2 channels, nt_samples=9: 18 samples; one each, the other 16 shared 1 : 3
    # -> 1 + 16 / 4 = 5 for the left channel, 1 + 16 * 3 / 4 = 13 for the right
    model = TwoHalves().eval()
    seen: list[Tensor] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    SmoothedScoreCAM(model, model.layer).attribute(
        torch.ones(1, 3, 4, 4), target=0, nt_samples=9, stdevs=0.0,
        sample_allocation="adaptive", show_progress=False,
    )  # fmt: skip
    masked = torch.cat(seen[1:])  # seen[0]: the capture forward
    left = int((masked[:, :, :, :2].abs().sum(dim=(1, 2, 3)) > 0).sum())
    right = int((masked[:, :, :, 2:].abs().sum(dim=(1, 2, 3)) > 0).sum())
    assert (left, right, len(masked)) == (5, 13, 18)


def test_adaptive_draws_the_first_samples_a_uniform_call_draws() -> None:
    # per-item seeding: channel k's samples are samples 0 .. n_k - 1 of a uniform call
    model = TwoHalves().eval()
    x = torch.rand(1, 3, 4, 4)

    def masked_inputs(**kwargs: object) -> Tensor:
        seen: list[Tensor] = []
        handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            SmoothedScoreCAM(model, model.layer).attribute(
                x, target=0, stdevs=0.3, generator=torch.Generator().manual_seed(3),
                show_progress=False, **kwargs,
            )  # fmt: skip
        finally:
            handle.remove()
        return torch.cat(seen[1:])

    adaptive = masked_inputs(nt_samples=9, sample_allocation="adaptive")  # 5 left, 13 right
    uniform = masked_inputs(nt_samples=13)  # 13 left, then 13 right
    torch.testing.assert_close(adaptive, torch.cat([uniform[:5], uniform[13:]]))


def spread(maps: list[Tensor]) -> float:
    """Root mean squared deviation of maps from their mean: Monte-Carlo error."""
    stacked = torch.stack(maps)
    return float((stacked - stacked.mean(0)).square().sum(dim=(1, 2, 3, 4)).mean().sqrt())


def seeded_maps(
    model: nn.Module, x: Tensor, seeds: range, score_mode: str = "channel_softmax", **kwargs: object
) -> list[Tensor]:
    method = SmoothedScoreCAM(model, model.layer)
    return [
        method.attribute(
            x, target=1, stdevs=0.5, relu_attributions=False, score_mode=score_mode,
            generator=torch.Generator().manual_seed(seed), **kwargs,
        )
        for seed in seeds
    ]  # fmt: skip


def test_adaptive_is_unbiased_and_less_spread_than_uniform_at_an_equal_budget() -> None:
    model = UnevenChannels().eval()
    x = torch.randn(1, 3, 16, 16)
    seeds = range(24)
    uniform = seeded_maps(model, x, seeds, "probability", nt_samples=16)
    adaptive = seeded_maps(
        model, x, seeds, "probability", nt_samples=16, sample_allocation="adaptive"
    )
    # measured 0.68 on this model (channel norms 100x apart)
    assert spread(adaptive) < 0.85 * spread(uniform), (spread(adaptive), spread(uniform))
    # both estimate the same map: their means differ by no more than their standard errors
    difference = (torch.stack(adaptive).mean(0) - torch.stack(uniform).mean(0)).norm()
    standard_error = np.hypot(spread(adaptive), spread(uniform)) / np.sqrt(len(seeds))
    assert float(difference) < 4 * standard_error


def test_the_returned_standard_error_matches_the_spread_over_seeds() -> None:
    model = UnevenChannels().eval()
    x = torch.randn(1, 3, 16, 16)
    for score_mode in ("probability", "channel_softmax"):
        for allocation in ("uniform", "adaptive"):
            maps = seeded_maps(
                model, x, range(24), score_mode, nt_samples=12, sample_allocation=allocation
            )
            _, error = SmoothedScoreCAM(model, model.layer).attribute(
                x, target=1, stdevs=0.5, relu_attributions=False, score_mode=score_mode,
                nt_samples=12, sample_allocation=allocation, return_error=True,
                generator=torch.Generator().manual_seed(99),
            )  # fmt: skip
            estimated = float(error.norm())
            assert 0.6 * spread(maps) < estimated < 1.6 * spread(maps), (
                score_mode, allocation, estimated, spread(maps),
            )  # fmt: skip


def test_target_error_stops_early_when_reached_and_spends_the_budget_when_not() -> None:
    model = UnevenChannels().eval()
    x = torch.randn(1, 3, 16, 16)
    method = SmoothedScoreCAM(model, model.layer)
    for allocation in ("uniform", "adaptive"):

        def call(target_error: float, allocation: str = allocation) -> tuple[Tensor, Tensor]:
            return method.attribute(
                x, target=1, stdevs=0.2, nt_samples=32, target_error=target_error,
                sample_allocation=allocation, return_error=True,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip

        _, loose = count_forwards(model, lambda: call(0.5))
        assert loose <= 32 * 8 // 4  # stopped after the first or second round
        _, tight = count_forwards(model, lambda: call(1e-9))
        assert 0.8 * 32 * 8 <= tight <= 32 * 8


def test_seeded_maps_do_not_depend_on_batching_at_299_px() -> None:
    # Each work item's noise depends on the seed and the item only; what remains between
    # batch sizes is float rounding in the forwards, far below a change of seed.
    model = SmallCNN(channels=4).eval()
    x = torch.randn(1, 3, 299, 299)
    method = SmoothedScoreCAM(model, model.layer)
    for noise_on in ("mask", "input"):
        for allocation in ("uniform", "adaptive"):

            def run(batch: int, seed: int = 5, noise_on=noise_on, allocation=allocation) -> Tensor:
                return method.attribute(
                    x, target=1, nt_samples=4, noise_on=noise_on, sample_allocation=allocation,
                    perturbations_per_eval=batch, generator=torch.Generator().manual_seed(seed),
                    channels_last=False,
                )  # fmt: skip

            first = run(1)
            other_seed = float((run(1, seed=6) - first).abs().max())
            for batch in (3, 16):
                rounding = float((run(batch) - first).abs().max())
                assert rounding < 1e-5 * float(first.abs().max())
                assert rounding < 1e-3 * other_seed


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        (ScoreCAM, {}),
        (IntegratedScoreCAM, {"n_steps": 3}),
        (SmoothedScoreCAM, {"nt_samples": 3, "noise_on": "mask"}),
        (SmoothedScoreCAM, {"nt_samples": 3, "noise_on": "input"}),
        (SmoothedScoreCAM, {"nt_samples": 6, "sample_allocation": "adaptive"}),
    ],
)
def test_masked_inputs_are_bit_identical_whatever_the_batch(method, kwargs) -> None:
    # What the docstrings claim: "up to float rounding". The masked inputs (and their seeded
    # noise) are the same bit for bit at every perturbations_per_eval; only the model's
    # forwards may round differently at another batch size.
    model = UnevenChannels().eval()
    x = torch.randn(2, 3, 16, 16)

    def call(batch: int) -> tuple[Tensor, Tensor]:
        seen: list[Tensor] = []
        handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            extra = {} if method is not SmoothedScoreCAM else {"generator": seeded(3)}
            maps = method(model, model.layer).attribute(
                x, target=[1, 2], perturbations_per_eval=batch, channels_last=False,
                **kwargs, **extra,
            )  # fmt: skip
        finally:
            handle.remove()
        return maps, torch.cat(seen[1:])  # seen[0]: the capture forward

    maps, masked = call(1)
    for batch in (3, 5, 7):
        other_maps, other_masked = call(batch)
        assert torch.equal(other_masked, masked)
        scale = float(maps.abs().max())
        torch.testing.assert_close(other_maps, maps, rtol=1e-5, atol=1e-6 * scale)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a_progress_bar_shows_by_default_on_long_calls_only(capsys) -> None:
    model = SmallCNN(channels=8).eval()
    x = torch.randn(1, 3, 8, 8)
    method = SmoothedScoreCAM(model, model.layer)
    method.attribute(x, target=0, nt_samples=2)  # 16 forwards
    assert "SS-CAM" not in capsys.readouterr().err
    method.attribute(x, target=0, nt_samples=130, perturbations_per_eval=256)  # 1040 forwards
    assert "SS-CAM" in capsys.readouterr().err
    method.attribute(x, target=0, nt_samples=130, show_progress=False)
    assert "SS-CAM" not in capsys.readouterr().err


def test_importing_the_package_warns_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import captum_sscam, captum_sscam.metrics"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sample_allocation": "neyman"}, ValueError, "sample_allocation must be one of"),
        ({"target_error": 0}, ValueError, "target_error must be None or a finite number > 0"),
        ({"target_error": float("nan")}, ValueError, "finite number > 0"),
        ({"target_error": True}, ValueError, "finite number > 0"),
        ({"return_error": "yes"}, TypeError, "return_error must be True or False"),
        ({"show_progress": "auto"}, TypeError, "show_progress must be True, False or None"),
        ({"autocast_dtype": "fast"}, ValueError, "autocast_dtype must be"),
        (
            {"nt_samples": 2, "sample_allocation": "adaptive", "score_mode": "channel_softmax"},
            ValueError,
            "spends a pilot of 2 samples per channel and at least 1 more, so nt_samples must "
            "be at least 3; got 2",
        ),
        (
            {
                "nt_samples": 4,
                "sample_allocation": "adaptive",
                "noise_sampling": "antithetic",
                "score_mode": "channel_softmax",
            },
            ValueError,
            "at least 6; got 4",
        ),
        ({"nt_samples": 1, "return_error": True}, ValueError, "at least 2 samples"),
    ],
)
def test_bad_sampling_settings_are_refused(kwargs, error, message) -> None:
    model = SmallCNN().eval()
    with pytest.raises(error, match=message):
        SmoothedScoreCAM(model, model.layer).attribute(torch.randn(1, 3, 8, 8), target=0, **kwargs)
