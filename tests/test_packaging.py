"""Packaging: the sdist and the wheel carry what they should, and the wheel works on its own.

The last test is a user's first hour outside the repository: the wheel installed with the
documented `[demo]` extra in a fresh virtual environment (PyTorch from constraints.txt), then
the README's code and the command line's bundled model and photos, with nothing from this
checkout on the path. It takes minutes (marker `install`; `make test-install`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.snippets import ROOT, environment, python_blocks, run_blocks

VERSION = "0.1.0"
EXTRAS = "demo"  # what the README tells a user to install


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """`python -m build`: the sdist, then the wheel built from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


def files_under(folder: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_sdist_ships_docs_examples_and_licence(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
        pkg_info = archive.extractfile(f"captum_sscam-{VERSION}/PKG-INFO").read().decode()
        licence = archive.extractfile(f"captum_sscam-{VERSION}/LICENSE").read().decode()
    expected = {"LICENSE", "README.md", "pyproject.toml", "constraints.txt", "mkdocs.yml"}
    expected |= {"mkdocs_hooks.py", "captum_sscam/apps/hand_boxes.json"}
    expected |= files_under("docs") | files_under("examples")
    assert "docs/getting-started.md" in expected and "examples/explain_image.py" in expected
    assert expected <= names, sorted(expected - names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert licence.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, captum-sscam developers" in licence
    check_licence_metadata(pkg_info)


def test_wheel_carries_licence_package_data_and_demo_extra(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"captum_sscam-{VERSION}.dist-info/METADATA").decode()
        licence = archive.read(f"captum_sscam-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert licence == (ROOT / "LICENSE").read_text()
    assert {"captum_sscam/__init__.py", "captum_sscam/apps/hand_boxes.json"} <= names
    # the PEP 561 marker: users' type checkers read the package's annotations
    assert "captum_sscam/py.typed" in names
    assert "captum_sscam/_core/scorer.py" in names
    check_licence_metadata(metadata)
    # the bundled quokka photo is read from imgaug's files: the demo extra must bring them
    assert 'Requires-Dist: imgaug==0.4.0; extra == "demo"' in metadata


def check_licence_metadata(metadata: str) -> None:
    """The SPDX form (core metadata 2.4), not the deprecated free-text licence field."""
    lines = metadata.splitlines()
    assert "License-Expression: BSD-3-Clause" in lines
    assert "License-File: LICENSE" in lines
    assert not [line for line in lines if line.startswith(("License:", "Classifier: License"))]


# --- the wheel in a fresh virtual environment --------------------------------------------


def venv_key() -> str:
    """What decides the environment's third-party packages (the wheel itself is reinstalled)."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    digest.update(f"{sys.version}|{EXTRAS}".encode())
    return digest.hexdigest()[:16]


def wheel_venv(wheel: Path) -> Path:
    """build/wheel-venv-KEY with the wheel and its [demo] dependencies.

    Made anew (`python -m venv`, then pip install of the wheel with the extra, PyTorch pinned by
    constraints.txt) when pyproject.toml, constraints.txt or Python changed; otherwise kept,
    and only the freshly built wheel is reinstalled.
    """
    venv = ROOT / "build" / f"wheel-venv-{venv_key()}"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    env = environment(PYTHONPATH=None, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if (venv / ".complete").is_file():
        command = [*pip, "--no-deps", "--force-reinstall", str(wheel)]
    else:
        for stale in (ROOT / "build").glob("wheel-venv-*"):
            shutil.rmtree(stale)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        command = [*pip, f"{wheel}[{EXTRAS}]"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    (venv / ".complete").touch()
    return venv


@pytest.mark.install
def test_wheel_in_a_fresh_venv_runs_the_readme_and_the_command_line(
    dist: Dist, tmp_path: Path
) -> None:
    venv = wheel_venv(dist.wheel)
    env = environment(PYTHONPATH=None, MPLBACKEND="Agg")
    python = str(venv / "bin" / "python")

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}{result.stderr[-5000:]}"
        return result

    where = run(python, "-c", "import captum_sscam; print(captum_sscam.__file__)").stdout
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel, not this checkout

    readme = [block for block in python_blocks(ROOT / "README.md") if block.not_run is None]
    snippets = tmp_path / "readme"
    snippets.mkdir()
    readme_run = run_blocks(python, readme, snippets, timeout=900, env=env)
    assert readme_run.returncode == 0, readme_run.output
    assert list(readme_run.forwards) == [block.where for block in readme]
    assert (snippets / "sscam.png").stat().st_size > 1000

    cli = str(venv / "bin" / "captum-sscam")
    # the bundled pretrained Lite0 on every bundled photo (imgaug's quokka among them)
    explain = run(cli, "explain", "--bundled", "--method", "grad-cam", "--out", "explain").stdout
    assert "chelsea: predicted Egyptian cat" in explain, explain
    assert "quokka: predicted" in explain, explain
    # getting-started's first command on every bundled photo, with a small CNN of the user's
    # own (`package.module:function`) so that it takes seconds: with Lite0 it makes about
    # 25,000 forward passes, 10 minutes and more on a 2-core CPU (docs/choosing.md)
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    env["PYTHONPATH"] = str(tmp_path)
    compare = run(
        cli, "compare", "--bundled", "--model", "my_models:small_cnn", "--layer", "2",
        "--size", "64", "--nt-samples", "2", "--ig-steps", "4", "--quiet", "--out", "report",
    )  # fmt: skip
    report = (tmp_path / "report" / "report.html").read_text()
    for photo in ("coffee", "chelsea", "astronaut", "rocket", "motorcycle", "quokka", "voc"):
        for method in ("integrated-gradients", "grad-cam", "score-cam", "ss-cam"):
            assert (tmp_path / "report" / f"{photo}_{method}.png").is_file(), compare.stdout
        assert f">{photo}<" in report, photo
    assert "Deletion AUC" in report and "Energy pointing game" in report  # the metrics ran


MY_MODELS = """
import torch
from torch import nn


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
"""
