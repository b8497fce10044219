"""No silent wrong maps: channels constant after resizing, models in training mode, two threads
on one model, per-example forward arguments, and clear errors for the odd argument."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from tests.reference import reference_score_cam
from tests.tiny_models import SmallCNN

# --- 1. channels that vary at the layer's resolution but not at the input's ---------------------


class Checkerboard(nn.Module):
    """(N, 3, 4, 4) -> (N, 2, 8, 8): channel 0 a checkerboard (constant once resized to 4 x 4,
    as bilinear downsampling by 2 averages 2 x 2 blocks), channel 1 the upsampled input."""

    def forward(self, x: Tensor) -> Tensor:
        board = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()
        scale = 1 + x.mean(dim=(1, 2, 3)).abs()
        smooth = F.interpolate(x.mean(1, keepdim=True), scale_factor=2, mode="nearest")[:, 0]
        return torch.stack([board * scale[:, None, None], smooth], dim=1)


class UpsamplingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = Checkerboard()
        self.head = nn.Linear(2 * 8 * 8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layer(x).flatten(1))


def test_a_channel_constant_after_resizing_gets_no_mask_instead_of_nan() -> None:
    model = UpsamplingModel().eval()
    x = torch.randn(2, 3, 4, 4)
    board = F.interpolate(model.layer(x)[:, :1], size=(4, 4), mode="bilinear").flatten(1)
    assert float((board.amax(1) - board.amin(1)).max()) < 1e-6  # constant once resized
    for method in (ScoreCAM, SmoothedScoreCAM):
        maps = method(model, model.layer).attribute(x, target=[1, 2], score_mode="probability")
        assert bool(torch.isfinite(maps).all())
    ours = ScoreCAM(model, model.layer).attribute(x, target=[1, 2])
    expected = reference_score_cam(model, model.layer, x, [1, 2])
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    assert ours.abs().max() > 0


def test_a_layer_larger_than_a_one_pixel_input_gives_zeros_and_a_warning() -> None:
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(3, 4, kernel_size=3)
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(4 * 3 * 3, 2)).eval()
    with pytest.warns(UserWarning, match="every channel of the layer is constant"):
        maps = ScoreCAM(model, layer).attribute(torch.randn(2, 3, 1, 1), target=0)
    assert bool(torch.isfinite(maps).all()) and not bool(maps.any())


# --- 2. a model in training mode ------------------------------------------------------------------


class NormAndDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.layer = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(5, 4)

    def forward(self, x: Tensor) -> Tensor:
        features = torch.relu(self.layer(torch.relu(self.norm(self.stem(x)))))
        return self.head(self.drop(features.mean(dim=(2, 3))))


def state_of(model: nn.Module) -> tuple[dict[str, Tensor], list[bool]]:
    state = {name: value.clone() for name, value in model.state_dict().items()}
    return state, [module.training for module in model.modules()]


def assert_unchanged(model: nn.Module, before: tuple[dict[str, Tensor], list[bool]]) -> None:
    state, modes = state_of(model)
    assert modes == before[1]
    assert state.keys() == before[0].keys()
    for name, value in state.items():
        assert torch.equal(value, before[0][name]), name


def attribute(method, model: nn.Module, x: Tensor, target: list[int], batch: int) -> Tensor:
    """The method's maps; SS-CAM with two seeded samples of small noise."""
    extra = {}
    if method is SmoothedScoreCAM:
        extra = {"nt_samples": 2, "stdevs": 0.1, "generator": torch.Generator().manual_seed(0)}
    return method(model, model.layer).attribute(
        x, target=target, perturbations_per_eval=batch, **extra
    )


@pytest.mark.parametrize("method", [ScoreCAM, SmoothedScoreCAM, IntegratedScoreCAM])
def test_training_mode_warns_runs_in_eval_and_restores_everything(method) -> None:
    model = NormAndDropout()
    with torch.no_grad():  # give the running statistics non-default values
        model(torch.randn(8, 3, 8, 8) * 3 + 1)
    x = torch.randn(3, 3, 8, 8)
    before = state_of(model)
    with pytest.warns(UserWarning, match=r"training mode .*BatchNorm2d, Dropout.*model\.eval\(\)"):
        maps = attribute(method, model, x, [0, 1, 2], batch=1)
    assert_unchanged(model, before)
    # the maps are the eval-mode maps, whatever the batch size
    model.eval()
    torch.testing.assert_close(
        maps, attribute(method, model, x, [0, 1, 2], batch=7), rtol=1e-5, atol=1e-6
    )
    if method is not SmoothedScoreCAM:  # (seeded noise belongs to the example's position)
        alone = attribute(method, model, x[1:2], [1], batch=2)
        torch.testing.assert_close(alone, maps[1:2], rtol=1e-5, atol=1e-6)


def test_a_call_that_raises_leaves_a_training_model_as_it_was() -> None:
    model = NormAndDropout()
    before = state_of(model)
    with pytest.raises(ValueError, match="out of range"), pytest.warns(UserWarning):
        ScoreCAM(model, model.layer).attribute(torch.randn(2, 3, 8, 8), target=9)
    assert_unchanged(model, before)
    assert not model.layer._forward_hooks


def test_an_eval_model_gives_no_warning(recwarn: pytest.WarningsRecorder) -> None:
    model = NormAndDropout().eval()
    ScoreCAM(model, model.layer).attribute(torch.randn(1, 3, 8, 8), target=0)
    assert not [w for w in recwarn if "training mode" in str(w.message)]


# --- 3. two threads on one model --------------------------------------------------------------


def test_two_threads_on_one_model_get_the_maps_of_sequential_calls() -> None:
    model = SmallCNN(channels=8).eval()
    inputs = [torch.randn(2, 3, 16, 16) for _ in range(6)]
    methods = [ScoreCAM(model, model.layer), ScoreCAM(model, model.stem)]
    expected = [
        methods[i % 2].attribute(x, target=[i % 5, 4 - i % 5]) for i, x in enumerate(inputs)
    ]
    results: dict[int, Tensor] = {}
    errors: list[BaseException] = []

    def work(indices: range) -> None:
        try:
            for i in indices:
                results[i] = methods[i % 2].attribute(
                    inputs[i], target=[i % 5, 4 - i % 5], perturbations_per_eval=3
                )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(range(t, 6, 2),)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(6):
        torch.testing.assert_close(results[i], expected[i], rtol=1e-5, atol=1e-6)


# --- 4. additional_forward_args follow Captum's contract -----------------------------------------


class Weighted(nn.Module):
    """Logits scaled by a weight per example (or per class, closed over)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = SmallCNN(classes=3)
        self.layer = self.cnn.layer

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        logits = self.cnn(x)
        return logits * (weights.view(-1, 1) if weights.shape[0] == x.shape[0] else weights)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_a_tensor_with_one_row_per_example_follows_its_example(batch: int) -> None:
    # Three examples and a weight per example: with the same length as the classes (3),
    # the ambiguous case. Captum's contract makes it per example, at every batch size.
    model = Weighted().eval()
    x = torch.randn(3, 3, 16, 16)
    weights = torch.tensor([0.5, 2.0, -1.0])
    maps = ScoreCAM(model, model.layer).attribute(
        x, target=[0, 1, 2], additional_forward_args=(weights,), perturbations_per_eval=batch
    )
    for i in range(3):
        alone = ScoreCAM(model, model.layer).attribute(
            x[i : i + 1], target=i, additional_forward_args=(weights[i : i + 1],)
        )
        torch.testing.assert_close(maps[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_a_tensor_that_is_not_per_example_is_refused_and_a_closure_works() -> None:
    model = Weighted().eval()
    x = torch.randn(2, 3, 16, 16)
    per_class = torch.tensor([1.0, 3.0, 0.5])
    with pytest.raises(ValueError, match=r"3 rows but the batch has 2 examples.*functools.partial"):
        ScoreCAM(model, model.layer).attribute(x, target=0, additional_forward_args=(per_class,))
    closed = ScoreCAM(partial(model, weights=per_class), model.layer).attribute(x, target=[0, 1])
    by_hand = ScoreCAM(lambda images: model.cnn(images) * per_class, model.layer).attribute(
        x, target=[0, 1]
    )
    torch.testing.assert_close(closed, by_hand)


# --- 5. the odd argument ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"target": torch.tensor([True, False])}, TypeError, "integer class indices"),
        ({"target": True}, TypeError, "ints or tuples of ints"),
        ({"target": 0, "generator": 0}, TypeError, r"generator must be a torch.Generator"),
        ({"target": 0, "baselines": "zero"}, TypeError, r"baselines must be .*baselines=0"),
    ],
)
def test_odd_arguments_get_errors_that_say_what_is_expected(kwargs, error, message) -> None:
    model = SmallCNN().eval()
    with pytest.raises(error, match=message):
        SmoothedScoreCAM(model, model.layer).attribute(
            torch.randn(2, 3, 8, 8), nt_samples=1, **kwargs
        )
