"""The comparison report: the methods' maps, bounded memory, the metrics, the HTML, and Chromium."""

from __future__ import annotations

import base64
import html
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam
from PIL import Image

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam import metrics as library_metrics
from captum_sscam.apps.data import Photo
from captum_sscam.apps.methods import COMPARED, Options, explain_functions
from captum_sscam.apps.report import COLOUR_SCALE_NOTE, compare, slug, write_report
from tests.browser import ALL_IMAGES_LOADED, ARTIFACTS, headless_chromium, screenshot
from tests.tiny_models import SmallCNN

CLASSES = ["ant", "bee", "cat", "dog", "eel"]
CELL_PNG = (224, 274)  # the photo at 224 px wide (100 dpi) with the colour bar under it


def preprocess(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1


def tiny_photos(count: int = 2) -> list[Photo]:
    rng = np.random.default_rng(1)
    boxes = [((2.0, 2.0, 9.0, 9.0),), ()]
    names = ["first", "<b>second</b>", "third", "fourth", "fifth"]
    return [
        Photo(name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), boxes[i % 2])
        for i, name in enumerate(names[:count])
    ]


def batch(photos: list[Photo]) -> torch.Tensor:
    return preprocess(torch.stack([torch.from_numpy(p.image) for p in photos]))


@pytest.fixture
def model() -> SmallCNN:
    return SmallCNN(classes=len(CLASSES)).eval()


def methods_of(model: SmallCNN, keys=COMPARED, **options) -> dict:
    return explain_functions(keys, model, model.layer, Options(**options))


class ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def test_methods_give_the_maps_of_captum_and_our_classes(model) -> None:
    photos = tiny_photos()
    methods = methods_of(model, nt_samples=2, stdevs=0.5, ig_steps=8)
    comparison = compare(
        model, photos, preprocess, methods, class_names=CLASSES, with_metrics=False,
        progress=False,
    )  # fmt: skip
    inputs = batch(photos)
    top = model(inputs).softmax(1).argmax(1)
    assert comparison.targets == top.tolist()
    assert [p.index for p in comparison.predictions] == top.tolist()
    assert comparison.predictions[0].name == CLASSES[int(top[0])]
    runs = {run.name: run for run in comparison.runs}
    assert list(runs) == ["Integrated Gradients", "Grad-CAM", "Score-CAM", "SS-CAM"]
    ig = IntegratedGradients(model).attribute(inputs, target=top, n_steps=8)
    torch.testing.assert_close(runs["Integrated Gradients"].maps, ig.sum(1, keepdim=True))
    grad_cam = LayerGradCam(model, model.layer).attribute(
        inputs, target=top, relu_attributions=True
    )
    torch.testing.assert_close(runs["Grad-CAM"].maps, grad_cam.detach())
    score_cam = ScoreCAM(model, model.layer).attribute(inputs, target=top)
    torch.testing.assert_close(runs["Score-CAM"].maps, score_cam)
    for index in range(len(photos)):  # each photo's noise is seeded on its own
        ss_cam = SmoothedScoreCAM(model, model.layer).attribute(
            inputs[index : index + 1], target=top[index : index + 1], nt_samples=2, stdevs=0.5,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        torch.testing.assert_close(runs["SS-CAM"].maps[index : index + 1], ss_cam)
    assert all(run.seconds > 0 for run in comparison.runs)
    assert all(run.metrics == {} for run in comparison.runs)


def test_explicit_targets_are_explained(model) -> None:
    methods = methods_of(model, keys=["score-cam"])
    comparison = compare(
        model, tiny_photos(), preprocess, methods, targets=[4, 1], with_metrics=False,
        progress=False,
    )  # fmt: skip
    assert comparison.targets == [4, 1]
    expected = ScoreCAM(model, model.layer).attribute(batch(tiny_photos()), target=[4, 1])
    torch.testing.assert_close(comparison.runs[0].maps, expected)
    with pytest.raises(ValueError, match="1 targets for 2 photos"):
        compare(model, tiny_photos(), preprocess, methods, targets=[4], progress=False)


@pytest.mark.parametrize("count", [1, 5])
def test_forward_batches_are_bounded_whatever_the_number_of_photos(model, count) -> None:
    # The model sees at most `batch_size` images per forward pass: the methods run one
    # photo at a time (IG's 8 steps in internal batches of 3), and so do the metrics.
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    keys = [*COMPARED, "ss-cam-input"]
    methods = methods_of(model, keys=keys, nt_samples=2, ig_steps=8, batch_size=3)
    compare(model, tiny_photos(count), preprocess, methods, batch_size=3, progress=False)
    assert max(sizes) == 3
    assert sizes.count(3) > 10 * count


def test_metrics_are_the_library_values_with_labels(model, tmp_path) -> None:
    photos = tiny_photos()
    methods = methods_of(model, keys=["grad-cam", "score-cam"])
    comparison = compare(model, photos, preprocess, methods, progress=False)
    inputs = batch(photos)
    targets = torch.tensor(comparison.targets)
    for run in comparison.runs:
        common = {"target": targets}
        expected = {
            "deletion": library_metrics.deletion_auc(model, inputs, run.maps, **common),
            "insertion": library_metrics.insertion_auc(model, inputs, run.maps, **common),
            "average_drop": library_metrics.average_drop(model, inputs, run.maps, **common),
            "increase": library_metrics.increase_in_confidence(model, inputs, run.maps, **common),
        }
        for key, values in expected.items():
            assert run.metrics[key] == pytest.approx(values.tolist(), abs=1e-6), key
        energy = library_metrics.energy_pointing_game(run.maps[:1], [photos[0].boxes], (16, 16))
        assert run.metrics["energy_pg"][0] == pytest.approx(float(energy[0]))
        assert np.isnan(run.metrics["energy_pg"][1])  # the second photo has no box

    page = write_report(comparison, tmp_path, title="t").read_text()
    deletion = comparison.runs[0].metrics["deletion"][0]
    assert f"Deletion AUC (lower is better): {deletion:.3g}" in page
    for heading in (
        "Insertion AUC (higher is better)",
        "Average Drop % (lower is better)",
        "Increase in Confidence % (higher is better)",
        "Pointing game (15 px) (higher is better)",
    ):
        assert f"<th>mean {heading}</th>" in page
    assert "Energy pointing game (higher is better): n/a" in page
    assert "deletion_auc" not in page and "increase_in_confidence" not in page


def test_cells_have_a_colour_bar(model, tmp_path) -> None:
    comparison = compare(
        model, tiny_photos(1), preprocess, methods_of(model, keys=["score-cam"]),
        with_metrics=False, progress=False,
    )  # fmt: skip
    path = write_report(comparison, tmp_path)
    png = np.asarray(Image.open(tmp_path / "first_score-cam.png").convert("RGB")).astype(int)
    assert png.shape[:2] == CELL_PNG[::-1]
    # The bar is the row under the picture whose colours run from blue (0) to red (1).
    bar_rows = [
        row for row in png[224:]
        if row[20, 2] > row[20, 0] + 40 and row[-20, 0] > row[-20, 2] + 40
    ]  # fmt: skip
    assert bar_rows
    assert html.escape(COLOUR_SCALE_NOTE) in path.read_text()


def test_the_model_sees_the_centre_crop_of_a_non_square_photo(model, tmp_path) -> None:
    from captum_sscam.apps.data import load_images

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = (0, 255, 0)  # green bands at the sides, outside the centre square
    pixels[:, 30:] = (0, 255, 0)
    pixels[:, 10:30] = (200, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    (photo,), notes = load_images([tmp_path / "wide.png"], 16)
    assert notes == [] and photo.image.shape == (16, 16, 3)
    seen = []

    def recording(batch_pixels: torch.Tensor) -> torch.Tensor:
        seen.append(batch_pixels.clone())
        return preprocess(batch_pixels)

    comparison = compare(
        model, [photo], recording, methods_of(model, keys=["grad-cam"]), with_metrics=False,
        progress=False,
    )  # fmt: skip
    (pixels_seen,) = seen
    assert pixels_seen[0, :, :, 1].max() < 40  # no green: the sides were cropped, not squashed
    assert pixels_seen[0, :, :, 0].min() > 160
    page = write_report(comparison, tmp_path / "report").read_text()
    assert "the centre square cropped" in page


def test_report_html_embeds_every_picture(model, tmp_path) -> None:
    photos = tiny_photos()
    methods = methods_of(model, nt_samples=1, ig_steps=4)
    comparison = compare(
        model, photos, preprocess, methods, class_names=CLASSES, with_metrics=False,
        progress=False,
    )  # fmt: skip
    path = write_report(comparison, tmp_path, title="Tiny <report>", model_name="SmallCNN")
    page = path.read_text()
    parser = ImageSources()
    parser.feed(page)
    assert len(parser.images) == len(photos) * (1 + len(methods))
    sizes = []
    for image in parser.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        sizes.append(png.size)
    assert sizes.count((16, 16)) == len(photos) and sizes.count(CELL_PNG) == 4 * len(photos)
    assert "<title>Tiny &lt;report&gt;</title>" in page
    assert "&lt;b&gt;second&lt;/b&gt;" in page and "<b>second</b>" not in page
    for prediction in comparison.predictions:
        assert f"predicted: {prediction.name} ({prediction.probability:.1%})" in page
    for run in comparison.runs:
        assert f"<td>{run.name}</td><td>{run.seconds:.2f}</td>" in page
        for photo in photos:
            assert (tmp_path / f"{slug(photo.name)}_{slug(run.name)}.png").is_file()
    assert "model: SmallCNN; torch " in page
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", page)  # self-contained


def test_report_opens_in_chromium_with_every_image_loaded(model) -> None:
    photos = tiny_photos()
    methods = methods_of(model, nt_samples=1, ig_steps=4)
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
    assert slug("SS-CAM (input)") == "ss-cam-input"
