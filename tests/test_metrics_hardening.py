"""The metrics' second hardening round: a model in training mode, models that return tuples or
dicts, boxes and tolerances that scored silently, images without their batch dimension, and
non-finite images given to the drawing helpers."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from captum_sscam.metrics import (
    average_drop,
    deletion_auc,
    energy_pointing_game,
    increase_in_confidence,
    insertion_auc,
    pointing_game,
)
from captum_sscam.visualization import method_grid, overlay

MODEL_METRICS = [deletion_auc, insertion_auc, average_drop, increase_in_confidence]
POINTING_GAMES = [energy_pointing_game, pointing_game]
CHEAP = {deletion_auc: {"step": 0.25}, insertion_auc: {"step": 0.25}}


def by_name(function: Callable[..., Any]) -> str:
    return function.__name__


class NormAndDropout(nn.Module):
    """conv -> BatchNorm -> ReLU -> Dropout(0.5) -> pool -> linear: 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        features = self.drop(torch.relu(self.norm(self.stem(x))))
        return self.head(features.mean(dim=(2, 3)))


def training_model(model: NormAndDropout | None = None) -> NormAndDropout:
    """In training mode with non-default running statistics, one module already in eval mode
    (the flags must come back module by module), a frozen parameter and a user's hook."""
    model = model or NormAndDropout()
    with torch.no_grad():
        NormAndDropout.forward(model, torch.randn(8, 3, 8, 8) * 3 + 1)
    model.train()
    model.head.eval()
    model.stem.bias.requires_grad_(False)
    model.head.register_forward_hook(lambda *_: None)
    return model


def snapshot(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[bool], int]:
    """Everything a metric must leave as it was: state_dict (buffers included), every module's
    ``training`` flag, every parameter's ``requires_grad`` and the number of hooks."""
    hooks = sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) + len(module._backward_hooks)
        for module in model.modules()
    )
    return (
        {name: value.clone() for name, value in model.state_dict().items()},
        [module.training for module in model.modules()],
        [parameter.requires_grad for parameter in model.parameters()],
        hooks,
    )


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, modes, requires_grad, hooks = snapshot(model)
    assert (modes, requires_grad, hooks) == before[1:]
    assert state.keys() == before[0].keys()
    for name, value in state.items():
        assert torch.equal(value, before[0][name]), name  # bit-identical, buffers included


X = torch.rand(2, 3, 4, 4)
MAPS = torch.rand(2, 1, 2, 2)
TARGET = [0, 2]


# --- 3. a model in training mode ---------------------------------------------------------------


def warnings_of(call: Callable[[], Any]) -> tuple[Any, list[warnings.WarningMessage], int]:
    """``call()``'s result, its warnings and the line of ``call`` (a one-line lambda)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, list(caught), call.__code__.co_firstlineno


@pytest.mark.parametrize("metric", MODEL_METRICS, ids=by_name)
@pytest.mark.parametrize("as_method", [False, True], ids=["module", "bound method"])
def test_a_training_model_runs_in_eval_mode_and_is_left_as_it_was(metric, as_method) -> None:
    model = training_model()
    reference = copy.deepcopy(model).eval()
    before = snapshot(model)
    forward, cheap = (model.forward if as_method else model), CHEAP.get(metric, {})
    value, caught, line = warnings_of(
        lambda: metric(forward, X, MAPS, target=TARGET, max_examples_per_batch=3, **cheap)
    )
    notes = [w for w in caught if "training mode" in str(w.message)]
    assert len(notes) == 1
    assert "BatchNorm2d, Dropout" in str(notes[0].message)
    assert "model.eval()" in str(notes[0].message)
    assert (notes[0].filename, notes[0].lineno) == (__file__, line)  # the metric's call
    assert_unchanged(model, before)
    # the eval-mode value (one example per forward or all at once: BatchNorm is per example)
    torch.testing.assert_close(value, metric(reference, X, MAPS, target=TARGET, **cheap))
    # ... up to the rounding of a forward at another batch size (Average Drop divides by Y,
    # which amplifies it to ~1e-4 relative; training-mode BatchNorm would differ by far more)
    alone = metric(reference, X, MAPS, target=TARGET, max_examples_per_batch=1, **cheap)
    torch.testing.assert_close(value, alone, rtol=1e-3, atol=1e-3)


def test_an_eval_model_gives_no_training_warning() -> None:
    model = NormAndDropout().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deletion_auc(model, X, MAPS, target=TARGET, step=0.5)
    assert not [w for w in caught if "training mode" in str(w.message)]


class FailsOnCall(NormAndDropout):
    """Raises in its ``fail_on``-th forward after the set-up (1: the target probe; 2: a
    perturbed batch)."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on, self.calls = fail_on, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("the model failed")
        return super().forward(x)


class PairOutput(NormAndDropout):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().forward(x), x


# Each failure with the error it raises; the model is a training_model() unless given.
FAILURES = {
    "target out of range": ({"target": 9}, ValueError, "out of range"),
    "error in the target probe": ({"model": FailsOnCall(1)}, RuntimeError, "failed"),
    "error in a perturbed batch": ({"model": FailsOnCall(2)}, RuntimeError, "failed"),
    "tuple output": ({"model": PairOutput()}, TypeError, "got tuple"),
    "image without its batch": ({"inputs": X[0]}, ValueError, "unsqueeze"),
    "NaN attributions": ({"attributions": MAPS * float("nan")}, ValueError, "NaN"),
    "maps of another batch": ({"attributions": MAPS[:1]}, ValueError, "1 maps"),
    "bad batch size": ({"max_examples_per_batch": 0}, ValueError, "max_examples_per_batch"),
}


@pytest.mark.parametrize("metric", MODEL_METRICS, ids=by_name)
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_metric_that_raises_leaves_the_model_bit_identical(metric, failure) -> None:
    changes, error, message = FAILURES[failure]
    model = training_model(copy.deepcopy(changes.get("model")))
    before = snapshot(model)
    kwargs = {"target": changes.get("target", TARGET), **CHEAP.get(metric, {})}
    if "max_examples_per_batch" in changes:
        kwargs["max_examples_per_batch"] = changes["max_examples_per_batch"]
    inputs, attributions = changes.get("inputs", X), changes.get("attributions", MAPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the training-mode note, when the model is reached
        with pytest.raises(error, match=message):
            metric(model, inputs, attributions, **kwargs)
    assert_unchanged(model, before)


# --- 9. a model that returns a tuple or a dict -------------------------------------------------


class TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(x.mean(dim=(2, 3))), x


class DictOutput(TupleOutput):
    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return {"logits": self.head(x.mean(dim=(2, 3)))}


@pytest.mark.parametrize("metric", MODEL_METRICS, ids=by_name)
@pytest.mark.parametrize(("model", "kind"), [(TupleOutput, "tuple"), (DictOutput, "dict")])
def test_a_model_that_does_not_return_a_tensor_gets_a_clear_type_error(metric, model, kind):
    message = rf"must return a Tensor.*got {kind}.*wrap it in a function"
    with pytest.raises(TypeError, match=message):
        metric(model().eval(), X, MAPS, target=TARGET, **CHEAP.get(metric, {}))


# --- 5. boxes outside the image and the pointing game's tolerance -------------------------------


@pytest.mark.parametrize("game", POINTING_GAMES, ids=by_name)
@pytest.mark.parametrize(
    "outside", [(4, 0, 6, 2), (0, 4, 2, 6), (-3, 0, 0, 2), (0, -2, 2, 0), (10, 10, 20, 20)]
)
def test_a_box_entirely_outside_the_image_is_an_error(game, outside) -> None:
    boxes = [[(0, 0, 2, 2)], [(0, 0, 2, 2), outside]]
    message = r"example 1, box 1: .*outside the image of height 4 and width 4"
    with pytest.raises(ValueError, match=message):
        game(torch.ones(2, 1, 4, 4), boxes)


@pytest.mark.parametrize("game", POINTING_GAMES, ids=by_name)
def test_a_box_partly_inside_the_image_counts_its_inside_part(game) -> None:
    # (-5, -5, 2, 2) covers the top-left 2x2 pixels of the 4x4 image, as (0, 0, 2, 2) does
    peak = torch.zeros(1, 1, 4, 4)
    peak[..., 1, 1] = 1.0
    assert float(game(peak, [[(-5, -5, 2, 2)]])) == float(game(peak, [[(0, 0, 2, 2)]])) == 1.0


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1.0])
def test_tolerance_must_be_a_finite_distance(tolerance) -> None:
    whole_image = [[(0, 0, 4, 4)]]
    with pytest.raises(ValueError, match=r"tolerance .*finite number >= 0"):
        pointing_game(torch.ones(1, 1, 4, 4), whole_image, tolerance=tolerance)


@pytest.mark.parametrize("tolerance", [True, "15", None, torch.tensor(2.0)])
def test_tolerance_must_be_a_number(tolerance) -> None:
    with pytest.raises(TypeError, match="tolerance is a distance in pixels"):
        pointing_game(torch.ones(1, 1, 4, 4), [[(0, 0, 4, 4)]], tolerance=tolerance)


def test_numpy_tolerances_and_coordinates_are_numbers() -> None:
    peak = torch.zeros(1, 1, 4, 4)
    peak[..., 0, 3] = 1.0  # 1.5 px right of the box
    boxes = [[tuple(np.array([0, 0, 2, 2], dtype=np.int64))]]
    assert float(pointing_game(peak, boxes, tolerance=np.float32(1.5))) == 1.0


# --- 11. boxes of the wrong shape, images without their batch dimension ---------------------------


@pytest.mark.parametrize("game", POINTING_GAMES, ids=by_name)
@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (torch.tensor([0.0, 0.0, 2.0, 2.0]), r"boxes is a tensor of shape \(4,\).*unsqueeze\(0\)"),
        (torch.zeros(0, 4), r"boxes is a tensor of shape \(0, 4\)"),
        (torch.zeros(1, 5), r"boxes is a tensor of shape \(1, 5\).*\(N, 4\) tensor"),
        ([], r"boxes is empty.*\(N, 4\) tensor.*or a list of N lists of \(x1, y1, x2, y2\)"),
        ([0, 0, 2, 2], r"boxes is a flat list of 4 numbers.*\(N, 4\) tensor"),
        ([(0, 0, 2, 2)], r"boxes\[0\] is one box \(0, 0, 2, 2\), not a list of boxes"),
        ([[(0, 0, 2, 2)], 3], r"boxes\[1\] is int 3"),
        ([[(0, 0, float("nan"), 2)]], r"example 0, box 0: .*NaN or infinite"),
        ([[(0, 0, 2, 2), (0, 0, "2", 2)]], r"example 0, box 1: a box is \(x1, y1, x2, y2\)"),
        ([[(0, 0, 2, 2)], [(0, 0, 2, 2)]], r"boxes hold the boxes of 2 examples but .*1 maps"),
    ],
)
def test_boxes_of_the_wrong_shape_name_the_boxes(game, boxes, message) -> None:
    with pytest.raises(ValueError, match=message):
        game(torch.ones(1, 1, 4, 4), boxes)


def test_boxes_that_are_not_a_list_or_tensor() -> None:
    with pytest.raises(TypeError, match=r"boxes must be a tensor or a list, got dict"):
        energy_pointing_game(torch.ones(1, 1, 4, 4), {0: [(0, 0, 2, 2)]})


def test_boxes_as_an_n_k_4_tensor_give_k_boxes_per_example() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 1.0]]])  # union: 6 pixels
    result = energy_pointing_game(torch.ones(1, 1, 4, 4), boxes)
    assert float(result) == pytest.approx(6 / 16)


@pytest.mark.parametrize(
    ("input_size", "message"),
    [(4, "input_size is the images' \\(H, W\\)"), ((0, 4), r"input_size\[0\]"),
     ((4, 2.5), r"input_size\[1\]")],
)  # fmt: skip
def test_input_size_is_two_positive_integers(input_size, message) -> None:
    with pytest.raises(ValueError, match=message):
        energy_pointing_game(torch.ones(1, 1, 4, 4), [[(0, 0, 2, 2)]], input_size=input_size)


@pytest.mark.parametrize("metric", MODEL_METRICS, ids=by_name)
def test_an_image_without_its_batch_dimension_says_to_add_it(metric) -> None:
    model = NormAndDropout().eval()
    with pytest.raises(ValueError, match=r"\(3, 4, 4\).*batch dimension.*x\.unsqueeze\(0\)"):
        metric(model, X[0], MAPS[:1], target=0)


# --- 6. drawing a non-finite image ------------------------------------------------------------


NON_FINITE_IMAGES = {
    "NaN CHW tensor": torch.full((3, 4, 4), float("nan")),
    "inf HWC array": np.where(np.eye(4)[:, :, None] > 0, np.inf, 0.5).repeat(3, axis=2),
    "NaN in one pixel": np.pad(np.array([[[np.nan, 0.1, 0.2]]]), ((0, 3), (0, 3), (0, 0))),
}


@pytest.mark.parametrize("image", list(NON_FINITE_IMAGES))
def test_overlay_refuses_a_non_finite_image(image) -> None:
    with pytest.raises(ValueError, match="image contains NaN or inf"):
        overlay(torch.rand(1, 1, 2, 2), NON_FINITE_IMAGES[image])


def test_method_grid_refuses_a_non_finite_image() -> None:
    images = [torch.rand(3, 4, 4), NON_FINITE_IMAGES["NaN CHW tensor"]]
    with pytest.raises(ValueError, match="image contains NaN or inf"):
        method_grid(images, {"Score-CAM": torch.rand(2, 1, 2, 2)})


def test_overlay_still_draws_finite_float_and_uint8_images() -> None:
    for image in (torch.rand(3, 4, 4), np.full((4, 4, 3), 200, dtype=np.uint8)):
        _, axes = overlay(torch.rand(1, 1, 2, 2), image)
        assert axes.images  # Captum drew the image and the heat map
