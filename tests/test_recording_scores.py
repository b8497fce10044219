"""The debugging hook ``captum_sscam.attr._recording.recording_scores``: the per-sample scores
it records are the ones the call averages (hand-computed on TwoChannelSum; on SmallCNN the map
and the standard error rebuilt from them, with the formula of docs/math.md, equal the call's)."""

from __future__ import annotations

import math

import torch

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam.attr._recording import recording_scores
from tests.reference import layer_output
from tests.tiny_models import SmallCNN, TwoChannelSum

SIGMOID_1 = 1 / (1 + math.exp(-1))


def test_score_cam_records_each_channels_hand_computed_score() -> None:
    # H_0 = x -> softmax([1, 0])_0 = sigmoid(1); H_1 = 1 - x = 0 on the masked pixel -> 0.5;
    # with baseline 0 (score 0.5) both lose 0.5.
    model = TwoChannelSum()
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    with recording_scores() as record:
        ScoreCAM(model, model.layer).attribute(x, target=0)
        ScoreCAM(model, model.layer).attribute(x, target=0, baselines=0.0)
    plain, with_baseline = record.rounds
    for scored in record.rounds:
        assert scored.example.tolist() == [0, 0]
        assert scored.channel.tolist() == [0, 1]
        assert scored.sample.tolist() == [0, 0]
    expected = torch.tensor([[SIGMOID_1], [0.5]], dtype=torch.float64)
    torch.testing.assert_close(plain.scores, expected)
    torch.testing.assert_close(with_baseline.scores, expected - 0.5)


def test_nothing_is_recorded_outside_the_block_and_maps_do_not_change() -> None:
    model = TwoChannelSum()
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    method = ScoreCAM(model, model.layer)
    with recording_scores() as record:
        inside = method.attribute(x, target=0)
    outside = method.attribute(x, target=0)
    assert len(record.rounds) == 1
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)


def test_sscam_map_and_standard_error_follow_from_the_recorded_samples() -> None:
    # L = sum_k a_k A_k with a_k the mean of channel k's samples, and
    # SE^2 = sum_k (s_k^2 / n_k) A_k^2 (uniform allocation, probability mode)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    samples = 5
    with recording_scores() as record:
        saliency, error = SmoothedScoreCAM(model, model.layer).attribute(
            x,
            target=[1, 3],
            nt_samples=samples,
            perturbations_per_eval=7,
            relu_attributions=False,
            return_error=True,
            generator=torch.Generator().manual_seed(0),
        )
    scored = record.joined()
    activation = layer_output(model, model.layer, x).double()  # (2, K, 8, 8)
    rebuilt_map = torch.zeros(2, 8, 8, dtype=torch.float64)
    rebuilt_variance = torch.zeros_like(rebuilt_map)
    pairs = sorted(set(zip(scored.example.tolist(), scored.channel.tolist(), strict=True)))
    assert len(pairs) >= 6  # both examples, several channels each
    for example, channel in pairs:
        rows = (scored.example == example) & (scored.channel == channel)
        assert sorted(scored.sample[rows].tolist()) == list(range(samples))
        values = scored.scores[rows, 0]
        rebuilt_map[example] += values.mean() * activation[example, channel]
        rebuilt_variance[example] += values.var() / samples * activation[example, channel] ** 2
    torch.testing.assert_close(saliency[:, 0].double(), rebuilt_map, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(error[:, 0].double(), rebuilt_variance.sqrt(), rtol=1e-5, atol=1e-6)


def test_antithetic_pairs_are_recorded_once_each_at_their_even_sample() -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with recording_scores() as record:
        SmoothedScoreCAM(model, model.layer).attribute(
            x, target=0, nt_samples=4, noise_sampling="antithetic"
        )
    scored = record.joined()
    for channel in scored.channel.unique().tolist():
        assert sorted(scored.sample[scored.channel == channel].tolist()) == [0, 2]
