"""The speed options: several targets per pass, channel selection, antithetic noise,
mixed precision and channels-last, each against an independent expectation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from tests.reference import layer_output, reference_score_cam, replayed_noise
from tests.tiny_models import LinearHead, SmallCNN


def masked_forward_sizes(model: torch.nn.Module) -> list[int]:
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_several_targets_match_one_target_each(score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    targets = torch.tensor([[0, 3, 4], [2, 2, 1]])
    maps = ScoreCAM(model, model.layer).attribute(x, target=targets, score_mode=score_mode)
    assert maps.shape == (2, 3, 8, 8)
    for t in range(3):
        expected = reference_score_cam(model, model.layer, x, targets[:, t].tolist(), score_mode)
        torch.testing.assert_close(maps[:, t : t + 1], expected, rtol=1e-4, atol=1e-6)


def test_several_targets_cost_no_more_forwards() -> None:
    model = SmallCNN(channels=6).eval()
    x = torch.randn(1, 3, 16, 16)
    sizes = masked_forward_sizes(model)
    method = SmoothedScoreCAM(model, model.layer)
    method.attribute(x, target=2, nt_samples=3, perturbations_per_eval=4)
    one_target = list(sizes)
    sizes.clear()
    method.attribute(
        x, target=torch.tensor([[0, 1, 2, 3, 4]]), nt_samples=3, perturbations_per_eval=4
    )
    assert sizes == one_target
    k_prime = int((layer_output(model, model.layer, x).flatten(2).var(2) > 0).sum())
    assert sum(one_target) == 1 + 3 * k_prime  # capture forward + N x K' masked inputs


def test_bad_target_matrix_is_refused() -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="one class per example"):
        ScoreCAM(model, model.layer).attribute(
            torch.randn(2, 3, 16, 16), target=torch.tensor([[0, 1, 2]])
        )


def plain_top_k_map(
    model: SmallCNN, x: torch.Tensor, cls: int, k: int, energy: bool
) -> torch.Tensor:
    """Probability-mode Score-CAM summed over the k channels ranked first, one by one."""
    activations = layer_output(model, model.act, x)[0]
    ranking = [
        (float((a**2).sum()) if energy else float(a.var(unbiased=False)), index)
        for index, a in enumerate(activations)
        if float(a.max()) != float(a.min())
    ]
    chosen = [index for _, index in sorted(ranking, reverse=True)[:k]]
    cam = torch.zeros(activations.shape[1:])
    for index in chosen:
        a_k = activations[index]
        up = F.interpolate(a_k[None, None], size=x.shape[-2:], mode="bilinear")[0, 0]
        h_k = (up - up.min()) / (up.max() - up.min())
        with torch.no_grad():
            cam += model(x * h_k).softmax(1)[0, cls] * a_k
    return F.relu(cam)[None, None]


@pytest.mark.parametrize("criterion", ["variance", "energy"])
def test_top_k_channels_scores_the_highest_ranked_channels(criterion: str) -> None:
    model = SmallCNN(channels=8).eval()
    x = torch.randn(1, 3, 16, 16)
    sizes = masked_forward_sizes(model)
    cam = ScoreCAM(model, model.act).attribute(
        x, target=2, top_k_channels=3, channel_criterion=criterion
    )
    assert sum(sizes) == 1 + 3
    expected = plain_top_k_map(model, x, 2, 3, energy=criterion == "energy")
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)


def test_top_k_at_least_k_prime_is_exact() -> None:
    model = SmallCNN(channels=6).eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    exact = method.attribute(x, target=[1, 3])
    torch.testing.assert_close(method.attribute(x, target=[1, 3], top_k_channels=6), exact)
    torch.testing.assert_close(method.attribute(x, target=[1, 3], top_k_channels=50), exact)


def test_antithetic_noise_pairs_each_draw_with_its_negation() -> None:
    noise = replayed_noise(1, 2.0, antithetic=True)
    draws = torch.stack([noise((5, 5), 0, 3, sample) for sample in range(6)])
    torch.testing.assert_close(draws[1::2], -draws[0::2])
    assert 1.5 < float(draws.std()) < 2.5
    other_pairs = torch.stack([draws[0], draws[2], draws[4]]).flatten(1)
    assert float(torch.corrcoef(other_pairs).triu(1).abs().max()) < 0.5  # fresh draws


@pytest.mark.parametrize("noise_on", ["mask", "input"])
@pytest.mark.parametrize("batch", [3, 4, 64])
def test_antithetic_noise_cancels_exactly_for_a_linear_score(noise_on: str, batch: int) -> None:
    # LinearHead's logits are linear in the input, so logit(X * (H + e)) + logit(X * (H - e))
    # = 2 logit(X * H): with antithetic pairs SS-CAM equals Score-CAM for any noise, also
    # when the batch size is odd (pairs must not be split across batches).
    model = LinearHead().eval()
    x = torch.randn(2, 3, 8, 8)
    exact = ScoreCAM(model, model.layer).attribute(x, target=[0, 2], score_mode="channel_softmax")
    smoothed = SmoothedScoreCAM(model, model.layer).attribute(
        x,
        target=[0, 2],
        score_mode="channel_softmax",
        nt_samples=6,
        stdevs=3.0,
        noise_on=noise_on,
        noise_sampling="antithetic",
        perturbations_per_eval=batch,
    )
    torch.testing.assert_close(smoothed, exact, rtol=1e-4, atol=1e-5)
    iid = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=[0, 2], score_mode="channel_softmax", nt_samples=6, stdevs=3.0
    )
    assert (iid - exact).abs().max() > 1e-3  # the iid estimate is noisy; antithetic is not


def test_antithetic_needs_even_samples() -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="even"):
        SmoothedScoreCAM(model, model.layer).attribute(
            torch.randn(1, 3, 16, 16), target=0, nt_samples=5, noise_sampling="antithetic"
        )


def test_channels_last_matches_contiguous() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    torch.testing.assert_close(
        method.attribute(x, target=[0, 4], channels_last=True),
        method.attribute(x, target=[0, 4]),
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_bf16_autocast_stays_close_to_fp32(score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    fp32 = method.attribute(x, target=[1, 3], score_mode=score_mode)
    bf16 = method.attribute(x, target=[1, 3], score_mode=score_mode, autocast_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # it did run in bf16
    correlation = torch.corrcoef(torch.stack([bf16.flatten(), fp32.flatten()]))[0, 1]
    assert correlation > 0.99
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05 * float(fp32.abs().max()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"autocast_dtype": torch.int8}, "autocast_dtype"),
        ({"top_k_channels": 0}, "top_k_channels"),
        ({"channel_criterion": "norm"}, "channel_criterion"),
    ],
)
def test_bad_speed_options_are_refused(kwargs: dict, message: str) -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match=message):
        ScoreCAM(model, model.layer).attribute(torch.randn(1, 3, 16, 16), target=0, **kwargs)


def test_bad_noise_sampling_is_refused() -> None:
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="noise_sampling"):
        SmoothedScoreCAM(model, model.layer).attribute(
            torch.randn(1, 3, 16, 16), target=0, noise_sampling="sobol"
        )


def test_cuda_batch_size_follows_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CUDA rule, checked on any machine: half the free memory over the bytes
    # one masked example needs (its share of the capture forward's peak plus
    # MASKED_INPUT_COPIES copies of its input), capped at MAX_AUTO_BATCH.
    from captum_sscam._core import batch_size as _batch_size

    free = 10_000_000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 4 * free))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    cuda = torch.device("cuda")
    per_example = 40_000 + _batch_size.MASKED_INPUT_COPIES * 2_500
    expected = int(0.5 * free // per_example)  # 100
    assert _batch_size.default_batch_size(cuda, 2 * 40_000, 2, 2_500) == expected == 100
    # a compiled forward's batch: the power of two below, 64
    assert _batch_size.default_batch_size(cuda, 2 * 40_000, 2, 2_500, power_of_two=True) == 64
    # memory PyTorch's allocator caches unused counts as free: 10 MB reserved, 4 MB in use
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 10_000_000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4_000_000)
    assert (
        _batch_size.default_batch_size(cuda, 2 * 40_000, 2, 2_500)
        == int(0.5 * (free + 6_000_000) // per_example)
        == 160
    )
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    assert _batch_size.default_batch_size(cuda, 0, 1, 0) == _batch_size.MAX_AUTO_BATCH
    assert _batch_size.default_batch_size(cuda, 10 * free, 1, 0) == 1
    assert _batch_size.default_batch_size(cuda, None) == _batch_size.DEFAULT_CUDA_BATCH
    assert _batch_size.default_batch_size(torch.device("cpu"), 123) == 32
