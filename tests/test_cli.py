"""The captum-sscam command line: explain, compare, and the errors that say what to do."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from captum_sscam import cli
from captum_sscam.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "tests.tiny_models:SmallCNN", "--layer", "layer", "--size", "16", "--quiet"]


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("one", "two"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compare_writes_the_report_and_says_where(images, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    argv = ["compare", *images, *TINY, "--nt-samples", "2", "--out", str(out), "--no-metrics"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert f"Report: {(out / 'report.html').resolve()}" in stdout
    assert "nt_samples=2" in stdout and "The papers use nt_samples=35" in stdout
    for method in ("Integrated Gradients", "Grad-CAM", "Score-CAM", "SS-CAM"):
        assert re.search(rf"^\s+{method}\s+\d+\.\d\d s$", stdout, re.MULTILINE)
    page = (out / "report.html").read_text()
    assert page.count("<img ") == 2 * 5
    assert "nt_samples=2" in page
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{image}_{method}.png"
        for image in ("one", "two")
        for method in ("integrated-gradients", "grad-cam", "score-cam", "ss-cam")
    )


def test_explain_writes_one_overlay_per_image_for_the_target(images, tmp_path, capsys) -> None:
    out = tmp_path / "explain"
    argv = ["explain", *images, *TINY, "--method", "score-cam", "--target", "3", "--out", str(out)]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("one: predicted class ")
    assert lines[0].endswith(f"Score-CAM of class 3 [3] -> {out / 'one_score-cam.png'}")
    assert lines[1].endswith(f"-> {out / 'two_score-cam.png'}")
    assert Image.open(out / "one_score-cam.png").size == (16, 16)
    assert lines[2].startswith("Score-CAM took ")


def test_explain_bundled_lite0_names_the_top_class(tmp_path, capsys) -> None:
    from skimage import data

    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    argv = ["explain", str(photo), "--method", "grad-cam", "--out", str(tmp_path), "--quiet"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert stdout.startswith("chelsea: predicted Egyptian cat (")
    assert "Grad-CAM of Egyptian cat [285]" in stdout
    assert Image.open(tmp_path / "chelsea_grad-cam.png").size == (224, 224)


def test_torchvision_model_by_name_with_local_weights(images, tmp_path, monkeypatch) -> None:
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, checkpoints / Path(weights.url).name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    loaded = cli.load_model("resnet18", "DEFAULT", 32)
    torch.testing.assert_close(loaded.model.fc.weight, state["fc.weight"])
    assert loaded.default_layer == "layer4"
    assert loaded.class_names[285] == "Egyptian cat"
    from_file = cli.load_model("resnet18", str(checkpoints / Path(weights.url).name), 32)
    torch.testing.assert_close(from_file.model.fc.weight, state["fc.weight"])


def test_torchvision_model_with_random_weights_explains(images, tmp_path, capsys) -> None:
    argv = ["explain", images[0], "--model", "resnet18", "--weights", "random", "--size", "32"]
    code, stdout, _ = run(
        [*argv, "--method", "grad-cam", "--out", str(tmp_path), "--quiet"], capsys
    )
    assert code == 0
    assert "Grad-CAM of " in stdout
    assert Image.open(tmp_path / "one_grad-cam.png").size == (32, 32)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "missing.png"], "no such image file: missing.png. Give paths to image files"),
        (
            ["explain", "{one}", "--model", "no_such_net"],
            "unknown model 'no_such_net'. Use 'lite0'",
        ),
        (
            ["explain", "{one}", *TINY[:2], "--layer", "layer9"],
            "no layer named 'layer9' in tests.tiny_models:SmallCNN. Give --layer one of these "
            "module names (usually the last convolutional block): stem, layer, stem_act, act, head",
        ),
        (["explain", "{one}", *TINY, "--nt-samples", "0"], "--nt-samples must be at least 1."),
        (["explain", "{one}", *TINY, "--target", "zebra"], "--target 'zebra' is neither"),
        (["explain", "{one}", "--model", "nomodule:build"], "cannot load model 'nomodule:build'"),
        (["compare", *TINY], "give one or more image files, or --bundled"),
    ],
)
def test_errors_say_what_was_wrong_and_what_to_do(argv, message, images, capsys) -> None:
    argv = [arg.replace("{one}", images[0]) for arg in argv]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert message in stderr
    assert stderr.startswith(f"captum-sscam {argv[0]}: error: ")


def test_missing_torchvision_weights_say_how_to_get_them(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    code, _, stderr = run(["explain", images[0], "--model", "resnet18"], capsys)
    assert code == 2
    assert "the pretrained weights of resnet18 are not on this machine" in stderr
    assert "--weights random" in stderr and "never downloads" in stderr


def test_cuda_device_without_cuda_is_refused(images, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, stderr = run(["explain", images[0], *TINY, "--device", "cuda"], capsys)
    assert code == 2
    assert "CUDA is not available here; use --device cpu" in stderr


def test_console_script_and_module_entry_point() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    scripts = pyproject.split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    assert scripts == 'captum-sscam = "captum_sscam.cli:main"'
    result = subprocess.run(
        [sys.executable, "-m", "captum_sscam", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: captum-sscam")
    for command in ("explain", "compare", "insights"):
        assert command in result.stdout
