"""Hardening of the methods, second round: the model behind a function found and run in eval
mode, one lock for the layer and its model, noise that overflows, bf16 without bf16 units,
nested layer outputs, plans too large to hold, unbatched / channels-last / mismatched inputs,
and adaptive allocation that falls back to uniform where it predicts no gain.

Every call that raises or warns leaves the model bit-identical: state_dict with buffers,
every module's training flag, hooks (its own and PyTorch's global ones) and requires_grad.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import warnings
import weakref
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam._core.hardware import CpuInfo
from captum_sscam._core.model_state import model_in_eval_mode, reachable_modules
from captum_sscam.attr import _options
from captum_sscam.attr._layer import layer_maps
from captum_sscam.attr._sampling import MAX_WORK_ITEMS, predicted_variance_ratios
from tests.tiny_models import SmallCNN


class Tiny(nn.Module):
    """conv1 -> BatchNorm -> conv2 (the layer) -> ReLU -> mean pool -> Dropout -> linear."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
            self.bn.running_mean.copy_(torch.randn(6, generator=generator))
            self.bn.running_var.copy_(torch.rand(6, generator=generator) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        features = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
        return self.head(self.drop(features.mean(dim=(2, 3))))


def snapshot(model: nn.Module) -> tuple[Any, ...]:
    """Everything a call must leave as it was."""
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for m in model.modules()
    ]
    global_hooks = (
        len(torch_module._global_forward_hooks),
        len(torch_module._global_forward_pre_hooks),
    )
    return (
        {name: value.clone() for name, value in model.state_dict().items()},
        [m.training for m in model.modules()],
        hooks,
        global_hooks,
        [p.requires_grad for p in model.parameters()],
    )


def assert_unchanged(model: nn.Module, before: tuple[Any, ...]) -> None:
    after = snapshot(model)
    assert after[0].keys() == before[0].keys()
    for name, value in after[0].items():
        assert torch.equal(value, before[0][name]), name
    assert after[1:] == before[1:]


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def eval_map(model: nn.Module, layer: nn.Module) -> Tensor:
    training = [m.training for m in model.modules()]
    model.eval()
    try:
        return ScoreCAM(model, layer).attribute(X, target=[1, 2], channels_last=False)
    finally:
        for m, flag in zip(model.modules(), training, strict=True):
            m.training = flag


class Wrapper:
    """A callable object holding the model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, x: Tensor) -> Tensor:
        return self.model(x)


GLOBAL_MODEL = Tiny().train()


def global_forward(x: Tensor) -> Tensor:
    return GLOBAL_MODEL(x)


def forwards(model: Tiny) -> dict[str, Any]:
    """Ways to hand the model to a method without handing the module itself."""

    def closure(x: Tensor) -> Tensor:
        return model(x) * 1.0

    return {
        "lambda": lambda t: model(t),
        "partial": functools.partial(Tiny.forward, model),
        "partial-of-a-lambda": functools.partial(lambda m, t: m(t), model),
        "closure": closure,
        "object": Wrapper(model),
        "bound method of an object": Wrapper(model).__call__,
    }


# --- 1. a train-mode model behind a function ---------------------------------------------------


@pytest.mark.parametrize("kind", list(forwards(Tiny())))
def test_a_function_of_a_train_mode_model_runs_it_in_eval_mode(kind: str) -> None:
    model = Tiny().train()
    expected = eval_map(model, model.conv2)
    before = snapshot(model)
    forward = forwards(model)[kind]
    assert model in reachable_modules(forward)
    with pytest.warns(UserWarning, match=r"training mode .*BatchNorm2d, Dropout.*model\.eval"):
        maps = ScoreCAM(forward, model.conv2).attribute(X, target=[1, 2], channels_last=False)
    assert_unchanged(model, before)  # BatchNorm's running statistics too
    torch.testing.assert_close(maps, expected, rtol=1e-6, atol=1e-7)


def test_a_model_named_by_a_global_of_the_function_is_found() -> None:
    expected = eval_map(GLOBAL_MODEL, GLOBAL_MODEL.conv2)
    before = snapshot(GLOBAL_MODEL)
    with pytest.warns(UserWarning, match="the model found behind the function"):
        maps = ScoreCAM(global_forward, GLOBAL_MODEL.conv2).attribute(
            X, target=[1, 2], channels_last=False
        )
    assert_unchanged(GLOBAL_MODEL, before)
    torch.testing.assert_close(maps, expected, rtol=1e-6, atol=1e-7)


def test_modules_the_search_misses_are_put_in_eval_mode_as_they_run() -> None:
    # through a weak reference the model cannot be reached: the layer's root falls back to
    # the layer, and the modules are caught by the capture pass's hook, before their forward
    model = Tiny().train()
    expected = eval_map(model, model.conv2)
    reference = weakref.ref(model)
    forward = lambda t: reference()(t)  # noqa: E731
    assert reachable_modules(forward) == []
    before = snapshot(model)
    with pytest.warns(UserWarning, match=r"BatchNorm2d, Dropout.*Pass forward_func=model"):
        maps = ScoreCAM(forward, model.conv2).attribute(X, target=[1, 2], channels_last=False)
    assert_unchanged(model, before)
    torch.testing.assert_close(maps, expected, rtol=1e-6, atol=1e-7)


def test_a_call_that_raises_behind_a_function_leaves_the_model_as_it_was() -> None:
    model = Tiny().train()
    model.conv1.weight.requires_grad_(False)
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"), pytest.warns(UserWarning):
        ScoreCAM(lambda t: model(t), model.conv2).attribute(X, target=7)
    assert_unchanged(model, before)


# --- 2. two threads, one through the model and one through a function of it ---------------------


def test_the_model_and_a_function_of_it_in_two_threads_get_the_sequential_maps() -> None:
    model = SmallCNN(channels=8).eval()
    inputs = [torch.randn(2, 3, 16, 16) for _ in range(20)]
    methods = [ScoreCAM(model, model.layer), ScoreCAM(lambda t: model(t), model.layer)]

    def attribute(method: ScoreCAM, x: Tensor) -> Tensor:
        return method.attribute(x, target=[1, 3], perturbations_per_eval=3, channels_last=False)

    expected = [attribute(methods[0], x) for x in inputs]
    results: dict[tuple[int, int], Tensor] = {}
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i, x in enumerate(inputs):
                results[thread, i] = attribute(methods[thread], x)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    wrong = [key for key, maps in results.items() if not torch.equal(maps, expected[key[1]])]
    assert len(results) == 40 and not wrong, wrong


def test_nested_claims_of_one_thread_do_not_wait_for_themselves() -> None:
    model = SmallCNN().eval()
    done = threading.Event()

    def nested() -> None:
        with (
            model_in_eval_mode(model, model.layer),
            model_in_eval_mode(lambda t: model(t), model.layer),
            model_in_eval_mode(model.stem, model.stem),
        ):
            done.set()

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set()


# --- 4. noise that overflows the computation's dtype -------------------------------------------


@pytest.mark.parametrize("stdev", [1e38, 3e38, 1e39])
def test_noise_that_overflows_float32_is_refused(stdev: float) -> None:
    model = SmallCNN().eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"overflows input 0's dtype, torch\.float32.*noise only"):
        SmoothedScoreCAM(model, model.layer).attribute(X, target=0, nt_samples=2, stdevs=stdev)
    assert_unchanged(model, before)


def test_noise_is_scaled_in_the_inputs_dtype() -> None:
    # 1e38 fits float64: the noise is scaled there (it overflowed in float32 before)
    model = SmallCNN().double().eval()
    maps = SmoothedScoreCAM(model, model.layer).attribute(
        X.double(), target=0, nt_samples=2, stdevs=1e38, generator=torch.Generator().manual_seed(0)
    )
    assert maps.dtype == torch.float64 and bool(torch.isfinite(maps).all())
    scale = float(X.abs().max())  # > 1: max(1, max |input|)
    bound = torch.finfo(torch.float64).max / 2 / (10 * scale)
    message = rf"torch\.float64.*Use stdevs below {re.escape(f'{bound:.3g}')}\."
    with pytest.raises(ValueError, match=message):
        SmoothedScoreCAM(model, model.layer).attribute(
            X.double(), target=0, nt_samples=2, stdevs=1e307
        )


# --- 7. bf16 forced on a CPU without bf16 units -------------------------------------------------


def test_bf16_forced_on_a_cpu_without_bf16_units_gets_a_one_time_note(monkeypatch) -> None:
    monkeypatch.setattr(_options, "cpu_info", lambda: CpuInfo("AMD EPYC 7B13", frozenset({"avx2"})))
    monkeypatch.setattr(_options, "_NOTED_SLOW", set())
    model = SmallCNN().eval()
    method = ScoreCAM(model, model.layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.attribute(X, target=0, autocast_dtype=torch.bfloat16)
        method.attribute(X, target=0, autocast_dtype=torch.bfloat16)
    notes = [w for w in caught if "without bf16 units" in str(w.message)]
    assert len(notes) == 1  # once per process
    assert 'autocast_dtype="auto"' in str(notes[0].message)
    assert notes[0].filename == __file__  # at the caller's line


def test_bf16_forced_on_a_cpu_with_bf16_units_is_quiet(monkeypatch) -> None:
    flags = frozenset({"avx2", "avx512_bf16"})
    monkeypatch.setattr(_options, "cpu_info", lambda: CpuInfo("AMD EPYC 9654", flags))
    monkeypatch.setattr(_options, "_NOTED_SLOW", set())
    model = SmallCNN().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ScoreCAM(model, model.layer).attribute(X, target=0, autocast_dtype=torch.bfloat16)
    assert not [w for w in caught if "bf16 units" in str(w.message)]


# --- 8. a layer whose output nests tuples ------------------------------------------------------


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        features = self.conv(x)
        return features, (features.relu(), -features)


class NestedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Nested()
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        features, (positive, _) = self.block(x)
        return self.head((features + positive).mean(dim=(2, 3)))


def test_a_layer_output_with_a_nested_tuple_gets_a_clear_type_error() -> None:
    model = NestedModel().train()
    before = snapshot(model)
    with (
        pytest.raises(
            TypeError,
            match=r"layer Nested's output is tuple\(Tensor\(2, 4, 8, 8\), tuple\(Tensor.*"
            r"flat tuple of Tensors.*reshape_transform",
        ),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # no mode-dependent modules: no warning expected
        ScoreCAM(model, model.block).attribute(X, target=0)
    assert_unchanged(model, before)


# --- 10. plans too large to index or hold --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "name"),
    [(SmoothedScoreCAM, {"nt_samples": 10**12}, "nt_samples"),
     (IntegratedScoreCAM, {"n_steps": 10**12}, "n_steps")],
)  # fmt: skip
def test_a_budget_beyond_what_a_call_can_hold_is_refused_before_allocating(
    method: type[ScoreCAM], kwargs: dict[str, int], name: str
) -> None:
    message = rf"{name}=1,000,000,000,000 asks for 1,000,000,000,000 masked forwards.*2\*\*28"
    with pytest.raises(ValueError, match=message):
        method.check_arguments(**kwargs)
    model = SmallCNN().eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        method(model, model.layer).attribute(X, target=0, **kwargs)
    assert_unchanged(model, before)


def test_a_call_whose_pairs_times_samples_exceed_the_bound_is_refused() -> None:
    # 2 examples x 6 channels x 2**28 samples: each is allowed alone, not their product
    model = SmallCNN(channels=6).eval()
    before = snapshot(model)
    items = 2 * 6 * MAX_WORK_ITEMS
    with pytest.raises(ValueError, match=rf"{items:,} masked forwards .*12 \(example, channel\)"):
        SmoothedScoreCAM(model, model.layer).attribute(X, target=0, nt_samples=MAX_WORK_ITEMS)
    assert_unchanged(model, before)


# --- 11 and 14. inputs that do not fit the model ------------------------------------------------


@pytest.mark.parametrize(
    ("x", "model_dtype", "error", "message"),
    [
        (torch.randn(3, 16, 16), None, ValueError, r"\(3, 16, 16\).*x\.unsqueeze\(0\)"),
        (torch.randn(2, 16, 16, 3), None, ValueError, r"channels last.*x\.permute\(0, 3, 1, 2\)"),
        (torch.randn(2, 1, 16, 16), None, ValueError, r"1 channels in dimension 1.*takes 3"),
        (torch.randn(2, 3, 16, 16), torch.float64, TypeError,
         r"input 0 is torch\.float32 but the model's parameters are torch\.float64.*"
         r"model\.float\(\) or the inputs with x\.double\(\)"),
        (torch.randn(2, 3, 16, 16).double(), torch.float32, TypeError,
         r"model\.double\(\) or the inputs with x\.float\(\)"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("through", ["model", "lambda"])
def test_inputs_that_do_not_fit_the_model_say_what_to_change(
    x: Tensor, model_dtype: torch.dtype | None, error: type, message: str, through: str
) -> None:
    model = SmallCNN().train()
    if model_dtype is not None:
        model.to(model_dtype)
    forward = model if through == "model" else (lambda t: model(t))
    before = snapshot(model)
    with pytest.raises(error, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SmallCNN has no mode-dependent modules
        ScoreCAM(forward, model.layer).attribute(x, target=0)
    assert_unchanged(model, before)


def test_a_model_on_another_device_than_its_inputs_is_refused_before_the_forward() -> None:
    model = SmallCNN().to("meta")  # parameters without data, on a device of their own
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"input 0 is on cpu but .* on meta.*x\.to\('meta'\)"):
        ScoreCAM(model, model.layer).attribute(X, target=0)
    assert calls == []  # before the first forward


@pytest.mark.cuda
def test_a_cuda_model_with_cpu_inputs_is_refused() -> None:
    model = SmallCNN().eval().cuda()
    with pytest.raises(ValueError, match=r"input 0 is on cpu .*cuda:0.*x\.to\('cuda:0'\)"):
        ScoreCAM(model, model.layer).attribute(X, target=0)


class CastsItsInputs(nn.Module):
    """A float64 model that converts its inputs itself, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = SmallCNN().double()

    def forward(self, x: Tensor) -> Tensor:
        return self.cnn(x.to(torch.float64)).float()


def test_a_model_that_converts_its_inputs_is_not_refused() -> None:
    model = CastsItsInputs().eval()
    x = torch.randn(2, 3, 16, 16)
    maps = ScoreCAM(model, model.cnn.layer).attribute(x, target=[0, 1], channels_last=False)
    direct = ScoreCAM(model.cnn, model.cnn.layer).attribute(
        x.double(), target=[0, 1], channels_last=False
    )
    # the same maps, up to the masked inputs' float32 rounding before the model's conversion
    torch.testing.assert_close(maps, direct, rtol=1e-5, atol=1e-7)


def test_a_layer_tensor_without_the_batch_says_to_add_it() -> None:
    # what a plain function's model gives for a (C, H, W) image: (K, h, w) activations
    with pytest.raises(ValueError, match=r"\(6, 8, 8\) for 3 examples.*x\.unsqueeze\(0\)"):
        layer_maps(torch.randn(6, 8, 8), (torch.randn(3, 16, 16),), None)


# --- 16. adaptive allocation where it predicts no gain ------------------------------------------


class FixedChannels(nn.Module):
    """Four fixed channels, channel k equal to ``scales[k]`` on quadrant k of a 4 x 4 map
    (``||A_k|| = 2 scales[k]``); the output depends on the input."""

    def __init__(self, scales: list[float]) -> None:
        super().__init__()
        pattern = torch.zeros(4, 4, 4)
        for k, (row, column) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
            pattern[k, row : row + 2, column : column + 2] = scales[k]
        self.register_buffer("pattern", pattern)
        self.layer = nn.Identity()
        generator = torch.Generator().manual_seed(1)
        self.head = nn.Linear(3 * 4 * 4, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        self.layer(self.pattern.expand(x.shape[0], -1, -1, -1) + 0 * x[:, :1])
        return self.head(x.flatten(1))


def seeded_call(model: nn.Module, allocation: str) -> Tensor:
    return SmoothedScoreCAM(model, model.layer).attribute(
        torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)), target=[0, 2],
        nt_samples=9, stdevs=0.5, sample_allocation=allocation, relu_attributions=False,
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip


@pytest.mark.parametrize(
    "scales",
    [[1.0, 1.0, 1.0, 1.0], [1.0, 1.1, 0.9, 1.2]],  # predicted ratios 1 and 0.989
    ids=["equal norms", "nearly equal norms"],
)
def test_adaptive_spends_uniformly_where_it_predicts_no_gain(scales: list[float], caplog) -> None:
    model = FixedChannels(scales).eval()
    with caplog.at_level(logging.DEBUG, logger="captum_sscam"):
        adaptive = seeded_call(model, "adaptive")
    assert torch.equal(adaptive, seeded_call(model, "uniform"))
    assert "spent the budget uniformly for examples [0, 1]" in caplog.text


def test_adaptive_keeps_its_allocation_where_it_predicts_a_gain(caplog) -> None:
    model = FixedChannels([0.2, 1.0, 3.0, 0.5]).eval()  # predicted ratio 0.58
    with caplog.at_level(logging.DEBUG, logger="captum_sscam"):
        adaptive = seeded_call(model, "adaptive")
    assert not torch.equal(adaptive, seeded_call(model, "uniform"))
    assert "uniformly" not in caplog.text


def test_predicted_variance_ratios_by_hand() -> None:
    # example 0: weights 1 and 3 with counts 5 and 13 against 9 each:
    #   (1/5 + 9/13) / ((1 + 9) / 9) = 0.8031; example 1: all weights 0 -> 1
    ratios = predicted_variance_ratios(
        torch.tensor([1.0, 3.0, 0.0, 0.0]),
        torch.tensor([5, 13, 9, 9]),
        9,
        torch.tensor([0, 0, 1, 1]),
        num_examples=2,
    )
    assert ratios.tolist() == pytest.approx([(1 / 5 + 9 / 13) / (10 / 9), 1.0])
