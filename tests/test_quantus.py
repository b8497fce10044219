"""Quantus 0.6.0 through quantus_explain_func: every catalogue method's maps in Quantus's contract,
the layer resolved by name on MPRT's copies, Quantus's PointingGame, AttributionLocalisation,
MPRT, RandomLogit and ROAD run on a small CNN, and Quantus's AttributionLocalisation equal to this
package's energy_pointing_game on the same maps and boxes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import quantus
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerGradCam
from torch import Tensor

from captum_sscam import (
    ATTRIBUTION_METHODS,
    GroupScoreCAM,
    IntegratedScoreCAM,
    ScoreCAM,
    SmoothedScoreCAM,
)
from captum_sscam.metrics import (
    energy_pointing_game,
    pointing_game,
    quantus_explain_func,
    road_perturb_func,
)
from tests.test_metrics_hardening import assert_unchanged, snapshot
from tests.tiny_models import SmallCNN

SIZE = 16
X = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
BOXES = [[(2.0, 3.0, 9.0, 12.0)], [(0.0, 0.0, 8.0, 8.0)], [(5.0, 5.0, 16.0, 16.0)],
         [(1.0, 9.0, 15.0, 15.0), (10.0, 0.0, 14.0, 4.0)]]  # fmt: skip


def model_and_targets() -> tuple[SmallCNN, np.ndarray]:
    model = SmallCNN(channels=6, classes=5).eval()
    with torch.no_grad():
        return model, model(X).argmax(dim=1).numpy()


def box_masks(boxes: list[list[tuple[float, ...]]]) -> np.ndarray:
    """(N, 1, H, W) masks: a pixel is inside when its centre lies in one of the boxes."""
    centres = np.arange(SIZE) + 0.5
    masks = np.zeros((len(boxes), 1, SIZE, SIZE))
    for index, example in enumerate(boxes):
        for x1, y1, x2, y2 in example:
            rows = (centres >= y1) & (centres <= y2)
            columns = (centres >= x1) & (centres <= x2)
            masks[index, 0] += np.outer(rows, columns)
    return (masks > 0).astype(float)


S = box_masks(BOXES)

# Each method's own maps, built directly from its class (not through the catalogue).
SETTINGS: dict[str, dict[str, Any]] = {
    "ig": {"n_steps": 4},
    "grad-cam": {},
    "score-cam": {},
    "ss-cam": {"nt_samples": 2},
    "ss-cam-input": {"nt_samples": 2},
    "is-cam": {"n_steps": 2},
    "group-score-cam": {"n_groups": 3},  # overrides the catalogue's fixed 32
}
DIRECT: dict[str, Callable[[SmallCNN, Tensor, Tensor], Tensor]] = {
    "ig": lambda m, x, y: IntegratedGradients(m).attribute(x, target=y, n_steps=4).sum(1, True),
    "grad-cam": lambda m, x, y: LayerGradCam(m, m.layer).attribute(
        x, target=y, relu_attributions=True
    ),
    "score-cam": lambda m, x, y: ScoreCAM(m, m.layer).attribute(x, target=y),
    "ss-cam": lambda m, x, y: SmoothedScoreCAM(m, m.layer).attribute(
        x, target=y, nt_samples=2, noise_on="mask", generator=torch.Generator().manual_seed(0)
    ),
    "ss-cam-input": lambda m, x, y: SmoothedScoreCAM(m, m.layer).attribute(
        x, target=y, nt_samples=2, noise_on="input", generator=torch.Generator().manual_seed(0)
    ),
    "is-cam": lambda m, x, y: IntegratedScoreCAM(m, m.layer).attribute(x, target=y, n_steps=2),
    "group-score-cam": lambda m, x, y: GroupScoreCAM(m, m.layer).attribute(
        x, target=y, n_groups=3
    ),
}


def test_the_settings_cover_the_catalogue() -> None:
    assert set(DIRECT) == set(SETTINGS) == set(ATTRIBUTION_METHODS)


@pytest.mark.parametrize("key", sorted(DIRECT))
def test_maps_are_the_methods_own_at_input_resolution(key: str) -> None:
    model, y = model_and_targets()
    maps = quantus_explain_func(model, X.numpy(), y, method=key, layer="layer", **SETTINGS[key])
    assert isinstance(maps, np.ndarray) and maps.dtype == np.float32
    assert maps.shape == (4, 1, SIZE, SIZE)
    own = DIRECT[key](model, X, torch.as_tensor(y)).detach()
    expected = F.interpolate(own, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-6)
    shaped = quantus_explain_func(
        model, X.numpy(), y, method=key, layer="layer", shape="input", **SETTINGS[key]
    )
    assert shaped.shape == (4, 3, SIZE, SIZE)
    for channel in range(3):
        np.testing.assert_array_equal(shaped[:, channel], maps[:, 0])


def test_the_layer_resolves_by_name_on_a_copy_and_the_model_is_left_as_it_was() -> None:
    model, y = model_and_targets()
    model.train()
    before = snapshot(model)
    duplicate = copy.deepcopy(model)
    on_copy = quantus_explain_func(duplicate, X.numpy(), y, method="grad-cam", layer="layer")
    assert_unchanged(model, before)
    assert duplicate.training  # restored on the copy too
    np.testing.assert_allclose(
        on_copy, quantus_explain_func(model.eval(), X.numpy(), y, method="grad-cam", layer="layer")
    )


def test_ss_cam_draws_the_same_noise_at_every_call_unless_the_seed_is_none() -> None:
    model, y = model_and_targets()

    def explain(seed: int | None) -> np.ndarray:
        return quantus_explain_func(model, X, y, method="ss-cam", layer="layer", nt_samples=2,
                                    stdevs=0.5, seed=seed)  # fmt: skip

    np.testing.assert_array_equal(explain(0), explain(0))
    assert not np.array_equal(explain(None), explain(None))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"method": "sscam"}, ValueError, "method must be a key of"),
        ({"layer": None}, ValueError, "needs layer="),
        ({"layer": "layer5"}, ValueError, "layer 'layer5' names no module"),
        ({"layer": "model"}, TypeError, "not the module"),
        ({"shape": "channels"}, ValueError, "shape must be one of"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_arguments_get_clear_errors(arguments, error, message) -> None:
    model, y = model_and_targets()
    arguments = {"method": "score-cam", "layer": "layer", **arguments}
    if arguments["layer"] == "model":
        arguments["layer"] = model.layer
    with pytest.raises(error, match=message):
        quantus_explain_func(model, X.numpy(), y, **arguments)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) images"):
        quantus_explain_func(model, X[0].numpy(), y, method="score-cam", layer="layer")


# --- Quantus's metrics through it ---------------------------------------------------------------

SCORE_CAM = {"method": "score-cam", "layer": "layer"}


def run(metric: Any, **arguments: Any) -> Any:
    model, y = model_and_targets()
    arguments = {"explain_func_kwargs": SCORE_CAM, **arguments}
    return metric(model=model, x_batch=X.numpy(), y_batch=y, explain_func=quantus_explain_func,
                  device="cpu", **arguments)  # fmt: skip


def test_quantus_pointing_game_agrees_with_the_packages() -> None:
    model, y = model_and_targets()
    maps = quantus_explain_func(model, X.numpy(), y, **SCORE_CAM)
    hits = run(quantus.PointingGame(disable_warnings=True), a_batch=None, s_batch=S)
    # Quantus: a hit when any of the tied peak pixels is on the object; this package: the share
    # of them that is (the upsampled 8 x 8 maps have plateaus of tied peaks)
    ours = pointing_game(torch.from_numpy(maps), BOXES, tolerance=0)
    assert [bool(hit) for hit in hits] == (ours > 0).tolist()
    assert (ours > 0).any() and (ours == 0).any()  # hits and misses both occur here


@pytest.mark.parametrize("key", ["score-cam", "ig"])
def test_quantus_attribution_localisation_equals_energy_pointing_game(key: str) -> None:
    model, y = model_and_targets()
    explain = {"method": key, "layer": "layer", **SETTINGS[key]}
    maps = quantus_explain_func(model, X.numpy(), y, **explain)
    if key == "ig":
        assert (maps < 0).any() and (maps > 0).any()  # signed: only the positive part counts
    metric = quantus.AttributionLocalisation(
        abs=False, normalise=False, positive_attributions=True, disable_warnings=True
    )
    theirs = run(metric, a_batch=None, s_batch=S, explain_func_kwargs=explain)
    ours = energy_pointing_game(torch.from_numpy(maps), BOXES)
    np.testing.assert_allclose(np.asarray(theirs, dtype=float), ours.numpy(), rtol=1e-6)
    assert float(ours.min()) > 0 and float(ours.max()) < 1


def test_quantus_mprt_explains_its_randomised_copies_by_the_layers_name() -> None:
    result = run(quantus.MPRT(disable_warnings=True), a_batch=None, s_batch=None)
    assert list(result) == ["original", "head", "layer", "stem"]  # top down, cascading
    assert result["original"] == pytest.approx([1.0] * 4)
    values = np.array([result[name] for name in ("head", "layer", "stem")], dtype=float)
    assert np.isfinite(values).all() and (np.abs(values) <= 1 + 1e-9).all()
    assert not np.allclose(values[1:], 1.0)  # randomising the explained layer changes the maps


def test_quantus_random_logit_runs() -> None:
    scores = run(quantus.RandomLogit(num_classes=5, disable_warnings=True), a_batch=None)
    values = np.asarray(scores, dtype=float)
    assert values.shape == (4,) and np.isfinite(values).all() and (np.abs(values) <= 1).all()


def test_quantus_road_fails_on_three_channels_by_default_and_runs_with_the_wrapper() -> None:
    percentages = [10, 50, 90]
    with pytest.raises(IndexError, match="out of bounds"):
        run(quantus.ROAD(percentages=percentages, disable_warnings=True), a_batch=None)
    road = quantus.ROAD(
        percentages=percentages, perturb_func=road_perturb_func, disable_warnings=True
    )
    result = run(road, a_batch=None, explain_func_kwargs={**SCORE_CAM, "shape": "input"})
    assert list(result) == percentages
    assert all(0.0 <= value <= 1.0 for value in result.values())


def test_road_perturb_func_imputes_the_top_pixels_of_a_map_repeated_over_the_channels() -> None:
    generator = np.random.default_rng(0)
    image = generator.random((3, 6, 6))
    saliency = generator.permutation(36).reshape(6, 6).astype(float)  # distinct values
    repeated = np.broadcast_to(saliency, (3, 6, 6)).reshape(-1)  # what ROAD ranks
    for percentage in (25, 50):
        count = int(repeated.size * percentage / 100)  # ROAD's share of the C x H x W positions
        top = np.argsort(-repeated)[:count]
        imputed = road_perturb_func(image, top, noise=0.0)
        changed = (imputed != image).any(axis=0)
        expected = saliency >= np.sort(saliency.reshape(-1))[::-1][count // 3 - 1]
        np.testing.assert_array_equal(changed, expected)
        assert changed.sum() == 36 * percentage // 100
