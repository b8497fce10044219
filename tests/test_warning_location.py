"""Every warning the package emits points at the caller's line, for every method and path."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from captum.attr import NoiseTunnel
from torch import nn

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam.attr import _options
from tests.tiny_models import SmallCNN

X = torch.rand(1, 3, 8, 8)
CHEAP = {
    ScoreCAM: {},
    SmoothedScoreCAM: {"nt_samples": 1, "stdevs": 0.1},
    IntegratedScoreCAM: {"n_steps": 1},
}
FAMILY = list(CHEAP)


def warnings_of(call: Callable[[], Any]) -> tuple[list[warnings.WarningMessage], int]:
    """The warnings of ``call()`` (a one-line lambda) and the line of the library call in it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, UserWarning)], call.__code__.co_firstlineno


def assert_at(caught: list[warnings.WarningMessage], line: int, match: str) -> None:
    found = [w for w in caught if match in str(w.message)]
    assert found, [str(w.message) for w in caught]
    for w in found:
        assert (w.filename, w.lineno) == (__file__, line), (w.filename, w.lineno, line)


@pytest.mark.parametrize("cls", FAMILY, ids=lambda cls: cls.__name__)
def test_training_mode(cls: type) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(X)
    method = cls(model, model[1])
    caught, line = warnings_of(lambda: method.attribute(X, target=0, **CHEAP[cls]))
    assert_at(caught, line, "training mode")


@pytest.mark.parametrize("cls", FAMILY, ids=lambda cls: cls.__name__)
def test_autocast_auto_without_fast_reduced_precision(cls: type, monkeypatch) -> None:
    monkeypatch.setattr(_options, "fastest_autocast_dtype", lambda device: None)
    monkeypatch.setattr(_options, "_NOTED_FP32", set())
    model = SmallCNN().eval()
    method = cls(model, model.layer)
    caught, line = warnings_of(
        lambda: method.attribute(X, target=0, autocast_dtype="auto", **CHEAP[cls])
    )
    assert_at(caught, line, 'autocast_dtype="auto"')


@pytest.mark.parametrize("cls", FAMILY, ids=lambda cls: cls.__name__)
def test_constant_layer(cls: type) -> None:
    pool = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(2), nn.Upsample(size=2))
    flat = nn.Sequential(pool, nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        pool[0].weight.zero_()
    method = cls(flat, pool)
    caught, line = warnings_of(lambda: method.attribute(X, target=0, **CHEAP[cls]))
    assert_at(caught, line, "every channel of the layer is constant")


@pytest.mark.parametrize("cls", FAMILY, ids=lambda cls: cls.__name__)
def test_a_layer_that_runs_twice(cls: type) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.head = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(self.conv(x)).mean(dim=(2, 3)))

    model = Twice().eval()
    method = cls(model, model.conv)
    caught, line = warnings_of(lambda: method.attribute(X, target=0, **CHEAP[cls]))
    assert_at(caught, line, "ran 2 times")


def test_through_captum_s_noise_tunnel() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(X)
    tunnel = NoiseTunnel(ScoreCAM(model, model[1]))
    caught, line = warnings_of(lambda: tunnel.attribute(X, target=0, nt_samples=2, stdevs=0.1))
    assert_at(caught, line, "training mode")
