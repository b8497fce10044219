"""Properties over random shapes, layers, batch sizes, target forms (callables too), score
modes and batching (hypothesis).

For every drawn configuration: the map has the documented shape, is finite, does not depend
on the other examples of the batch or (up to float rounding) on perturbations_per_eval, and
equals the plain reference loop; the model's state_dict and every module's mode are
unchanged afterwards, also after a call that raises.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from captum_sscam import ExampleTarget, IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from tests.reference import reference_score_cam, replayed_noise

CLASSES = 3


class PropertyModel(nn.Module):
    """stem -> BatchNorm -> ``layer`` (same size, stride 2, or a transposed conv larger than
    the input) -> ReLU -> mean pool -> linear, with random weights from ``seed``."""

    def __init__(self, channels: int, layer_kind: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        if layer_kind == "same":
            self.layer = nn.Conv2d(4, channels, 3, padding=1)
        elif layer_kind == "stride2":
            self.layer = nn.Conv2d(4, channels, 3, stride=2, padding=1)
        else:
            self.layer = nn.ConvTranspose2d(4, channels, 2, stride=2)
        self.head = nn.Linear(channels, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        features = torch.relu(self.layer(torch.tanh(self.norm(self.stem(x)))))
        return self.head(features.mean(dim=(2, 3)))


def state_of(model: nn.Module) -> tuple[dict[str, Tensor], list[bool]]:
    return (
        {name: value.clone() for name, value in model.state_dict().items()},
        [module.training for module in model.modules()],
    )


class ClassScores(ExampleTarget):
    """A callable target scoring each example's class as an index target does in ``score_mode``
    (softmax, sigmoid or the logit); the plain callable ``output -> scores`` for one class."""

    def __init__(self, classes: list[int], score_mode: str) -> None:
        self.classes, self.score_mode = torch.tensor(classes), score_mode

    def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
        if self.score_mode == "probability":
            output = output.softmax(dim=1)
        scores = output[torch.arange(len(examples)), self.classes[examples]]
        return scores.sigmoid() if self.score_mode == "sigmoid" else scores


def target_form(form: str, classes: list[int], score_mode: str) -> object:
    if form == "int":
        return classes[0]
    if form == "list":
        return classes
    if form == "callable":
        return ClassScores(classes, score_mode)
    if form == "plain-callable":  # one class for every example
        return lambda output: ClassScores(classes[:1], score_mode)(
            output, torch.zeros(output.shape[0], dtype=torch.long)
        )
    return torch.tensor(classes)


configurations = st.fixed_dictionaries(
    {
        "examples": st.integers(1, 3),
        "channels": st.integers(1, 4),
        "size": st.integers(4, 10),
        "layer_kind": st.sampled_from(["same", "stride2", "transposed"]),
        "form": st.sampled_from(["int", "list", "tensor", "callable", "plain-callable"]),
        "batch": st.integers(1, 7),
        "method": st.sampled_from(["score-cam", "ss-cam-mask", "ss-cam-input", "is-cam"]),
        "score_mode": st.sampled_from(["probability", "sigmoid", "logit", "channel_softmax"]),
        "seed": st.integers(0, 1000),
        "train": st.booleans(),
    }
)


def run(config: dict, model: nn.Module, x: Tensor, target: object, batch: int) -> Tensor:
    method = config["method"]
    common = {"target": target, "score_mode": config["score_mode"], "perturbations_per_eval": batch}
    if method == "score-cam":
        return ScoreCAM(model, model.layer).attribute(x, **common)
    if method == "is-cam":
        return IntegratedScoreCAM(model, model.layer).attribute(x, n_steps=2, **common)
    return SmoothedScoreCAM(model, model.layer).attribute(
        x, nt_samples=2, stdevs=0.3, noise_on=method.split("-")[-1],
        generator=torch.Generator().manual_seed(config["seed"]), **common,
    )  # fmt: skip


def reference(config: dict, model: nn.Module, x: Tensor, classes: list[int]) -> Tensor:
    method = config["method"]
    kwargs: dict[str, object] = {"score_mode": config["score_mode"]}
    if method == "is-cam":
        kwargs |= {"samples": 2, "mask_scales": [0.5, 1.5]}
    elif method.startswith("ss-cam"):
        placement = method.split("-")[-1]
        kwargs |= {
            "samples": 2,
            "noise": replayed_noise(config["seed"], 0.3, placement),
            "noise_on": placement,
        }
    return reference_score_cam(model, model.layer, x, classes, **kwargs)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations)
def test_maps_hold_their_properties(config: dict) -> None:
    model = PropertyModel(config["channels"], config["layer_kind"], config["seed"])
    model.train(config["train"])
    generator = torch.Generator().manual_seed(config["seed"])
    x = torch.randn(config["examples"], 3, config["size"], config["size"], generator=generator)
    classes = [(config["seed"] + i) % CLASSES for i in range(config["examples"])]
    if config["form"] in ("int", "plain-callable"):
        classes = [classes[0]] * config["examples"]
    target = target_form(config["form"], classes, config["score_mode"])
    before = state_of(model)

    with pytest.warns(UserWarning, match="training mode") if config["train"] else _no_warning():
        maps = run(config, model, x, target, config["batch"])
    layer_size = model.layer(model.stem(x[:1])).shape[2:]
    assert maps.shape == (config["examples"], 1, *layer_size)
    assert bool(torch.isfinite(maps).all())
    _assert_state(model, before)

    model.eval()
    other_batch = run(config, model, x, target, config["batch"] % 7 + 1)
    # the same masked inputs bit for bit (test_sampling); the forwards round differently by
    # batch size, so the maps agree up to float rounding (measured: under 1e-7 of the maximum)
    scale = float(maps.abs().max())
    torch.testing.assert_close(maps, other_batch, rtol=1e-5, atol=1e-6 * scale + 1e-12)
    torch.testing.assert_close(maps, reference(config, model, x, classes), rtol=1e-4, atol=1e-6)
    if not config["method"].startswith("ss-cam"):  # seeded noise follows the example's index
        last = config["examples"] - 1
        one = target_form(config["form"], classes[last:], config["score_mode"])
        alone = run(config, model, x[last:], one, config["batch"])
        torch.testing.assert_close(alone, maps[last:], rtol=1e-4, atol=1e-6)

    model.train(config["train"])
    before = state_of(model)
    with pytest.raises(ValueError, match="out of range"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the training-mode warning, checked above
        run(config, model, x, CLASSES + 1, config["batch"])
    _assert_state(model, before)


def _assert_state(model: nn.Module, before: tuple[dict[str, Tensor], list[bool]]) -> None:
    state, modes = state_of(model)
    assert modes == before[1]
    assert all(torch.equal(state[name], value) for name, value in before[0].items())
    assert not model.layer._forward_hooks and not model.layer._forward_pre_hooks


class _no_warning:  # noqa: N801 - used like pytest.warns
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None
