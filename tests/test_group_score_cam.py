"""GroupScoreCAM (Group Score-CAM): a plain k-means and one masked forward per group, written
here; Score-CAM when every channel has its own group; G forwards per example; determinism."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from captum_sscam import GroupScoreCAM, ScoreCAM
from captum_sscam.apps.cli import main
from captum_sscam.apps.methods import METHODS, explain_functions
from tests.reference import layer_output, reference_score_cam
from tests.tiny_models import SmallCNN

CHANNELS = 24
CONSTANT = 3  # the channel of the layer whose weights are zero: its map is its bias


def model_with_a_constant_channel() -> SmallCNN:
    model = SmallCNN(channels=CHANNELS).eval()
    with torch.no_grad():
        model.layer.weight[CONSTANT] = 0.0
    return model


def inputs(n: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def reference_groups(maps: Tensor, n_groups: int) -> list[list[int]]:
    """One example's groups of channel numbers, by the docstring's k-means, one channel at a
    time: the non-constant channels, each its own group if there are at most ``n_groups``;
    else farthest-point centres from the highest-variance channel, then Lloyd's iterations."""
    active = [k for k in range(maps.shape[0]) if float(maps[k].max()) > float(maps[k].min())]
    if len(active) <= n_groups:
        return [[k] for k in active]
    features = {
        k: ((maps[k] - maps[k].min()) / (maps[k].max() - maps[k].min())).flatten().double()
        for k in active
    }

    def distance(k: int, centre: Tensor) -> float:
        return float((features[k] - centre).square().sum())

    def variance(k: int) -> float:
        return float(maps[k].flatten().var(unbiased=False))

    first = max(active, key=lambda k: (variance(k), -k))  # the first channel on ties
    centres, chosen = [features[first]], {first}
    while len(centres) < n_groups:
        farthest = max(
            (k for k in active if k not in chosen),
            key=lambda k: (min(distance(k, c) for c in centres), -k),
        )
        centres.append(features[farthest])
        chosen.add(farthest)
    labels: list[int] = []
    for _ in range(30):
        nearest = [
            min(range(n_groups), key=lambda g, k=k: (distance(k, centres[g]), g)) for k in active
        ]
        if nearest == labels:
            break
        labels = nearest
        for g in range(n_groups):
            members = [features[k] for k, label in zip(active, labels, strict=True) if label == g]
            if members:
                centres[g] = torch.stack(members).mean(dim=0)
    pairs = list(zip(active, labels, strict=True))
    return [[k for k, label in pairs if label == g] for g in range(n_groups)]


def reference_group_score_cam(
    model: nn.Module, layer: nn.Module, x: Tensor, classes: list[int], n_groups: int, **kw: Any
) -> Tensor:
    """The reference Score-CAM loop run on the group sums G_g = sum_{k in S_g} A_k as its
    channels: one masked forward per group with a mask, L = ReLU(sum_g a_g G_g)."""

    def group_sums(activations: Tensor) -> Tensor:
        sums = torch.zeros(activations.shape[0], n_groups, *activations.shape[2:])
        for n in range(activations.shape[0]):
            for g, members in enumerate(reference_groups(activations[n], n_groups)):
                for k in members:
                    sums[n, g] += activations[n, k]
        return sums

    return reference_score_cam(model, layer, x, classes, reshape=group_sums, **kw)


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_matches_a_plain_k_means_and_one_forward_per_group(
    score_mode: str, with_baseline: bool
) -> None:
    model = model_with_a_constant_channel()
    x = inputs()
    baseline = torch.rand(2, 3, 16, 16) if with_baseline else None
    ours = GroupScoreCAM(model, model.layer).attribute(
        x, target=[1, 4], baselines=baseline, score_mode=score_mode, n_groups=5
    )
    expected = reference_group_score_cam(
        model, model.layer, x, [1, 4], 5, score_mode=score_mode, baseline=baseline
    )
    assert expected.abs().amax(dim=(1, 2, 3)).min() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    score_cam = ScoreCAM(model, model.layer).attribute(
        x, target=[1, 4], baselines=baseline, score_mode=score_mode
    )
    assert (ours - score_cam).abs().max() > 1e-3  # 5 groups of 23 channels: not Score-CAM


def test_the_groups_partition_the_non_constant_channels() -> None:
    model = model_with_a_constant_channel()
    activations = layer_output(model, model.layer, inputs())
    for n in range(2):
        groups = reference_groups(activations[n], 5)
        members = sorted(k for group in groups for k in group)
        assert members == [k for k in range(CHANNELS) if k != CONSTANT]
        assert all(groups)  # here every group has members: 5 masked forwards per example


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax", "logit"])
@pytest.mark.parametrize("n_groups", [CHANNELS - 1, CHANNELS, CHANNELS + 5])
def test_every_channel_its_own_group_is_score_cam(score_mode: str, n_groups: int) -> None:
    model = model_with_a_constant_channel()  # K' = 23 non-constant channels
    x = inputs()
    baseline = torch.rand(2, 3, 16, 16)
    targets = torch.tensor([[1, 4], [0, 2]])  # (N, T): two maps per example
    exact = ScoreCAM(model, model.layer).attribute(
        x, target=targets, baselines=baseline, score_mode=score_mode
    )
    grouped = GroupScoreCAM(model, model.layer).attribute(
        x, target=targets, baselines=baseline, score_mode=score_mode, n_groups=n_groups
    )
    assert grouped.shape == exact.shape == (2, 2, 8, 8)
    assert exact.abs().amax(dim=(2, 3)).min() > 0
    torch.testing.assert_close(grouped, exact)


def masked_rows(model: nn.Module, call: Any) -> list[int]:
    """The rows of every forward ``call`` makes, the capture pass first."""
    rows: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        call()
    finally:
        handle.remove()
    return rows


@pytest.mark.parametrize(("n_groups", "per_example"), [(5, 5), (CHANNELS + 6, CHANNELS - 1)])
def test_one_forward_per_group(n_groups: int, per_example: int) -> None:
    model = model_with_a_constant_channel()
    x = inputs()
    method = GroupScoreCAM(model, model.layer)
    rows = masked_rows(
        model,
        lambda: method.attribute(
            x, target=[1, 4], n_groups=n_groups, perturbations_per_eval=4, channels_last=False
        ),
    )
    # the capture pass (2 examples), then G masked inputs per example (empty groups: none)
    assert rows[0] == 2
    assert sum(rows[1:]) == 2 * per_example
    assert max(rows[1:]) <= 4
    one = masked_rows(
        model, lambda: method.attribute(x[:1], target=1, n_groups=n_groups, channels_last=False)
    )
    assert sum(one[1:]) == per_example


def test_the_same_call_gives_the_same_map() -> None:
    model = model_with_a_constant_channel()
    x = inputs(3, seed=1)
    first = GroupScoreCAM(model, model.layer).attribute(x, target=[0, 1, 2], n_groups=4)
    again = GroupScoreCAM(model, model.layer).attribute(x, target=[0, 1, 2], n_groups=4)
    alone = GroupScoreCAM(model, model.layer).attribute(x[1:2], target=1, n_groups=4)
    assert torch.equal(first, again)
    torch.testing.assert_close(alone, first[1:2])  # an example's groups are its own


def snapshot(model: nn.Module) -> tuple[Any, ...]:
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    state = {name: value.clone() for name, value in model.state_dict().items()}
    return state, [m.training for m in model.modules()], hooks


def assert_unchanged(model: nn.Module, before: tuple[Any, ...]) -> None:
    state, training, hooks = snapshot(model)
    assert state.keys() == before[0].keys()
    assert all(torch.equal(value, before[0][name]) for name, value in state.items())
    assert (training, hooks) == before[1:]


def test_the_model_is_left_as_it_was() -> None:
    model = model_with_a_constant_channel().train()
    before = snapshot(model)
    cam = GroupScoreCAM(model, model.layer).attribute(inputs(), target=[1, 4], n_groups=5)
    assert cam.abs().max() > 0
    assert_unchanged(model, before)


@pytest.mark.parametrize("n_groups", [0, -2, 1.5, True, "8"])
def test_bad_n_groups_is_refused(n_groups: object) -> None:
    model = model_with_a_constant_channel()
    before = snapshot(model)
    message = "n_groups must be an integer >= 1"
    with pytest.raises(ValueError, match=message):
        GroupScoreCAM(model, model.layer).attribute(inputs(), target=0, n_groups=n_groups)
    with pytest.raises(ValueError, match=message):
        GroupScoreCAM.check_arguments(n_groups=n_groups)
    assert_unchanged(model, before)


def test_name_and_signature() -> None:
    assert GroupScoreCAM.get_name() == "Group Score-CAM"
    shared = list(inspect.signature(ScoreCAM.attribute).parameters.values())
    own = list(inspect.signature(GroupScoreCAM.attribute).parameters.values())
    assert own[: len(shared)] == shared  # names, kinds, defaults and order: Score-CAM's
    assert [(p.name, p.kind, p.default) for p in own[len(shared) :]] == [
        ("n_groups", inspect.Parameter.KEYWORD_ONLY, 32)
    ]
    with pytest.raises(TypeError, match="n_steps"):
        GroupScoreCAM.check_arguments(n_steps=3)
    GroupScoreCAM.check_arguments(n_groups=128, score_mode="channel_softmax")


def test_the_registry_entry_reaches_the_command_line(tmp_path) -> None:
    assert METHODS["group-score-cam"].attribution is GroupScoreCAM
    model = model_with_a_constant_channel()
    x = inputs(1)
    (explain,) = explain_functions(["group-score-cam"], model, model.layer).values()
    expected = GroupScoreCAM(model, model.layer).attribute(x, target=1, n_groups=32)
    torch.testing.assert_close(explain(x, torch.tensor([1])), expected)

    image = tmp_path / "image.png"
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    tiny = ["--model", "tests.tiny_models:SmallCNN", "--layer", "layer", "--size", "16", "--quiet"]
    argv = ["explain", str(image), *tiny, "--method", "group-score-cam", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert (tmp_path / "image_group-score-cam.png").is_file()
