"""The recipe for Captum's infidelity and sensitivity_max with layer methods."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor

from captum_sscam import ScoreCAM
from captum_sscam.metrics import input_shaped, tuple_explanation
from tests.tiny_models import SmallCNN

PATTERN = torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)


def fixed_perturbation(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Infidelity's perturb_func: a fixed pattern I, perturbed input x - I."""
    perturbation = 0.1 * PATTERN.expand_as(inputs)
    return perturbation, inputs - perturbation


def fixed_shift(inputs: Tensor, radius: float) -> Tensor:
    """sensitivity_max's perturb_func: a fixed shift x + radius * pattern."""
    return inputs + radius * PATTERN.expand_as(inputs)


def test_input_shaped_upsamples_and_repeats_over_channels():
    maps = torch.rand(2, 1, 4, 4)
    inputs = torch.rand(2, 3, 8, 8)
    (shaped,) = input_shaped(maps, inputs)
    assert shaped.shape == inputs.shape
    upsampled = LayerAttribution.interpolate(maps, (8, 8), "bilinear")
    for channel in range(3):
        assert torch.equal(shaped[:, channel : channel + 1], upsampled)
    (same,) = input_shaped(inputs, inputs)  # input attributions pass through
    assert same is inputs
    with pytest.raises(ValueError, match="neither shaped like"):
        input_shaped(torch.rand(2, 2, 4, 4), inputs)


def test_infidelity_of_a_layer_method_matches_its_formula():
    model = SmallCNN().eval()
    inputs = torch.randn(2, 3, 8, 8)
    target = torch.tensor([1, 4])
    maps = ScoreCAM(model, model.act).attribute(inputs, target=target)
    attributions = input_shaped(maps, inputs)
    got = infidelity(
        model, fixed_perturbation, inputs, attributions, target=target, n_perturb_samples=2
    )
    # Yeh et al. 2019: E[(I . a - (f(x) - f(x - I)))^2], the same fixed I in each sample.
    perturbation, perturbed = fixed_perturbation(inputs)
    with torch.no_grad():
        drop = (model(inputs) - model(perturbed)).gather(1, target.view(-1, 1)).squeeze(1)
    dot = (perturbation * attributions[0]).flatten(1).sum(1)
    assert torch.allclose(got, (dot - drop) ** 2, rtol=1e-4, atol=1e-7)


def test_sensitivity_max_of_a_layer_method_with_a_batch():
    model = SmallCNN().eval()
    inputs = torch.randn(2, 3, 8, 8)
    target = torch.tensor([0, 2])
    attribute = LayerGradCam(model, model.act).attribute
    got = sensitivity_max(
        tuple_explanation(attribute), inputs, perturb_func=fixed_shift, perturb_radius=0.05,
        n_perturb_samples=1, target=target,
    )  # fmt: skip
    # Yeh et al. 2019: max over perturbations of ||e(x + d) - e(x)|| / ||e(x)||, per example.
    original = attribute(inputs, target=target)
    shifted = attribute(fixed_shift(inputs, 0.05), target=target)
    want = (shifted - original).flatten(1).norm(dim=1) / original.flatten(1).norm(dim=1)
    assert got.shape == (2,)
    assert torch.allclose(got, want, rtol=1e-4)
    # The pitfall the wrapper removes: with the bare Tensor, Captum iterates over the
    # batch rows as if they were inputs, and the numbers are wrong.
    bare = sensitivity_max(
        attribute, inputs, perturb_func=fixed_shift, perturb_radius=0.05, n_perturb_samples=1,
        target=target,
    )  # fmt: skip
    assert not torch.allclose(bare, want, rtol=1e-2)


def test_tuple_explanation_keeps_the_methods_name_and_results():
    model = SmallCNN().eval()
    method = LayerGradCam(model, model.act)
    wrapped = tuple_explanation(method.attribute)
    inputs = torch.randn(1, 3, 8, 8)
    (result,) = wrapped(inputs, target=3)
    assert torch.equal(result, method.attribute(inputs, target=3))
    assert wrapped.__name__ == "attribute"
