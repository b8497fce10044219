"""Captum Insights (Captum 0.8 only): the registered methods through Flask and a real browser.

Runs in the second environment, `.venv-insights` (`make test-insights`); under
Captum 0.9 `tests/test_insights_retired.py` checks the error instead.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

pytest.importorskip(
    "captum.insights", reason="Captum Insights needs captum 0.8: runs in .venv-insights"
)

from captum.attr import LayerGradCam
from captum.insights.attr_vis import server
from PIL import Image
from werkzeug.serving import make_server

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam.apps.data import Photo
from captum_sscam.apps.insights import insights_method, photo_visualizer
from captum_sscam.apps.methods import get_method
from captum_sscam.metrics import input_shaped
from captum_sscam.visualization import upsample_map
from tests.browser import ALL_IMAGES_LOADED, headless_chromium, screenshot
from tests.tiny_models import SmallCNN

CLASSES = ["ant", "bee", "cat", "dog", "eel"]
EXAMPLES = 4  # Insights shows four examples per fetch


def layer_of(model: SmallCNN) -> torch.nn.Module:
    return model.layer


def photos() -> list[Photo]:
    rng = np.random.default_rng(0)
    return [
        Photo(f"p{i}", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for i in range(EXAMPLES)
    ]


@pytest.fixture(scope="module")
def model() -> SmallCNN:
    return SmallCNN(classes=len(CLASSES)).eval()


@pytest.fixture(scope="module")
def client(model: SmallCNN) -> Iterator[object]:
    server.visualizer = photo_visualizer(
        model, layer_of, photos(), lambda image: image * 2 - 1, CLASSES, nt_samples=2
    )
    yield server.app.test_client()
    server.visualizer = None


def fetch(client: object, method: str, arguments: dict) -> list[dict]:
    settings = {
        "attribution_method": method,
        "arguments": arguments,
        "prediction": "all",
        "classes": [],
    }
    response = client.post("/fetch", json=settings)
    assert response.status_code == 200, response.data[:500]
    return response.get_json()


def decoded(png_base64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_base64))).convert("RGB"))


def test_adapter_returns_the_layer_map_upsampled_in_every_channel(model) -> None:
    inputs = torch.randn(2, 3, 16, 16)
    adapter_cls = insights_method(get_method("score-cam"), layer_of)
    adapter = adapter_cls(model)  # built as Insights does: cls(model)
    (attribution,) = adapter.attribute.__wrapped__(adapter, (inputs,), target=torch.tensor([1, 3]))
    assert attribution.shape == inputs.shape
    layer_map = ScoreCAM(model, model.layer).attribute(inputs, target=[1, 3])
    expected = torch.nn.functional.interpolate(layer_map, (16, 16), mode="bilinear")
    for channel in range(3):  # captum_sscam.metrics.input_shaped: the map in every channel
        torch.testing.assert_close(attribution[:, channel : channel + 1], expected)
    torch.testing.assert_close(input_shaped(layer_map, inputs)[0], attribution)
    assert adapter_cls.get_name() == "Score-CAM"


def test_init_lists_the_registry_methods_with_their_parameters(client) -> None:
    config = client.get("/init").get_json()
    for name in ("Integrated Gradients", "Grad-CAM", "Score-CAM", "SS-CAM", "SS-CAM (input)"):
        assert name in config["methods"]
    for name in ("SS-CAM", "SS-CAM (input)"):
        ss_cam = config["method_arguments"][name]
        assert ss_cam["nt_samples"] == {"value": 2, "limit": [1, None], "type": "number"}
        assert ss_cam["stdevs"] == {"value": "2.0", "type": "string"}
        assert set(ss_cam) == {"nt_samples", "stdevs", "score_mode"}
    assert config["method_arguments"]["Score-CAM"]["score_mode"]["limit"] == [
        "probability",
        "sigmoid",
        "logit",
        "channel_softmax",
    ]
    assert "Grad-CAM" not in config["method_arguments"]  # no parameters to set


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("Integrated Gradients", {"n_steps": 4, "method": "gausslegendre"}),
        ("Score-CAM", {"score_mode": "probability"}),
        ("SS-CAM", {"nt_samples": 2, "stdevs": "0.5", "score_mode": "probability"}),
        ("SS-CAM (input)", {"nt_samples": 1, "stdevs": "0.5", "score_mode": "probability"}),
        ("Grad-CAM", {}),
    ],
)
def test_fetch_returns_images_for_each_method(client, method: str, arguments: dict) -> None:
    outputs = fetch(client, method, arguments)
    assert len(outputs) == EXAMPLES
    assert server.visualizer._config.attribution_method == method
    for (output,) in outputs:  # one output per model, one model
        (feature,) = output["feature_outputs"]
        original, heat = decoded(feature["base"]), decoded(feature["modified"])
        assert original.shape == heat.shape and original.ndim == 3
        assert not np.array_equal(original, heat)
        assert output["predicted"][0]["label"] in CLASSES


def test_ss_cam_parameters_reach_the_method(client) -> None:
    # stdevs 0 makes SS-CAM exactly Score-CAM (zero noise leaves every mask as it is):
    # same pictures; a large noise level changes them, so the dashboard's values were used.
    score_cam = fetch(client, "Score-CAM", {"score_mode": "channel_softmax"})
    exact = {"nt_samples": 1, "stdevs": "0", "score_mode": "channel_softmax"}
    ss_cam = fetch(client, "SS-CAM", exact)
    noisy = fetch(client, "SS-CAM", {**exact, "nt_samples": 3, "stdevs": "40"})
    heat = [
        [o["feature_outputs"][0]["modified"] for (o,) in out] for out in (score_cam, ss_cam, noisy)
    ]
    assert heat[0] == heat[1]
    assert heat[0] != heat[2]


def test_grad_cam_entry_is_captum_layer_grad_cam_upsampled(model) -> None:
    inputs = torch.randn(1, 3, 16, 16)
    adapter = insights_method(get_method("grad-cam"), layer_of)(model)
    (attribution,) = adapter.attribute.__wrapped__(adapter, (inputs,), target=torch.tensor([2]))
    layer_map = LayerGradCam(model, model.layer).attribute(inputs, target=2, relu_attributions=True)
    torch.testing.assert_close(attribution[:, :1], upsample_map(layer_map, (16, 16)))


def test_ss_cam_adapter_takes_nt_samples_and_seeded_noise(model) -> None:
    inputs = torch.randn(1, 3, 16, 16)
    adapter = insights_method(get_method("ss-cam-input"), layer_of)(model)
    kwargs = {"nt_samples": 3, "stdevs": 0.7, "generator": torch.Generator().manual_seed(5)}
    (attribution,) = adapter.attribute.__wrapped__(
        adapter, (inputs,), target=torch.tensor([0]), **kwargs
    )
    kwargs["generator"] = torch.Generator().manual_seed(5)
    layer_map = SmoothedScoreCAM(model, model.layer).attribute(
        inputs, target=0, noise_on="input", **kwargs
    )
    torch.testing.assert_close(attribution[:, 2:], upsample_map(layer_map, (16, 16)))


def test_dashboard_in_chromium_shows_ss_cam_attributions(model) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server.visualizer = photo_visualizer(
        model, layer_of, photos(), lambda image: image * 2 - 1, CLASSES, nt_samples=2
    )
    http = make_server("127.0.0.1", 0, server.app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        with headless_chromium() as driver:
            driver.get(f"http://127.0.0.1:{http.server_port}/")
            wait = WebDriverWait(driver, 60)
            method = wait.until(lambda d: d.find_element(By.NAME, "selected_method"))
            Select(method).select_by_visible_text("SS-CAM")
            samples = driver.find_element(By.NAME, "nt_samples")
            assert samples.get_attribute("value") == "2"
            driver.find_element(By.XPATH, "//button[text()='Fetch']").click()
            wait.until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, "img[alt=attribution]")) == EXAMPLES
            )
            images = driver.execute_script(ALL_IMAGES_LOADED)
            chosen = server.visualizer._config.attribution_method
            arguments = dict(server.visualizer._config.attribution_arguments)
            shot = screenshot(driver, "insights-ss-cam.png")
    finally:
        http.shutdown()
        server.visualizer = None
    assert chosen == "SS-CAM"
    assert arguments["nt_samples"] == 2 and arguments["stdevs"] == 2.0
    attributions = [image for image in images if image[0] == "attribution"]
    assert len(attributions) == EXAMPLES
    assert all(complete and width > 0 and height > 0 for _, complete, width, height in images)
    assert shot.stat().st_size > 10_000


def test_insights_command_serves_the_bundled_model_and_photos(monkeypatch, capsys) -> None:
    from captum.insights import AttributionVisualizer
    from captum.insights.attr_vis import config

    from captum_sscam.apps.cli import main

    served = {}

    def fake_serve(visualizer, **kwargs):  # records instead of blocking on a port
        served.update(kwargs, visualizer=visualizer)

    monkeypatch.setattr(AttributionVisualizer, "serve", fake_serve)
    assert main(["insights", "--port", "8765", "--nt-samples", "3"]) == 0
    assert served["port"] == 8765 and served["blocking"] is True
    assert "Ctrl-C stops it" in capsys.readouterr().out
    assert config.ATTRIBUTION_METHOD_CONFIG["SS-CAM"].params["nt_samples"].value == 3
    (batch,) = served["visualizer"].dataset
    assert batch.inputs.shape == (7, 3, 224, 224)
    classes = served["visualizer"].classes
    names = [classes[int(label)] for label in batch.labels]
    assert names[:2] == ["espresso", "Egyptian cat"]  # coffee, chelsea, as Lite0 sees them
