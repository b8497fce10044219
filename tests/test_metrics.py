"""captum_sscam.metrics: hand-computed values, edge cases, and plain-loop references."""

from __future__ import annotations

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
from captum_sscam.metrics._substrates import gaussian_blur
from tests.tiny_models import SmallCNN


class RegionScore(nn.Module):
    """Logit 0 = weight * mean of channel 0 over the top-left 2x2 pixels of a 4x4
    image - mean over the other pixels times ``outside``; logit 1 = 0."""

    def __init__(self, weight: float = 1.0, outside: float = 0.0) -> None:
        super().__init__()
        self.weight, self.outside = weight, outside
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        region = torch.zeros(4, 4, dtype=torch.bool)
        region[:2, :2] = True
        inside = x[:, 0][:, region].mean(1)
        rest = x[:, 0][:, ~region].mean(1)
        logit = self.weight * inside - self.outside * rest
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


ONES = torch.ones(1, 1, 4, 4)
RIGHT = torch.zeros(1, 1, 4, 4)
RIGHT[..., :2, :2] = 1.0  # the region first
WRONG = 1.0 - RIGHT  # the region last


def logit_area(fn, attributions, step=0.25, **kwargs):
    return fn(RegionScore(), ONES, attributions, target=0, step=step, score="logit", **kwargs)


# --- deletion / insertion: hand-computed -------------------------------------------------------


def test_deletion_exactly_right_and_exactly_wrong_maps():
    # step 0.25 = 4 of 16 pixels; fractions 0, .25, .5, .75, 1.
    # Right: scores 1, 0, 0, 0, 0 -> area .25 * (1 + 0) / 2 = 0.125.
    assert float(logit_area(deletion_auc, RIGHT)) == pytest.approx(0.125)
    # Wrong: scores 1, 1, 1, 1, 0 -> .25 * (1 + 1 + 1 + .5) = 0.875.
    assert float(logit_area(deletion_auc, WRONG)) == pytest.approx(0.875)


def test_insertion_exactly_right_and_exactly_wrong_maps():
    # Zeros substrate: right 0, 1, 1, 1, 1 -> .25 * (.5 + 3) = .875; wrong 0, 0, 0, 0, 1 -> .125.
    right = logit_area(insertion_auc, RIGHT, substrate="zeros")
    wrong = logit_area(insertion_auc, WRONG, substrate="zeros")
    assert float(right) == pytest.approx(0.875)
    assert float(wrong) == pytest.approx(0.125)


def test_one_pixel_per_step_gives_the_same_area():
    # 16 steps: 1, .75, .5, .25, 0, ... -> (1/16) * (.875 + .625 + .375 + .125) = 0.125.
    result = logit_area(deletion_auc, RIGHT, step=1 / 16, return_curves=True)
    assert result.scores.shape == (1, 17)
    assert result.scores[0, :5].tolist() == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    assert float(result.auc) == pytest.approx(0.125)


def test_ties_and_an_all_zero_map_follow_raster_order():
    # Raster order deletes pixels 0, 1 (in the region), 2, 3 (not), 4, 5 (in): scores
    # 1, .75, .5, .5, .5, .25, 0, ... -> (1/16) * (.875 + .625 + .5 + .5 + .375 + .125) = 3/16.
    zero_map = torch.zeros(1, 1, 4, 4)
    assert float(logit_area(deletion_auc, zero_map, step=1 / 16)) == pytest.approx(3 / 16)


def test_constant_and_tensor_substrates():
    # Deleted pixels become 0.5: scores 1, .5, .5, .5, .5 -> .25 * (.75 + 1.5) = 0.5625.
    constant = logit_area(deletion_auc, RIGHT, substrate=0.5)
    tensor = logit_area(deletion_auc, RIGHT, substrate=torch.full((1, 1, 1, 1), 0.5))
    assert float(constant) == pytest.approx(0.5625)
    assert float(tensor) == pytest.approx(0.5625)


def test_layer_resolution_map_is_upsampled():
    # A 2x2 map with the top-left cell on: bilinear upsampling ranks the region's four
    # pixels (1, .75, .75, .5625) above every other pixel (<= .25), so it is "right".
    layer_map = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(logit_area(deletion_auc, layer_map)) == pytest.approx(0.125)


def test_input_attributions_sum_their_channels():
    # (N, C, H, W) attributions (IG, Saliency): channel 0 points at the region, channel 1
    # points away half as strongly; their sum still ranks the region first.
    attributions = torch.cat([2 * RIGHT, WRONG], dim=1)
    assert float(logit_area(deletion_auc, attributions)) == pytest.approx(0.125)
    # A tuple (Captum's output for tuple inputs) and (N, H, W) maps are accepted too.
    assert float(logit_area(deletion_auc, (RIGHT,))) == pytest.approx(0.125)
    assert float(logit_area(deletion_auc, RIGHT[:, 0])) == pytest.approx(0.125)


def test_fractions_end_at_one_when_the_step_does_not_divide():
    # 16 pixels at step 0.3 -> ceil(4.8) = 5 per step: counts 0, 5, 10, 15, 16.
    result = logit_area(deletion_auc, RIGHT, step=0.3, return_curves=True)
    assert result.fractions.tolist() == pytest.approx([0, 5 / 16, 10 / 16, 15 / 16, 1])
    assert float(result.auc) == pytest.approx(
        float(torch.trapezoid(result.scores, result.fractions))
    )


# --- batching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [None, 1, 3, 7])
def test_steps_of_all_examples_are_batched_together(batch):
    model = RegionScore()
    inputs = torch.rand(3, 1, 4, 4)
    maps = torch.rand(3, 1, 4, 4)
    result = deletion_auc(
        model, inputs, maps, target=0, step=0.25, score="logit", max_examples_per_batch=batch,
        return_curves=True,
    )  # fmt: skip
    items = 3 * 5  # 3 examples x 5 steps
    # one probe forward of one image learns the output's shape for the target
    assert model.calls == 1 + (1 if batch is None else -(-items // batch))
    expected = deletion_auc(RegionScore(), inputs, maps, target=0, step=0.25, score="logit")
    assert torch.allclose(result.auc, expected)


# --- deletion / insertion: agreement with a plain loop ------------------------------------------


def plain_area(model, images, maps, targets, step, substrate, deletion):
    """One image, one step, one forward at a time; numpy sort; softmax probability."""
    areas = []
    for n in range(images.shape[0]):
        image, saliency = images[n], maps[n].sum(0).flatten().numpy()
        order = np.argsort(-saliency, kind="stable")
        per_step = int(np.ceil(step * saliency.size - 1e-9))
        counts = [*range(0, saliency.size, per_step), saliency.size]
        scores = []
        for count in counts:
            chosen = torch.zeros(saliency.size, dtype=torch.bool)
            chosen[torch.from_numpy(order[:count].copy())] = True
            chosen = chosen.view(image.shape[1:])
            if deletion:
                current = torch.where(chosen, substrate[n], image)
            else:
                current = torch.where(chosen, image, substrate[n])
            with torch.no_grad():
                probabilities = torch.softmax(model(current[None]), dim=1)[0]
            scores.append(float(probabilities[targets[n]]))
        areas.append(np.trapezoid(scores, np.array(counts) / saliency.size))
    return torch.tensor(areas, dtype=torch.float32)


def test_deletion_and_insertion_match_a_plain_loop():
    model = SmallCNN().eval()
    images = torch.randn(2, 3, 8, 8)
    maps = torch.randn(2, 3, 8, 8)  # input attributions with channels
    targets = [1, 3]
    zeros = torch.zeros_like(images)
    blurred = gaussian_blur(images)
    got_deletion = deletion_auc(model, images, maps, targets, step=0.05, max_examples_per_batch=5)
    got_insertion = insertion_auc(model, images, maps, targets, step=0.05)
    want_deletion = plain_area(model, images, maps, targets, 0.05, zeros, deletion=True)
    want_insertion = plain_area(model, images, maps, targets, 0.05, blurred, deletion=False)
    assert torch.allclose(got_deletion, want_deletion, atol=1e-5)
    assert torch.allclose(got_insertion, want_insertion, atol=1e-5)


def test_target_none_explains_the_top_class():
    model = SmallCNN().eval()
    images = torch.randn(2, 3, 8, 8)
    maps = torch.rand(2, 1, 4, 4)
    top = model(images).argmax(1)
    assert torch.equal(
        deletion_auc(model, images, maps, step=0.1),
        deletion_auc(model, images, maps, top, step=0.1),
    )


def test_additional_forward_args_follow_their_example():
    def model(x: Tensor, scale: Tensor) -> Tensor:
        return RegionScore()(x) * scale.view(-1, 1)

    scale = torch.tensor([1.0, 3.0])
    inputs = ONES.repeat(2, 1, 1, 1)
    maps = RIGHT.repeat(2, 1, 1, 1)
    result = deletion_auc(
        model, inputs, maps, 0, (scale,), step=0.25, score="logit", max_examples_per_batch=3
    )
    assert result.tolist() == pytest.approx([0.125, 0.375])


# --- blur -------------------------------------------------------------------------------------


def test_blur_is_an_11_tap_sigma_5_gaussian():
    tv = pytest.importorskip("torchvision.transforms.functional")
    images = torch.rand(2, 3, 24, 24)
    ours = gaussian_blur(images)
    theirs = tv.gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0])
    # torchvision pads by reflection, we replicate the edge: the interiors must agree.
    assert torch.allclose(ours[..., 5:-5, 5:-5], theirs[..., 5:-5, 5:-5], atol=1e-5)
    constant = torch.full((1, 1, 6, 6), 0.3)
    assert torch.allclose(gaussian_blur(constant), constant)


# --- Average Drop / Increase in Confidence ------------------------------------------------------


def test_average_drop_and_increase_by_hand():
    model = RegionScore(weight=2.0, outside=1.0)  # Y = 2 * 1 - 1 = 1 on the ones image
    # Right map: normalised mask keeps the region only -> O = 2 > Y: no drop, an increase.
    assert float(average_drop(model, ONES, RIGHT, 0, score="logit")) == pytest.approx(0.0)
    assert float(increase_in_confidence(model, ONES, RIGHT, 0, score="logit")) == 100.0
    # Wrong map: keeps everything but the region -> O = 0 - 1 = -1: drop min(1, 2/1) = 200 %.
    assert float(average_drop(model, ONES, WRONG, 0, score="logit")) == pytest.approx(200.0)
    assert float(increase_in_confidence(model, ONES, WRONG, 0, score="logit")) == 0.0
    # Min-max normalisation: 0.5 on the region, 1 elsewhere -> the region's mask is 0.
    half = 0.5 + 0.5 * WRONG
    assert float(average_drop(model, ONES, half, 0, score="logit")) == pytest.approx(200.0)


def test_all_zero_map_keeps_nothing():
    model = RegionScore()  # Y = 1, O = score of a black image = 0
    zero_map = torch.zeros(1, 1, 4, 4)
    assert float(average_drop(model, ONES, zero_map, 0, score="logit")) == pytest.approx(100.0)


def test_average_drop_rejects_a_non_positive_score():
    with pytest.raises(ValueError, match="Y <= 0"):
        average_drop(RegionScore(weight=-1.0), ONES, RIGHT, 0, score="logit")


def test_confidence_metrics_match_a_plain_loop():
    model = SmallCNN().eval()
    images = torch.randn(3, 3, 8, 8)
    maps = torch.randn(3, 1, 4, 4)
    targets = torch.tensor([0, 2, 4])
    drops, increases = [], []
    for n in range(3):
        up = torch.nn.functional.interpolate(maps[n : n + 1], size=(8, 8), mode="bilinear")[0, 0]
        mask = (up - up.min()) / (up.max() - up.min())
        with torch.no_grad():
            y = float(torch.softmax(model(images[n : n + 1]), 1)[0, targets[n]])
            o = float(torch.softmax(model(images[n : n + 1] * mask), 1)[0, targets[n]])
        drops.append(100 * max(0.0, y - o) / y)
        increases.append(100.0 * (o > y))
    got_drop = average_drop(model, images, maps, targets, max_examples_per_batch=2)
    assert got_drop.tolist() == pytest.approx(drops, abs=1e-4)
    assert increase_in_confidence(model, images, maps, targets).tolist() == increases


# --- pointing games -----------------------------------------------------------------------------

BOX = [[(0, 0, 2, 2)]]  # the top-left 2x2 pixels of a 4x4 image


def test_energy_pointing_game_by_hand():
    assert float(energy_pointing_game(torch.ones(1, 1, 4, 4), BOX)) == pytest.approx(4 / 16)
    peaked = torch.ones(1, 1, 4, 4)
    peaked[..., 0, 0] = 3.0
    assert float(energy_pointing_game(peaked, BOX)) == pytest.approx(6 / 18)
    # Negative evidence carries no energy.
    signed = RIGHT - 5 * WRONG
    assert float(energy_pointing_game(signed, BOX)) == pytest.approx(1.0)
    # An all-zero map scores the box's share of the image (chance).
    assert float(energy_pointing_game(torch.zeros(1, 1, 4, 4), BOX)) == pytest.approx(0.25)


def test_energy_pointing_game_upsamples_a_layer_map():
    # [[1, 1], [0, 0]] -> rows 1, .75, .25, 0; the top half holds 1.75 of 2.
    layer_map = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    top_half = [[(0, 0, 4, 2)]]
    result = energy_pointing_game(layer_map, top_half, input_size=(4, 4))
    assert float(result) == pytest.approx(1.75 / 2)


def test_several_boxes_count_as_their_union_and_tensor_boxes():
    two_boxes = [[(0, 0, 2, 2), (0, 0, 4, 1)]]  # union: 4 + 2 = 6 pixels
    assert float(energy_pointing_game(torch.ones(1, 1, 4, 4), two_boxes)) == pytest.approx(6 / 16)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 2.0, 4.0, 4.0]])
    maps = torch.cat([RIGHT, RIGHT])
    assert energy_pointing_game(maps, boxes).tolist() == pytest.approx([1.0, 0.0])


def test_pointing_game_by_hand():
    peak = torch.zeros(1, 1, 4, 4)
    peak[..., 0, 3] = 1.0  # centre (3.5, 0.5): 1.5 px right of the box
    assert float(pointing_game(peak, BOX, tolerance=0)) == 0.0
    assert float(pointing_game(peak, BOX, tolerance=1.5)) == 1.0
    assert float(pointing_game(peak, BOX, tolerance=1.4)) == 0.0
    # Ties: the share of the maxima that hit; an all-zero map: the box's share.
    two_peaks = peak.clone()
    two_peaks[..., 0, 0] = 1.0
    assert float(pointing_game(two_peaks, BOX, tolerance=0)) == pytest.approx(0.5)
    assert float(pointing_game(torch.zeros(1, 1, 4, 4), BOX, tolerance=0)) == pytest.approx(0.25)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": 0}, "step"),
        ({"step": 1.5}, "step"),
        ({"substrate": "noise"}, "substrate"),
        ({"substrate": torch.zeros(2, 2, 3)}, "substrate tensor has shape .* broadcast"),
        ({"substrate": torch.full((1, 1, 1, 1), float("inf"))}, "substrate tensor contains NaN"),
        ({"score": "log"}, "score"),
        ({"max_examples_per_batch": 0}, "max_examples_per_batch"),
        ({"attributions": torch.zeros(2, 1, 4, 4)}, "2 maps"),
        ({"attributions": torch.full((1, 1, 4, 4), float("nan"))}, "NaN"),
        ({"attributions": torch.zeros(1, 4)}, "shape"),
        ({"inputs": (ONES, ONES)}, "tuple of 2"),
        ({"inputs": torch.ones(4, 4)}, "N, C, H, W"),
        ({"target": [0, 1]}, "list of 2"),
    ],
)
def test_bad_arguments_are_rejected_clearly(kwargs, message):
    arguments = {"inputs": ONES, "attributions": RIGHT, "target": 0}
    arguments.update(kwargs)
    inputs, attributions = arguments.pop("inputs"), arguments.pop("attributions")
    with pytest.raises((ValueError, TypeError), match=message):
        deletion_auc(RegionScore(), inputs, attributions, **arguments)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [([[]], "no boxes"), ([[(2, 0, 1, 2)]], "empty"), ([[(0, 0, 1)]], "x1, y1, x2, y2")],
)
def test_bad_boxes_are_rejected_clearly(boxes, message):
    with pytest.raises(ValueError, match=message):
        energy_pointing_game(RIGHT, boxes)


def test_probability_needs_class_scores():
    def scalar_model(x: Tensor) -> Tensor:
        return x.flatten(1).sum(1, keepdim=True)

    with pytest.raises(ValueError, match="score='logit'"):
        deletion_auc(scalar_model, ONES, RIGHT, target=0)
