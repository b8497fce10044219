"""The comparison report: the methods' maps, the metrics plumbing, the HTML, and Chromium."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam
from PIL import Image

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam import report as report_module
from captum_sscam.data import Photo
from captum_sscam.report import (
    NO_METRICS_NOTE,
    attribution_methods,
    compare,
    slug,
    write_report,
)
from tests.browser import ALL_IMAGES_LOADED, ARTIFACTS, headless_chromium, screenshot
from tests.tiny_models import SmallCNN

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def preprocess(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1


def tiny_photos(count: int = 2) -> list[Photo]:
    rng = np.random.default_rng(1)
    boxes = [((2.0, 2.0, 9.0, 9.0),), ()]
    return [
        Photo(name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), boxes[i % 2])
        for i, name in enumerate(["first", "<b>second</b>"][:count])
    ]


@pytest.fixture
def model() -> SmallCNN:
    return SmallCNN(classes=len(CLASSES)).eval()


class ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def test_methods_give_the_maps_of_captum_and_our_classes(model, monkeypatch) -> None:
    monkeypatch.setattr(report_module, "metrics_module", lambda: None)
    photos = tiny_photos()
    methods = attribution_methods(model, model.layer, nt_samples=2, stdevs=0.5, ig_steps=8)
    comparison = compare(model, photos, preprocess, methods, class_names=CLASSES, progress=False)
    inputs = preprocess(torch.stack([torch.from_numpy(p.image) for p in photos]))
    top = model(inputs).softmax(1).argmax(1)
    assert comparison.targets == top.tolist()
    assert [p.index for p in comparison.predictions] == top.tolist()
    assert comparison.predictions[0].name == CLASSES[int(top[0])]
    runs = {run.name: run for run in comparison.runs}
    assert list(runs) == ["Integrated Gradients", "Grad-CAM", "Score-CAM", "SS-CAM"]
    ig = IntegratedGradients(model).attribute(inputs, target=top, n_steps=8)
    torch.testing.assert_close(runs["Integrated Gradients"].maps, ig.sum(1, keepdim=True))
    grad_cam = LayerGradCam(model, model.layer).attribute(inputs, target=top)
    torch.testing.assert_close(runs["Grad-CAM"].maps, grad_cam.detach())
    score_cam = ScoreCAM(model, model.layer).attribute(inputs, target=top)
    torch.testing.assert_close(runs["Score-CAM"].maps, score_cam)
    ss_cam = SmoothedScoreCAM(model, model.layer).attribute(
        inputs, target=top, nt_samples=2, stdevs=0.5, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(runs["SS-CAM"].maps, ss_cam)
    assert all(run.seconds > 0 for run in comparison.runs)
    assert comparison.notes == [NO_METRICS_NOTE]
    assert all(run.metrics == {} for run in comparison.runs)


def test_explicit_targets_are_explained(model, monkeypatch) -> None:
    monkeypatch.setattr(report_module, "metrics_module", lambda: None)
    methods = {"Score-CAM": attribution_methods(model, model.layer)["Score-CAM"]}
    comparison = compare(model, tiny_photos(), preprocess, methods, targets=[4, 1], progress=False)
    assert comparison.targets == [4, 1]
    inputs = preprocess(torch.stack([torch.from_numpy(p.image) for p in tiny_photos()]))
    expected = ScoreCAM(model, model.layer).attribute(inputs, target=[4, 1])
    torch.testing.assert_close(comparison.runs[0].maps, expected)
    with pytest.raises(ValueError, match="1 targets for 2 photos"):
        compare(model, tiny_photos(), preprocess, methods, targets=[4], progress=False)


def fake_metrics(calls: list) -> SimpleNamespace:
    """Stands in for captum_sscam.metrics (built in parallel): records its arguments."""

    def per_example(name: str, value: float):
        def metric(forward_func, inputs, attributions, target=None):
            calls.append((name, forward_func, inputs.shape, attributions.shape, target.tolist()))
            return torch.full((inputs.shape[0],), value)

        return metric

    def energy_pointing_game(attributions, boxes):
        calls.append(("energy_pointing_game", attributions.shape, boxes))
        return torch.tensor([0.625] * len(boxes))

    return SimpleNamespace(
        deletion_auc=per_example("deletion_auc", 0.125),
        insertion_auc=per_example("insertion_auc", 0.5),
        energy_pointing_game=energy_pointing_game,
    )


def test_metrics_are_computed_per_method_when_the_module_exists(
    model, monkeypatch, tmp_path
) -> None:
    calls: list = []
    monkeypatch.setattr(report_module, "metrics_module", lambda: fake_metrics(calls))
    methods = attribution_methods(model, model.layer, nt_samples=1)
    del methods["Integrated Gradients"]
    comparison = compare(model, tiny_photos(), preprocess, methods, progress=False)
    assert comparison.notes == []
    for run in comparison.runs:
        assert run.metrics["deletion_auc"] == [0.125, 0.125]
        assert run.metrics["insertion_auc"] == [0.5, 0.5]
        energy = run.metrics["energy_pointing_game"]
        assert energy[0] == 0.625 and np.isnan(energy[1])  # the second photo has no box
    deletion = [c for c in calls if c[0] == "deletion_auc"]
    assert len(deletion) == 3
    assert deletion[0][1] is model and deletion[0][2] == (2, 3, 16, 16)
    assert deletion[0][3] == (2, 1, 8, 8) and deletion[0][4] == comparison.targets
    energy_calls = [c for c in calls if c[0] == "energy_pointing_game"]
    assert energy_calls[0][1] == (1, 1, 16, 16)  # upsampled, only the photo with a box
    assert energy_calls[0][2] == [((2.0, 2.0, 9.0, 9.0),)]

    path = write_report(comparison, tmp_path, title="t")
    page = path.read_text()
    assert "deletion_auc: 0.125" in page and "energy_pointing_game: n/a" in page
    assert "<th>mean energy_pointing_game</th>" in page


def test_report_html_embeds_every_picture(model, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(report_module, "metrics_module", lambda: None)
    photos = tiny_photos()
    methods = attribution_methods(model, model.layer, nt_samples=1, ig_steps=4)
    comparison = compare(model, photos, preprocess, methods, class_names=CLASSES, progress=False)
    path = write_report(comparison, tmp_path, title="Tiny <report>", model_name="SmallCNN")
    page = path.read_text()
    parser = ImageSources()
    parser.feed(page)
    assert len(parser.images) == len(photos) * (1 + len(methods))
    for image in parser.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        assert png.size == (16, 16)
    assert "<title>Tiny &lt;report&gt;</title>" in page
    assert "&lt;b&gt;second&lt;/b&gt;" in page and "<b>second</b>" not in page
    for prediction in comparison.predictions:
        assert f"predicted: {prediction.name} ({prediction.probability:.1%})" in page
    for run in comparison.runs:
        assert f"<td>{run.name}</td><td>{run.seconds:.2f}</td>" in page
        for photo in photos:
            assert (tmp_path / f"{slug(photo.name)}_{slug(run.name)}.png").is_file()
    assert NO_METRICS_NOTE in page
    assert "model: SmallCNN; torch " in page
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", page)  # self-contained


def test_report_opens_in_chromium_with_every_image_loaded(model, monkeypatch) -> None:
    monkeypatch.setattr(report_module, "metrics_module", lambda: None)
    photos = tiny_photos()
    methods = attribution_methods(model, model.layer, nt_samples=1, ig_steps=4)
    comparison = compare(model, photos, preprocess, methods, class_names=CLASSES, progress=False)
    path = write_report(comparison, ARTIFACTS / "report", title="Browser check")
    with headless_chromium() as driver:
        driver.get(path.resolve().as_uri())
        images = driver.execute_script(ALL_IMAGES_LOADED)
        heading = driver.find_element("tag name", "h1").text
        shot = screenshot(driver, "report.png")
    assert heading == "Browser check"
    assert len(images) == len(photos) * (1 + len(methods))
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt
    assert shot.stat().st_size > 10_000


def test_slug() -> None:
    assert slug("SS-CAM") == "ss-cam"
    assert slug("Integrated Gradients") == "integrated-gradients"
    assert slug("Grad-CAM (upsampled)") == "grad-cam-upsampled"
