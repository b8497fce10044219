"""Bad input gets a clear error (never a silent NaN), and the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from tests.tiny_models import SmallCNN


def hook_count(model: nn.Module) -> int:
    return sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules()
    )


def model_state(model: nn.Module) -> tuple[int, list[bool], list[bool]]:
    return (
        hook_count(model),
        [module.training for module in model.modules()],
        [parameter.requires_grad for parameter in model.parameters()],
    )


@pytest.fixture
def model() -> SmallCNN:
    cnn = SmallCNN()
    cnn.train()  # not eval: the methods must not switch modes either way
    cnn.head.weight.requires_grad_(False)
    return cnn


X = torch.randn(2, 3, 16, 16)


def test_layer_not_in_model(model: SmallCNN) -> None:
    with pytest.raises(ValueError, match="not a submodule of the model"):
        ScoreCAM(model, nn.Conv2d(8, 6, 3))


def test_layer_that_never_runs(model: SmallCNN) -> None:
    model.unused = nn.Conv2d(3, 3, 1)
    before = model_state(model)
    with pytest.raises(ValueError, match="never ran"):
        ScoreCAM(model, model.unused).attribute(X, target=0)
    assert model_state(model) == before


def test_layer_that_never_runs_behind_a_function(model: SmallCNN) -> None:
    other = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="never ran"):
        ScoreCAM(lambda x: model(x), other).attribute(X, target=0)


def test_layer_that_runs_twice_warns_and_uses_the_last_call() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cnn = SmallCNN()
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.act(self.cnn.layer(self.act(self.cnn.stem(x))))
            return self.cnn.head(features.mean(dim=(2, 3)))

    shared = Shared().eval()
    with pytest.warns(UserWarning, match="ran 2 times"):
        maps = ScoreCAM(shared, shared.act).attribute(X, target=1)
    assert maps.shape == (2, 1, 8, 8)  # the second call's (layer) resolution
    assert hook_count(shared) == 0


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        ([X], TypeError, "Tensor or a tuple"),
        ("image", TypeError, "Tensor or a tuple"),
        (torch.randn(2, 10), ValueError, "spatial"),
        (X.long(), TypeError, "floating point"),
        ((X, torch.randn(3, 3, 16, 16)), ValueError, "examples"),
    ],
)
def test_bad_inputs(model: SmallCNN, inputs: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ScoreCAM(model, model.layer).attribute(inputs, target=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_and_baselines(model: SmallCNN, bad: float) -> None:
    x = X.clone()
    x[1, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        ScoreCAM(model, model.layer).attribute(x, target=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ScoreCAM(model, model.layer).attribute(X, target=0, baselines=bad)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (5, ValueError, "out of range"),
        (-6, ValueError, "out of range"),
        ([1, 2, 3], ValueError, "one target per example"),
        (torch.tensor([1, 7]), ValueError, "out of range"),
        (torch.tensor([1, 2, 3]), ValueError, "one class per example"),
        (torch.tensor([1.0, 2.0]), TypeError, "integer class indices"),
        ((1, 2), ValueError, "2 indices"),
        (None, ValueError, "target is None"),
        ("cat", TypeError, "ints or tuples"),
    ],
)
def test_bad_targets_leave_the_model_untouched(
    model: SmallCNN, target: object, error: type, match: str
) -> None:
    before = model_state(model)
    with pytest.raises(error, match=match):
        ScoreCAM(model, model.layer).attribute(X, target=target)
    assert model_state(model) == before


def test_baselines_of_the_wrong_batch_or_shape(model: SmallCNN) -> None:
    with pytest.raises(ValueError, match="3 examples but the inputs have 2"):
        ScoreCAM(model, model.layer).attribute(X, target=0, baselines=torch.zeros(3, 3, 16, 16))
    with pytest.raises(ValueError, match="does not broadcast"):
        ScoreCAM(model, model.layer).attribute(X, target=0, baselines=torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nt_samples": 0}, "nt_samples must be an integer >= 1"),
        ({"nt_samples": 2.5}, "nt_samples must be an integer >= 1"),
        ({"stdevs": -0.1}, "stdevs must be finite and >= 0"),
        ({"stdevs": float("nan")}, "stdevs must be finite and >= 0"),
        ({"stdevs": (1.0, 2.0)}, "one per input tensor"),
        ({"perturbations_per_eval": 0}, "perturbations_per_eval must be an integer >= 1"),
        ({"noise_on": "weights"}, "noise_on must be one of"),
        ({"score_mode": "logits"}, "score_mode must be one of"),
    ],
)
def test_bad_parameters(model: SmallCNN, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmoothedScoreCAM(model, model.layer).attribute(X, target=0, **kwargs)


def test_stdevs_of_the_wrong_type(model: SmallCNN) -> None:
    with pytest.raises(TypeError, match="real numbers"):
        SmoothedScoreCAM(model, model.layer).attribute(X, target=0, stdevs="2")


def test_all_constant_layer_returns_zeros_with_a_warning(model: SmallCNN) -> None:
    with torch.no_grad():
        model.layer.bias.fill_(-1e4)  # every channel is 0 after the ReLU
    with pytest.warns(UserWarning, match="constant"):
        maps = ScoreCAM(model, model.act).attribute(X, target=0, score_mode="channel_softmax")
    assert torch.equal(maps, torch.zeros(2, 1, 8, 8))


def test_error_inside_a_masked_forward_leaves_the_model_untouched(model: SmallCNN) -> None:
    calls = 0

    def failing_forward(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("out of memory (simulated)")
        return model(x)

    before = model_state(model)
    with pytest.raises(RuntimeError, match="simulated"):
        ScoreCAM(failing_forward, model.layer).attribute(X, target=0, perturbations_per_eval=2)
    assert model_state(model) == before


def test_success_leaves_the_model_untouched(model: SmallCNN) -> None:
    before = model_state(model)
    SmoothedScoreCAM(model, model.layer).attribute(X, target=[0, 1], nt_samples=2)
    assert model_state(model) == before
    assert model.training


def test_model_returning_a_tuple(model: SmallCNN) -> None:
    with pytest.raises(TypeError, match="must return a Tensor"):
        ScoreCAM(lambda x: (model(x),), model.layer).attribute(X, target=0)
