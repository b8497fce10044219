"""Every script in examples/ runs, on a tiny configuration, and does what it says."""

from __future__ import annotations

import math
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--model", "tests.tiny_models:SmallCNN", "--layer", "layer", "--size", "16"]


def run_example(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_every_example_is_tested() -> None:
    tested = {"explain_image.py", "compare_methods.py", "evaluate_faithfulness.py"}
    tested.add("torchvision_resnet.py")
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


def test_explain_image(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "explain.png"
    run_example("explain_image.py", [*TINY, "--nt-samples", "2", "--out", str(out)], monkeypatch)
    assert re.fullmatch(
        rf"chelsea: class \d \(\d+\.\d%\); map \(1, 1, 8, 8\) -> {re.escape(str(out))}\n",
        capsys.readouterr().out,
    )
    assert Image.open(out).size == (400, 400)


def test_compare_methods(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "grid.png"
    argv = [*TINY, "--nt-samples", "1", "--ig-steps", "4", "--out", str(out)]
    run_example("compare_methods.py", argv, monkeypatch)
    stdout = capsys.readouterr().out
    for method in ("Integrated Gradients", "Grad-CAM", "Score-CAM", "SS-CAM"):
        assert re.search(rf"^{method}\s+\d+\.\d\d s$", stdout, re.MULTILINE)
    width, height = Image.open(out).size
    assert (width, height) == (int(2.5 * 5 * 100), int(2.5 * 2 * 1.15 * 100))


class SumOfPixels(torch.nn.Module):
    """Class 0 scores the sum of every channel of every pixel; class 1 scores 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.sum(dim=(1, 2, 3))
        return torch.stack([total, torch.zeros_like(total)], dim=1)


def test_infidelity_gets_maps_repeated_over_the_channels() -> None:
    # f(x) - f(x - I) = sum(I) for this model, so a map of ones in every channel is a perfect
    # explanation: infidelity E[(I . phi - sum(I))^2] = 0. Maps divided by the 3 channels
    # (what the example passed before) give (2/3 sum(I))^2 > 0.
    example = runpy.run_path(str(EXAMPLES / "evaluate_faithfulness.py"))
    x = torch.randn(2, 3, 8, 8)
    ones = torch.ones(2, 1, 4, 4)
    target = torch.tensor([0, 0])
    torch.manual_seed(0)
    value = example["captum_infidelity"](SumOfPixels(), x, ones, target, 4)
    assert value.tolist() == pytest.approx([0.0, 0.0], abs=1e-8)
    torch.manual_seed(0)
    divided = example["infidelity"](
        SumOfPixels(), example["perturb"], x, torch.ones(2, 3, 8, 8) / 3, target=target,
        n_perturb_samples=4,
    )  # fmt: skip
    assert (divided > 0.1).all()


def test_evaluate_faithfulness(monkeypatch, capsys) -> None:
    argv = [*TINY, "--photos", "quokka,coffee", "--nt-samples", "1", "--perturbations", "2"]
    run_example("evaluate_faithfulness.py", argv, monkeypatch)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    assert header.split()[1] == "infidelity"
    names = {"Integrated", "Grad-CAM", "Score-CAM", "SS-CAM"}
    rows = [line for line in lines if line.split()[0] in names]
    assert len(rows) == 4
    for row in rows:
        infidelity = float(row.split()[2 if row.startswith("Integrated") else 1])
        assert math.isfinite(infidelity) and infidelity >= 0
    assert lines[-1] == "(means over 2 photo(s); lower infidelity is better)"


def test_torchvision_resnet(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "resnet.png"
    argv = ["--weights", "random", "--size", "33", "--nt-samples", "1", "--tunnel-samples", "1"]
    argv += ["--batch-size", "128", "--out", str(out)]
    run_example("torchvision_resnet.py", argv, monkeypatch)
    stdout = capsys.readouterr().out
    assert re.search(r"layer4 map \(1, 1, 2, 2\) -> \(1, 1, 33, 33\)", stdout)
    assert Image.open(out).size == (int(2.5 * 4 * 100), int(2.5 * 1.15 * 100))
