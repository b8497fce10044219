"""One signature for the Score-CAM family, and settings checked without a model."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam.attr._options import ScoreCAMOptions
from tests.tiny_models import SmallCNN

FAMILY = (ScoreCAM, SmoothedScoreCAM, IntegratedScoreCAM)
POSITIONAL = ["inputs", "target", "additional_forward_args"]


def parameters(cls: type) -> list[inspect.Parameter]:
    return list(inspect.signature(cls.attribute).parameters.values())[1:]  # after self


@pytest.mark.parametrize("cls", FAMILY, ids=lambda cls: cls.__name__)
def test_only_captum_s_three_are_positional(cls: type) -> None:
    params = parameters(cls)
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == POSITIONAL
    assert all(p.kind is p.KEYWORD_ONLY for p in params[3:])


def test_the_shared_arguments_come_first_in_one_order() -> None:
    shared = [p.name for p in parameters(ScoreCAM)[3:]]
    # every option of the engine is a shared argument, in the order of the options object
    assert [f.name for f in dataclasses.fields(ScoreCAMOptions)] == [
        name for name in shared if name != "baselines"
    ]
    for cls in FAMILY:
        names = [p.name for p in parameters(cls)[3:]]
        assert names[: len(shared)] == shared, cls.__name__
        defaults = {p.name: p.default for p in parameters(cls)}
        assert all(defaults[n] == p.default for n, p in inspect.signature(
            ScoreCAM.attribute).parameters.items() if n in shared)  # fmt: skip


def test_a_fourth_positional_argument_is_refused() -> None:
    model = SmallCNN().eval()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match="positional"):
        ScoreCAM(model, model.layer).attribute(x, 0, None, 0.0)


@pytest.mark.parametrize(
    ("cls", "arguments", "error", "message"),
    [
        (SmoothedScoreCAM, {"nt_samples": 0}, ValueError, "nt_samples must be an integer >= 1"),
        (SmoothedScoreCAM, {"stdevs": -1.0}, ValueError, "stdevs must be finite and >= 0"),
        (SmoothedScoreCAM, {"noise_on": "both"}, ValueError, "noise_on must be one of"),
        (SmoothedScoreCAM, {"noise_sampling": "antithetic", "nt_samples": 3}, ValueError, "even"),
        (SmoothedScoreCAM, {"generator": 0}, TypeError, "generator must be a torch.Generator"),
        (ScoreCAM, {"score_mode": "softmax"}, ValueError, "score_mode must be one of"),
        (ScoreCAM, {"top_k_channels": 0}, ValueError, "top_k_channels must be an integer"),
        (ScoreCAM, {"nt_samples": 8}, TypeError, "argument.* .?nt_samples"),
        (IntegratedScoreCAM, {"n_steps": 0}, ValueError, "n_steps must be an integer >= 1"),
    ],
)
def test_check_arguments_raises_what_attribute_raises(cls, arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        cls.check_arguments(**arguments)
    model = SmallCNN().eval()
    with pytest.raises(error, match=message):
        cls(model, model.layer).attribute(torch.rand(1, 3, 8, 8), target=0, **arguments)


def test_check_arguments_accepts_every_default_and_draws_no_noise() -> None:
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    for cls in FAMILY:
        cls.check_arguments()
    SmoothedScoreCAM.check_arguments(nt_samples=4, stdevs=(0.5, 1.0), return_error=True)
    assert torch.equal(torch.rand(1), expected)  # the global RNG was not drawn from
