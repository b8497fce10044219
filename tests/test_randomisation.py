"""The model parameter randomisation test: correlations checked against scipy and scikit-image,
a map that ignores the model keeps correlation 1, a linear model whose randomised map is known in
closed form, seeded re-initialisation, constant maps flagged, the user's model left as it was,
and clear errors for bad arguments."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from captum.attr import Saliency
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import Tensor, nn
from torchvision.models import resnet18

from captum_sscam import ScoreCAM
from captum_sscam.metrics import Randomisation, model_randomisation, randomisation_layers
from captum_sscam.metrics._similarity import spearman, ssim
from tests.test_metrics_hardening import NormAndDropout, assert_unchanged, snapshot, warnings_of

X = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
X_GRAD = X.clone().requires_grad_()  # for Saliency, which otherwise warns that it set the flag


class TwoLinear(nn.Module):
    """logits = head(hidden(flatten(x))): linear, so d logit_t / d x = (W_head W_hidden)[t]."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(48, 6, bias=False)
        self.head = nn.Linear(6, 3, bias=False)
        with torch.no_grad():  # positive, and unlike reset_parameters' U(-1/sqrt(in), 1/sqrt(in))
            weights = torch.rand(6, 48, generator=torch.Generator().manual_seed(0))
            self.hidden.weight.copy_(weights + 0.5)
            self.head.weight.copy_(torch.linspace(1.0, 3.0, 18).view(3, 6))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.hidden(x.flatten(1)))


class Intensity:
    """An "explanation" that ignores the model: each pixel's summed intensity."""

    def attribute(self, inputs: Tensor, target: Any = None, **kwargs: Any) -> Tensor:
        return inputs.sum(dim=1, keepdim=True)


class Gate(nn.Module):
    """A learned per-pixel gate; fresh (reset_parameters), it is all zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, 4, 4))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)


class GatedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()
        self.head = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head((x * self.gate.weight).mean(dim=(2, 3)))


class GatedMap:
    """The input's intensity times the model's gate: all zeros once the gate is re-initialised."""

    def __init__(self, model: GatedModel) -> None:
        self.model = model

    def attribute(self, inputs: Tensor, target: Any = None) -> Tensor:
        return inputs.sum(dim=1, keepdim=True) * self.model.gate.weight.detach()


def saliency(model: nn.Module) -> Saliency:
    return Saliency(model)


def stem_score_cam(model: nn.Module) -> ScoreCAM:
    return ScoreCAM(model, model.stem)


def linear_map(state: dict[str, Tensor], target: int) -> Tensor:
    """The signed gradient map of TwoLinear with these weights, (3, 4, 4)."""
    return (state["head.weight"] @ state["hidden.weight"])[target].view(3, 4, 4)


# --- the comparisons, against independent implementations ----------------------------------


def test_spearman_averages_ties_as_scipy() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 1, 6, 5, generator=generator)
    references = maps + 0.5 * torch.rand(3, 1, 6, 5, generator=generator)
    maps[1] = torch.round(maps[1] * 3)  # many ties
    references[2] = torch.round(references[2] * 2)
    rho = spearman(maps, references)
    for index in range(3):
        expected = spearmanr(maps[index].flatten(), references[index].flatten()).statistic
        assert rho[index].item() == pytest.approx(expected, abs=1e-7)
    # [1, 2, 2, 3] has ranks [1, 2.5, 2.5, 4]: perfectly rank-correlated with itself
    tied = torch.tensor([[[[1.0, 2.0], [2.0, 3.0]]]])
    assert spearman(tied, tied * 10).item() == pytest.approx(1.0)
    assert spearman(tied, -tied).item() == pytest.approx(-1.0)


def test_spearman_is_nan_for_a_constant_map() -> None:
    maps = torch.stack([torch.zeros(1, 3, 3), torch.rand(1, 3, 3)])
    rho = spearman(maps, torch.rand(2, 1, 3, 3))
    assert math.isnan(rho[0].item()) and not math.isnan(rho[1].item())


@pytest.mark.parametrize("size", [(16, 20), (7, 7), (5, 9)], ids=str)
def test_ssim_is_wang_et_al_as_scikit_image(size) -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 1, *size, generator=generator).double()
    references = (maps + 0.4 * torch.rand(2, 1, *size, generator=generator)) * 3 - 1
    side = min(size) if min(size) % 2 else min(size) - 1
    window = min(11, side)
    values = ssim(maps, references)
    for index in range(2):

        def scaled(map_: Tensor) -> Any:
            return ((map_ - map_.min()) / (map_.max() - map_.min()))[0].numpy()

        expected = structural_similarity(
            scaled(maps[index]),
            scaled(references[index]),
            gaussian_weights=True,
            sigma=1.5 * window / 11,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert values[index].item() == pytest.approx(expected, abs=1e-9)
    assert ssim(maps, maps).tolist() == pytest.approx([1.0, 1.0])


# --- what the test measures ------------------------------------------------------------------


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_an_explanation_that_ignores_the_model_keeps_correlation_one(order) -> None:
    model = TwoLinear()
    result = model_randomisation(model, lambda m: Intensity(), X, 0, order=order)
    assert result.layers == ("head", "hidden")
    assert result.spearman.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert result.spearman_abs.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    torch.testing.assert_close(result.ssim, torch.ones(2, 2, dtype=torch.float64))
    assert not result.constant.any() and not result.original_constant.any()


def test_the_randomised_maps_of_a_linear_model_are_its_new_gradients() -> None:
    model = TwoLinear()
    states: list[dict[str, Tensor]] = []

    def make_method(copy_: nn.Module) -> Saliency:
        states.append({name: value.clone() for name, value in copy_.state_dict().items()})
        return Saliency(copy_)

    target = 1
    result = model_randomisation(
        model, make_method, X_GRAD, target, attribute_kwargs={"abs": False}, return_maps=True
    )
    original, head_random, all_random = states
    assert torch.equal(original["head.weight"], model.head.weight)
    # step 1 re-initialised the head only (reset_parameters: |w| <= 1/sqrt(6)); step 2 also hidden
    assert not torch.equal(head_random["head.weight"], original["head.weight"])
    assert head_random["head.weight"].abs().max() <= 1 / math.sqrt(6)
    assert torch.equal(head_random["hidden.weight"], original["hidden.weight"])
    assert torch.equal(all_random["head.weight"], head_random["head.weight"])  # cumulative
    assert all_random["hidden.weight"].abs().max() <= 1 / math.sqrt(48)
    assert result.original is not None and result.maps is not None
    for maps, state in zip([result.original, *result.maps], states, strict=True):
        expected = linear_map(state, target).expand(2, 3, 4, 4)
        torch.testing.assert_close(maps, expected)
    # the randomised maps are other maps: their ranks (checked against scipy) differ
    for step in range(2):
        for example in range(2):
            expected_rho = spearmanr(
                result.maps[step, example].flatten(), result.original[example].flatten()
            ).statistic
            assert result.spearman[step, example].item() == pytest.approx(expected_rho, abs=1e-7)
    assert (result.spearman < 0.9).all()


def test_independent_randomises_one_module_with_the_weights_the_cascade_gave_it() -> None:
    model = TwoLinear()
    runs: dict[str, list[dict[str, Tensor]]] = {"cascading": [], "independent": []}
    for order, states in runs.items():

        def make_method(copy_: nn.Module, states: list = states) -> Saliency:
            states.append({name: value.clone() for name, value in copy_.state_dict().items()})
            return Saliency(copy_)

        model_randomisation(model, make_method, X_GRAD, 0, order=order)
    original, head_only, hidden_only = runs["independent"]
    assert torch.equal(hidden_only["head.weight"], original["head.weight"])  # a fresh copy
    assert not torch.equal(hidden_only["hidden.weight"], original["hidden.weight"])
    cascade = runs["cascading"]
    assert torch.equal(head_only["head.weight"], cascade[1]["head.weight"])
    assert torch.equal(hidden_only["hidden.weight"], cascade[2]["hidden.weight"])


def test_seeded_runs_are_reproducible_and_seeds_differ() -> None:
    model = TwoLinear()

    def run(seed: int) -> Randomisation:
        return model_randomisation(
            model, saliency, X_GRAD, 0, seed=seed, attribute_kwargs={"abs": False}, return_maps=True
        )

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first.maps, again.maps) and torch.equal(first.spearman, again.spearman)
    assert torch.equal(first.ssim, again.ssim)
    assert not torch.equal(first.maps, other.maps)
    torch.testing.assert_close(first.original, other.original)


def test_original_maps_given_save_one_attribution_and_give_the_same_result() -> None:
    model, calls = TwoLinear(), []

    def make_method(copy_: nn.Module) -> Saliency:
        calls.append(copy_)
        return Saliency(copy_)

    kwargs = {"abs": False}
    computed = model_randomisation(model, make_method, X_GRAD, 2, attribute_kwargs=kwargs)
    original = Saliency(model).attribute(X_GRAD, target=2, abs=False)
    calls.clear()
    given = model_randomisation(
        model, make_method, X_GRAD, 2, attribute_kwargs=kwargs, original=original
    )
    assert len(calls) == 2  # the steps only
    assert torch.equal(given.spearman, computed.spearman) and torch.equal(given.ssim, computed.ssim)
    with pytest.raises(ValueError, match=r"original maps \(2, 3, 4, 3\)"):
        model_randomisation(model, saliency, X_GRAD, 2, original=original[..., :3])


class NoisyIntensity:
    """The input's intensity plus noise from the global generator and from ``generator``."""

    def attribute(self, inputs: Tensor, target: Any = None, generator: Any = None) -> Tensor:
        shape = inputs[:, :1].shape
        noise = torch.rand(shape) + torch.rand(shape, generator=generator)
        return inputs.sum(dim=1, keepdim=True) + noise


def test_every_step_draws_the_same_noise_and_the_random_state_is_left_alone() -> None:
    generator, model = torch.Generator().manual_seed(5), TwoLinear()
    before = torch.get_rng_state()
    result = model_randomisation(
        model, lambda m: NoisyIntensity(), X, 0, attribute_kwargs={"generator": generator}
    )
    assert result.spearman.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert torch.equal(torch.get_rng_state(), before)
    once = torch.Generator().manual_seed(5)
    torch.rand(2, 1, 4, 4, generator=once)  # the generator is left as one call leaves it
    assert torch.equal(generator.get_state(), once.get_state())


def test_a_map_destroyed_into_a_constant_is_flagged_not_a_bare_nan() -> None:
    model = GatedModel()
    result = model_randomisation(model, GatedMap, X, 0, layers=[model.head, model.gate])
    assert result.layers == ("head", "gate")
    assert result.constant.tolist() == [[False, False], [True, True]]
    assert result.spearman[0].tolist() == [1.0, 1.0]
    assert result.spearman[1].isnan().all() and result.spearman_abs[1].isnan().all()
    assert not result.original_constant.any()
    # SSIM stays defined: the zeros against the min-max scaled intensity
    zeros = torch.zeros(2, 1, 4, 4)
    torch.testing.assert_close(result.ssim[1], ssim(zeros, X.sum(1, keepdim=True)))
    summary = result.summary()
    assert "2. gate" in summary and "2 of 2 undefined (constant map)" in summary
    assert "undefined" in repr(result)


def test_a_constant_original_map_is_flagged_for_every_step() -> None:
    model = GatedModel()
    flat = torch.full((1, 3, 4, 4), 0.5)
    result = model_randomisation(model, lambda m: Intensity(), flat, 0)
    assert result.original_constant.tolist() == [True]
    assert result.spearman.isnan().all()
    assert "the original map of 1 example(s) is constant" in result.summary()


# --- the user's model -----------------------------------------------------------------------


def test_the_users_model_is_left_bit_identical_and_warned_once_at_the_callers_line() -> None:
    model = NormAndDropout()
    with torch.no_grad():
        model(torch.randn(8, 3, 8, 8) * 3 + 1)  # running statistics away from their defaults
    model.train()
    model.head.eval()
    model.stem.bias.requires_grad_(False)
    model.head.register_forward_hook(lambda *_: None)
    before, rng = snapshot(model), torch.get_rng_state()
    reference = copy.deepcopy(model).eval()
    result, caught, line = warnings_of(
        lambda: model_randomisation(model, stem_score_cam, X, [0, 2], return_maps=True)
    )
    notes = [w for w in caught if "training mode" in str(w.message)]
    assert len(notes) == 1
    assert (notes[0].filename, notes[0].lineno) == (__file__, line)  # the user's call
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert result.layers == ("head", "norm", "stem")
    # the original map is the eval-mode model's
    expected = ScoreCAM(reference, reference.stem).attribute(X, target=[0, 2])
    torch.testing.assert_close(result.original, expected)


def test_the_users_model_is_left_bit_identical_when_a_step_fails() -> None:
    model = TwoLinear()
    before = snapshot(model)
    calls = []

    def make_method(copy_: nn.Module) -> Saliency:
        calls.append(copy_)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return Saliency(copy_)

    with pytest.raises(RuntimeError, match="boom"):
        model_randomisation(model, make_method, X_GRAD, 0)
    assert_unchanged(model, before)
    assert all(copy_ is not model for copy_ in calls)


# --- the default layers and the progress bar ----------------------------------------------------


def test_randomisation_layers_are_the_parameterised_blocks_from_the_output_side() -> None:
    assert randomisation_layers(resnet18(weights=None)) == [
        "fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0",
        "layer1.1", "layer1.0", "bn1", "conv1",
    ]  # fmt: skip
    head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    nested = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), head)
    assert randomisation_layers(nested) == ["2.1", "0"]
    assert randomisation_layers(GatedModel()) == ["head", "gate"]


def test_layers_may_be_given_by_name_and_a_raw_parameter_is_redrawn() -> None:
    model = GatedModel()
    model.gate.reset_parameters = None  # type: ignore[assignment] - no reset: a normal draw
    with torch.no_grad():
        model.gate.weight.copy_(torch.linspace(0.0, 1.0, 16).view(1, 1, 4, 4))
    states = []

    def make_method(copy_: GatedModel) -> GatedMap:
        states.append(copy_.gate.weight.detach().clone())
        return GatedMap(copy_)

    result = model_randomisation(model, make_method, X, 0, layers=["gate"])
    assert result.layers == ("gate",)
    redrawn = states[1]
    assert not torch.equal(redrawn, states[0])
    assert not result.constant.any()


def test_show_progress_draws_a_bar_over_the_steps(capsys) -> None:
    model_randomisation(TwoLinear(), lambda m: Intensity(), X, 0, show_progress=True)
    assert "randomisation" in capsys.readouterr().err
    model_randomisation(TwoLinear(), lambda m: Intensity(), X, 0)  # 10 s expected: no bar
    assert "randomisation" not in capsys.readouterr().err


# --- bad arguments ------------------------------------------------------------------------------


class Flat:
    def attribute(self, inputs: Tensor, target: Any = None) -> float:
        return 1.0


def bad_call(**changes: Any) -> None:
    model = TwoLinear()
    arguments: dict[str, Any] = {"make_method": saliency, "layers": None, "order": "cascading"}
    arguments.update(changes)
    layers = arguments.pop("layers")
    if callable(layers):
        layers = layers(model)
    model_randomisation(model, inputs=X, target=0, layers=layers, **arguments)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"layers": lambda m: [TwoLinear().head]}, ValueError, r"layers\[0\].*not a module of"),
        ({"layers": lambda m: []}, ValueError, "layers is empty"),
        ({"layers": lambda m: m.head}, TypeError, "must be a list of modules"),
        ({"layers": lambda m: ["head", "tail"]}, ValueError, r"layers\[1\] is 'tail'"),
        ({"layers": lambda m: [m.head, m.head]}, ValueError, "listed twice"),
        ({"layers": lambda m: [m]}, ValueError, "the model itself"),
        ({"layers": lambda m: [3]}, TypeError, r"layers\[0\] must be a module"),
        ({"make_method": lambda m: m}, TypeError, "returned TwoLinear, which has no attribute"),
        ({"make_method": "saliency"}, TypeError, "make_method builds the attribution"),
        ({"order": "cascade"}, ValueError, "order must be one of"),
        ({"seed": 0.5}, TypeError, "seed must be an int"),
        ({"attribute_kwargs": [1]}, TypeError, "attribute_kwargs must be a dict"),
        ({"attribute_kwargs": {"target": 1}}, ValueError, "give the target as"),
        ({"make_method": lambda m: Flat()}, TypeError, "returned float"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_arguments_get_clear_errors(changes, error, message) -> None:
    with pytest.raises(error, match=message):
        bad_call(**changes)


def test_a_module_without_parameters_and_a_model_that_is_not_a_module_are_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    with pytest.raises(ValueError, match=r"layers\[0\] \('1', ReLU\) has no parameters"):
        model_randomisation(model, saliency, X, 0, layers=[model[1]])
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        model_randomisation(lambda x: x, saliency, X, 0)  # type: ignore[arg-type]
