"""compare --sanity: each method's cascading model randomisation per image, the strips and the
correlation curves in the report, constant maps labelled, and the command line's options."""

from __future__ import annotations

import re

import numpy as np
import torch
from captum.attr import LayerGradCam
from PIL import Image

from captum_sscam import ScoreCAM
from captum_sscam.apps.methods import Options, explain_functions
from captum_sscam.apps.report import (
    compare,
    correlation_label,
    sanity_check,
    write_report,
)
from captum_sscam.metrics import Randomisation, model_randomisation, randomisation_layers
from tests.test_cli import TINY, images, run  # noqa: F401 - the images fixture
from tests.test_report import batch, preprocess, tiny_photos
from tests.tiny_models import SmallCNN

KEYS = ["grad-cam", "score-cam"]


def test_compare_randomises_each_method_on_each_photo_as_the_library_does(tmp_path) -> None:
    model = SmallCNN(classes=5).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    photos = tiny_photos(2)
    sanity = sanity_check(KEYS, model, model.layer, Options(), steps=2)
    assert list(sanity.layers) == randomisation_layers(model)[:2] == ["head", "layer"]
    assert sanity.total_layers == 3
    comparison = compare(
        model, photos, preprocess, explain_functions(KEYS, model, model.layer), sanity=sanity,
        with_metrics=False, progress=False,
    )  # fmt: skip
    for name, state in model.state_dict().items():
        assert torch.equal(state, before[name]), name  # the model itself is untouched
    runs = {run.name: run for run in comparison.runs}
    assert all(len(run.sanity) == 2 and run.sanity_seconds > 0 for run in runs.values())
    inputs = batch(photos)
    makers = {
        "Grad-CAM": (lambda m: LayerGradCam(m, m.layer), {"relu_attributions": True}),
        "Score-CAM": (lambda m: ScoreCAM(m, m.layer), {}),
    }
    for name, (make_method, kwargs) in makers.items():
        for index in range(2):
            one = slice(index, index + 1)
            expected = model_randomisation(
                model, make_method, inputs[one], comparison.targets[one],
                layers=["head", "layer"], attribute_kwargs=kwargs, return_maps=True,
            )  # fmt: skip
            got = runs[name].sanity[index]
            assert got.layers == ("head", "layer")
            torch.testing.assert_close(got.maps, expected.maps)
            torch.testing.assert_close(got.spearman, expected.spearman, equal_nan=True)
            assert torch.equal(got.constant, expected.constant)
    page = write_report(comparison, tmp_path).read_text()
    assert "Sanity check: cascading model randomisation" in page
    assert "Randomised: 2 of the model's 3 parameterised blocks (head, layer)" in page
    assert page.count("<img class='sanity'") == 2 * 2
    for photo in ("first", "b-second-b"):
        for suffix in ("sanity", "sanity_curve"):
            with Image.open(tmp_path / f"{photo}_{suffix}.png") as picture:
                assert picture.size[0] > 200


def test_a_constant_map_is_labelled_never_a_bare_nan() -> None:
    def result(constant: bool, original_constant: bool) -> Randomisation:
        return Randomisation(
            layers=("head",), order="cascading",
            spearman=torch.tensor([[float("nan") if constant or original_constant else 0.5]]),
            spearman_abs=torch.tensor([[0.5]]), ssim=torch.tensor([[0.1]]),
            constant=torch.tensor([[constant]]),
            original_constant=torch.tensor([original_constant]),
        )  # fmt: skip

    assert correlation_label(result(False, False), 0) == "rho 0.50"
    assert correlation_label(result(True, False), 0) == "constant map: rho undefined"
    assert "original map is constant" in correlation_label(result(False, True), 0)


def test_the_command_line_adds_the_sanity_section(images, tmp_path, capsys) -> None:  # noqa: F811
    out = tmp_path / "report"
    argv = ["compare", images[0], *TINY, "--methods", "grad-cam,score-cam", "--no-metrics",
            "--sanity", "--sanity-steps", "2", "--out", str(out)]  # fmt: skip
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert "Sanity check: 2 of the model's 3 parameterised blocks re-initialised" in stdout
    assert sorted(p.name for p in out.glob("*sanity*.png")) == ["one_sanity.png",
                                                               "one_sanity_curve.png"]
    page = (out / "report.html").read_text()
    assert len(re.findall("<img class='sanity'", page)) == 2
    assert np.asarray(Image.open(out / "one_sanity.png")).ndim == 3
