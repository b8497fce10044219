"""The registry of compared methods: one entry per method, read by every application."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image

from captum_sscam import IntegratedScoreCAM, ScoreCAM, SmoothedScoreCAM
from captum_sscam.apps import methods as registry
from captum_sscam.apps.cli import build_parser, main
from captum_sscam.apps.evaluate import Sample, evaluate
from captum_sscam.apps.methods import (
    METHODS,
    Options,
    explain_functions,
    get_method,
    parse_methods,
)
from tests.tiny_models import SmallCNN

TINY = ["--model", "tests.tiny_models:SmallCNN", "--layer", "layer", "--size", "16", "--quiet"]


def test_one_naming_scheme() -> None:
    assert list(METHODS) == [
        "ig", "grad-cam", "score-cam", "ss-cam", "ss-cam-input", "is-cam", "group-score-cam",
    ]  # fmt: skip
    assert [m.name for m in METHODS.values()] == [
        "Integrated Gradients", "Grad-CAM", "Score-CAM", "SS-CAM", "SS-CAM (input)", "IS-CAM",
        "Group Score-CAM",
    ]  # fmt: skip
    for key, method in METHODS.items():
        assert method.key == key and re.fullmatch(r"[a-z]+(-[a-z]+)*", key)
    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    choices = next(a.choices for a in explain._actions if a.dest == "method")
    assert tuple(choices) == tuple(METHODS)


def test_ss_cam_entries_fix_the_noise_placement() -> None:
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    options = Options(nt_samples=2, stdevs=0.3, seed=4)
    for key, placement in (("ss-cam", "mask"), ("ss-cam-input", "input")):
        maps = get_method(key).explain(model, model.layer, options)(x, torch.tensor([2]))
        expected = SmoothedScoreCAM(model, model.layer).attribute(
            x, target=2, nt_samples=2, stdevs=0.3, noise_on=placement,
            generator=torch.Generator().manual_seed(4),
        )  # fmt: skip
        torch.testing.assert_close(maps, expected)


def test_sample_allocation_and_autocast_reach_the_methods() -> None:
    model = SmallCNN().eval()
    with torch.no_grad():  # channel norms far apart: adaptive allocation predicts a gain
        model.layer.weight.mul_(torch.logspace(-1, 1, 6).view(6, 1, 1, 1))
    x = torch.randn(1, 3, 16, 16)
    options = Options(nt_samples=3, stdevs=0.3, seed=4, sample_allocation="adaptive")
    maps = get_method("ss-cam").explain(model, model.layer, options)(x, torch.tensor([2]))
    expected = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=2, nt_samples=3, stdevs=0.3, sample_allocation="adaptive",
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    torch.testing.assert_close(maps, expected)
    uniform = SmoothedScoreCAM(model, model.layer).attribute(
        x, target=2, nt_samples=3, stdevs=0.3, generator=torch.Generator().manual_seed(4)
    )
    assert not torch.allclose(maps, uniform)  # the option changed the call
    bf16 = Options(autocast_dtype="auto")
    maps = get_method("score-cam").explain(model, model.layer, bf16)(x, torch.tensor([2]))
    expected = ScoreCAM(model, model.layer).attribute(x, target=2, autocast_dtype="auto")
    torch.testing.assert_close(maps, expected)


def test_input_methods_are_summed_over_channels() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    maps = get_method("ig").explain(model, None, Options(ig_steps=5, batch_size=4))(
        x, torch.tensor([0, 1])
    )
    expected = IntegratedGradients(model).attribute(x, target=torch.tensor([0, 1]), n_steps=5)
    torch.testing.assert_close(maps, expected.sum(dim=1, keepdim=True))


def test_bad_options_and_keys_say_what_to_do() -> None:
    # the library's own checks, with the library's messages
    with pytest.raises(ValueError, match="nt_samples must be an integer >= 1, got 0"):
        Options(nt_samples=0)
    with pytest.raises(ValueError, match="perturbations_per_eval must be an integer >= 1"):
        Options(batch_size=0)
    with pytest.raises(ValueError, match="stdevs must be finite and >= 0"):
        Options(stdevs=float("nan"))
    with pytest.raises(ValueError, match="score_mode must be one of"):
        Options(score_mode="logits")
    with pytest.raises(ValueError, match="sample_allocation must be one of"):
        Options(sample_allocation="neyman")
    with pytest.raises(ValueError, match="autocast_dtype must be None or 'auto'"):
        Options(autocast_dtype="bf16")
    with pytest.raises(ValueError, match="unknown method 'sscam'; choose from ig, grad-cam"):
        parse_methods("ig,sscam")
    with pytest.raises(ValueError, match="Score-CAM explains a layer: give the layer"):
        get_method("score-cam").explain(SmallCNN(), None)


def test_is_cam_reaches_every_application_through_its_one_registry_entry(tmp_path) -> None:
    # IS-CAM was added as one registry entry: the CLI, the report and the evaluation have it.
    assert registry.METHODS["is-cam"].attribution is IntegratedScoreCAM
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    (explain,) = explain_functions(["is-cam"], model, model.layer).values()
    expected = IntegratedScoreCAM(model, model.layer).attribute(x, target=1, n_steps=10)
    torch.testing.assert_close(explain(x, torch.tensor([1])), expected)

    image = tmp_path / "image.png"
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    out = tmp_path / "report"
    argv = ["compare", str(image), *TINY, "--methods", "score-cam,is-cam", "--out", str(out)]
    assert main(argv) == 0
    assert "IS-CAM" in (out / "report.html").read_text()
    assert main(["explain", str(image), *TINY, "--method", "is-cam", "--out", str(out)]) == 0
    assert (out / "image_is-cam.png").is_file()
    records = evaluate(
        model, explain_functions(["is-cam"], model, model.layer),
        [Sample(x[0], 1, (), "x")], tmp_path / "eval", step=0.5, progress=False,
    )  # fmt: skip
    assert [record["method"] for record in records] == ["IS-CAM"]
    assert "| IS-CAM |" in (tmp_path / "eval" / "table.md").read_text()
