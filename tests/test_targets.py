"""Callable targets: the same maps as index targets through every method and sampling path,
the plain reference loop on models returning tuples and dicts, per-example targets, and
clear errors (the model left bit-identical) for a callable that raises or returns NaN, a map,
a Python float or integers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from captum.attr import NoiseTunnel
from torch import Tensor, nn

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam._core.targets import ExampleTarget
from tests.reference import reference_score_cam, replayed_noise
from tests.test_metrics_hardening import assert_unchanged, snapshot, training_model
from tests.tiny_models import SmallCNN

MODES = ["probability", "sigmoid", "logit", "channel_softmax"]
CLASSES = [0, 3]


def index_scores(score_mode: str, classes: list[int]) -> ExampleTarget:
    """A callable computing what an index target of ``classes`` scores in ``score_mode``."""

    class Scores(ExampleTarget):
        def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
            picked = torch.tensor(classes, device=examples.device)[examples]
            if score_mode == "probability":
                output = output.softmax(dim=1)
            rows = output[torch.arange(len(examples)), picked]
            return rows.sigmoid() if score_mode == "sigmoid" else rows

    return Scores()


def smoothed(**kwargs: Any) -> dict[str, Any]:
    return {"nt_samples": 4, "stdevs": 0.3, "generator": torch.Generator().manual_seed(5)} | kwargs


# Every method and sampling path, each with a callable scoring exactly what the index target
# scores: the maps (and errors) must agree.
PATHS = {
    "score-cam": (ScoreCAM, {}),
    "score-cam-baseline": (ScoreCAM, {"baselines": 0.5}),
    "ss-cam-mask": (SmoothedScoreCAM, smoothed(noise_on="mask")),
    "ss-cam-input": (SmoothedScoreCAM, smoothed(noise_on="input", baselines=0.2)),
    "ss-cam-adaptive": (SmoothedScoreCAM, smoothed(nt_samples=6, sample_allocation="adaptive")),
    "ss-cam-error": (SmoothedScoreCAM, smoothed(return_error=True)),
    "ss-cam-target-error": (
        SmoothedScoreCAM,
        smoothed(nt_samples=16, target_error=0.2, return_error=True, noise_sampling="antithetic"),
    ),
    "is-cam": (IntegratedScoreCAM, {"n_steps": 3}),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("score_mode", MODES)
def test_a_callable_gives_the_maps_of_the_index_target(path: str, score_mode: str) -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method, kwargs = PATHS[path]

    def call(target: object) -> Any:
        fresh = {k: v for k, v in kwargs.items() if k != "generator"}
        if "generator" in kwargs:
            fresh["generator"] = torch.Generator().manual_seed(5)
        return method(model, model.layer).attribute(
            x, target=target, score_mode=score_mode, perturbations_per_eval=5, **fresh
        )

    by_index = call(CLASSES)
    by_callable = call(index_scores(score_mode, CLASSES))
    if kwargs.get("return_error"):
        scale = float(by_index[1].abs().max())
        torch.testing.assert_close(by_callable[1], by_index[1], rtol=1e-5, atol=1e-5 * scale)
        by_index, by_callable = by_index[0], by_callable[0]
    scale = float(by_index.abs().max())
    assert scale > 0  # up to rounding, relative to the map's scale (sums cancel near 0)
    torch.testing.assert_close(by_callable, by_index, rtol=1e-5, atol=1e-5 * scale)


def test_a_plain_callable_is_called_with_the_output_only() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    seen: list[tuple[int, ...]] = []

    def third_logit(output: Tensor) -> Tensor:
        seen.append(tuple(output.shape))
        return output[:, 2]

    maps = ScoreCAM(model, model.layer).attribute(x, target=third_logit, perturbations_per_eval=4)
    expected = ScoreCAM(model, model.layer).attribute(x, target=2, score_mode="logit")
    torch.testing.assert_close(maps, expected)
    # the capture forward (2 inputs), then 12 masked inputs in batches of 4
    assert seen == [(2, 5)] + [(4, 5)] * 3


def test_an_example_target_is_told_each_rows_example() -> None:
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 16, 16)
    told: list[list[int]] = []

    class Recorded(ExampleTarget):
        def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
            told.append(examples.tolist())
            return output[:, 1]

    ScoreCAM(model, model.layer).attribute(x, target=Recorded(), perturbations_per_eval=4)
    assert told[0] == [0, 1, 2]  # the capture forward
    masked = [example for batch in told[1:] for example in batch]
    assert masked == [0] * 6 + [1] * 6 + [2] * 6  # 6 channels each, example-major
    assert any(len(set(batch)) > 1 for batch in told[1:])  # a batch mixes examples


class TupleAndDict(nn.Module):
    """SmallCNN whose output is ``(logits, {"embedding": features})``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallCNN()

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.net(x)
        return logits, {"embedding": torch.tanh(logits[:, :3] * 2)}


@pytest.mark.parametrize("score_mode", ["probability", "channel_softmax"])
def test_a_callable_of_a_tuple_and_dict_output_matches_the_reference_loop(score_mode: str) -> None:
    model = TupleAndDict().eval()
    x = torch.randn(2, 3, 16, 16)
    baseline = torch.rand(2, 3, 16, 16)

    def score(output: tuple[Tensor, dict[str, Tensor]]) -> Tensor:
        return output[1]["embedding"].sum(dim=1) + output[0][:, 4]

    for noise_on in ("mask", "input"):
        maps = SmoothedScoreCAM(model, model.net.layer).attribute(
            x, target=score, baselines=baseline, score_mode=score_mode, nt_samples=3,
            stdevs=0.2, noise_on=noise_on, generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
        expected = reference_score_cam(
            model, model.net.layer, x, None, score_mode, baseline, samples=3,
            noise=replayed_noise(2, 0.2, noise_on), noise_on=noise_on,
            score_of=lambda output, _n: score(output)[0],
        )  # fmt: skip
        assert expected.abs().max() > 0
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5)


def test_a_callable_with_several_scores_gives_one_map_each() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    method = ScoreCAM(model, model.layer)
    maps = method.attribute(x, target=lambda output: output[:, [1, 4]], score_mode="logit")
    expected = method.attribute(x, target=torch.tensor([[1, 4], [1, 4]]), score_mode="logit")
    assert maps.shape == (2, 2, 8, 8)
    torch.testing.assert_close(maps, expected)


def test_a_callable_works_through_noise_tunnel() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    tunnel = NoiseTunnel(ScoreCAM(model, model.layer))
    kwargs = {"nt_type": "smoothgrad", "nt_samples": 2, "stdevs": 0.0, "score_mode": "logit"}
    maps = tunnel.attribute(x, target=lambda output: output[:, 3], **kwargs)
    expected = tunnel.attribute(x, target=3, **kwargs)
    torch.testing.assert_close(maps, expected)


def test_an_index_target_of_a_tuple_output_says_to_pass_a_callable() -> None:
    model = TupleAndDict().eval()
    with pytest.raises(TypeError, match=r"must return a Tensor .* got a tuple of 2.*target= a"):
        ScoreCAM(model, model.net.layer).attribute(torch.randn(1, 3, 8, 8), target=0)


class NaNAfter(ExampleTarget):
    """Logit 1, then NaN from the ``calls``-th call on (the capture forward is call 0)."""

    def __init__(self, calls: int) -> None:
        self.calls, self.count = calls, 0

    def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
        self.count += 1
        scores = output[:, 1]
        return scores * float("nan") if self.count > self.calls else scores


def raising(output: Tensor) -> Tensor:
    return output.logits  # type: ignore[attr-defined]


BAD = [
    # (target, kwargs, error, message)
    (raising, {}, RuntimeError, r"target raised AttributeError: .* a Tensor of shape \(2, 3\)"),
    (lambda output: output[:, 0] * float("nan"), {}, ValueError, r"NaN scores for the inputs"),
    (lambda output: torch.zeros(2, 8, 8), {}, ValueError, r"shape \(2, 8, 8\) .* expected \(2,\)"),
    (lambda output: float(output[0, 0]), {}, TypeError, r"target returned float .* \(2,\)"),
    (lambda output: output.argmax(dim=1), {}, TypeError, r"dtype torch.int64.*floating point"),
    (lambda output: output[:1, 0], {}, ValueError, r"shape \(1,\) for a batch of 2 inputs"),
    (NaNAfter(1), {}, ValueError, r"NaN scores for some masked inputs"),
    (NaNAfter(1), {"baselines": 0.0}, ValueError, r"NaN scores for the baselines"),
]


@pytest.mark.parametrize(("target", "kwargs", "error", "message"), BAD)
def test_a_bad_callable_gets_a_clear_error_and_the_model_is_untouched(
    target: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    if isinstance(target, NaNAfter):
        target.count = 0
    model = training_model()  # BatchNorm and dropout in training mode, a hook, a frozen weight
    before = snapshot(model)
    with pytest.raises(error, match=message), pytest.warns(UserWarning, match="training mode"):
        ScoreCAM(model, model.stem).attribute(torch.randn(2, 3, 8, 8), target=target, **kwargs)
    assert_unchanged(model, before)


def test_a_raising_callable_keeps_its_error_as_the_cause() -> None:
    model = SmallCNN().eval()
    with pytest.raises(RuntimeError) as caught:
        ScoreCAM(model, model.layer).attribute(torch.randn(2, 3, 8, 8), target=raising)
    assert isinstance(caught.value.__cause__, AttributeError)


def test_a_callable_whose_later_batches_change_shape_is_refused() -> None:
    model = SmallCNN().eval()
    calls = []

    def shifting(output: Tensor) -> Tensor:
        calls.append(1)
        return output[:, :1] if len(calls) == 1 else output[:, :2]

    with pytest.raises(ValueError, match=r"shape \(3, 2\) .* expected \(3,\) or \(3, 1\)"):
        ScoreCAM(model, model.layer).attribute(
            torch.randn(2, 3, 8, 8), target=shifting, perturbations_per_eval=3
        )


def test_an_example_target_for_another_batch_is_refused() -> None:
    class ForThree(ExampleTarget):
        num_examples = 3

        def __call__(self, output: Tensor, examples: Tensor) -> Tensor:
            return output[:, 0]

    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="target holds data for 3 examples but the inputs have 2"):
        ScoreCAM(model, model.layer).attribute(torch.randn(2, 3, 8, 8), target=ForThree())
