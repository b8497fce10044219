"""compile_forward=True: the masked forwards run compiled, padded to one batch shape.

The maps must equal the eager maps up to rounding (the same math, the padded rows
dropped), the compiled forward must be made once per attribution object and reused,
and the model must be left as it was.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from tests.tiny_models import SmallCNN


@pytest.fixture
def model() -> SmallCNN:
    torch._dynamo.reset()
    return SmallCNN(channels=7).eval()


def _compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_score_cam_compiled_equals_eager_and_compiles_once(model: SmallCNN) -> None:
    x = torch.randn(2, 3, 12, 12)
    method = ScoreCAM(model, model.layer)
    eager = method.attribute(x, target=1, perturbations_per_eval=4)
    graphs = _compiled_graphs()
    # 2 examples x 7 channels = 14 items: batches of 4, 4, 4 and a padded 2
    compiled = method.attribute(x, target=1, perturbations_per_eval=4, compile_forward=True)
    assert _compiled_graphs() == graphs + 1
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
    assert compiled.abs().sum() > 0

    again = method.attribute(x.flip(-1), target=3, perturbations_per_eval=4, compile_forward=True)
    assert _compiled_graphs() == graphs + 1  # same shape: the kept compiled forward, reused
    eager_again = method.attribute(x.flip(-1), target=3, perturbations_per_eval=4)
    torch.testing.assert_close(again, eager_again, rtol=1e-4, atol=1e-6)


def test_one_graph_for_inputs_of_any_strides(model: SmallCNN) -> None:
    # an image decoded to (N, H, W, C) and permuted has channels-last strides; masked
    # inputs follow them, a padded batch would not: both are passed contiguous
    x = torch.randn(2, 12, 12, 3).permute(0, 3, 1, 2)
    method = ScoreCAM(model, model.layer)
    graphs = _compiled_graphs()
    compiled = method.attribute(x, target=1, perturbations_per_eval=4, compile_forward=True)
    method.attribute(x.contiguous(), target=1, perturbations_per_eval=4, compile_forward=True)
    assert _compiled_graphs() == graphs + 1
    eager = method.attribute(x, target=1, perturbations_per_eval=4)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)


def test_smoothed_adaptive_compiled_equals_eager_with_padded_phases(model: SmallCNN) -> None:
    x = torch.randn(1, 3, 12, 12)
    method = SmoothedScoreCAM(model, model.layer)
    options = dict(
        target=0,
        nt_samples=5,
        sample_allocation="adaptive",
        noise_on="input",
        stdevs=0.3,
        perturbations_per_eval=8,
        return_error=True,
    )
    eager, eager_error = method.attribute(x, generator=torch.Generator().manual_seed(3), **options)
    compiled, compiled_error = method.attribute(
        x, generator=torch.Generator().manual_seed(3), compile_forward=True, **options
    )
    # per-item noise does not depend on batching, so padding changes nothing but rounding
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled_error, eager_error, rtol=1e-3, atol=1e-6)


def test_compiled_call_leaves_the_model_as_it_was(model: SmallCNN) -> None:
    state = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()
    x = torch.randn(1, 3, 12, 12)
    IntegratedScoreCAM(model, model.layer).attribute(
        x, target=2, n_steps=2, perturbations_per_eval=5, compile_forward=True
    )
    assert model.training and all(module.training for module in model.modules())
    assert not any(module._forward_hooks for module in model.modules())
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name])


def test_a_compiled_call_asks_for_a_power_of_two_batch(
    model: SmallCNN, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on CUDA the automatic batch follows free memory; a compiled forward gets it rounded
    # down to a power of two, so small changes of free memory keep the compiled shape
    from captum_sscam.attr import score_cam

    asked: list[bool] = []

    def recording(*args: object, power_of_two: bool = False) -> int:
        asked.append(power_of_two)
        return 4

    monkeypatch.setattr(score_cam, "default_batch_size", recording)
    method = ScoreCAM(model, model.layer)
    x = torch.randn(1, 3, 12, 12)
    method.attribute(x, target=0)
    method.attribute(x, target=0, compile_forward=True)
    method.attribute(x, target=0, compile_forward=True, perturbations_per_eval=3)
    assert asked == [False, True]  # a batch given by the user is used as it is


def test_compile_forward_must_be_a_flag(model: SmallCNN) -> None:
    with pytest.raises(TypeError, match="compile_forward must be True or False, got 'yes'"):
        ScoreCAM(model, model.layer).attribute(
            torch.randn(1, 3, 12, 12), target=0, compile_forward="yes"
        )
