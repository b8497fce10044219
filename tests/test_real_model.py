"""The bundled pretrained EfficientNet-Lite0 on a real annotated photo (imgaug's quokka)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam.apps.data import photo_tensor, quokka, resize_photo
from captum_sscam.apps.models import efficientnet_lite0, lite0_preprocess, lite0_target_layer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setting() -> tuple[torch.nn.Module, torch.Tensor, tuple[float, float, float, float], int]:
    model = efficientnet_lite0()
    photo = resize_photo(quokka(), 224)
    x = lite0_preprocess(photo_tensor(photo))
    with torch.no_grad():
        top_class = int(model(x).argmax())
    return model, x, photo.boxes[0], top_class


def peak_in_box(cam: torch.Tensor, box: tuple[float, float, float, float]) -> bool:
    heat = LayerAttribution.interpolate(cam, (224, 224), interpolate_mode="bilinear")[0, 0]
    y, x = divmod(int(heat.argmax()), 224)
    x1, y1, x2, y2 = box
    return x1 <= x <= x2 and y1 <= y <= y2


def test_score_cam_peak_lies_on_the_quokka(setting) -> None:
    model, x, box, top_class = setting
    cam = ScoreCAM(model, lite0_target_layer(model)).attribute(x, target=top_class)
    assert cam.shape == (1, 1, 7, 7) and cam.max() > 0
    assert peak_in_box(cam, box)


def test_sscam_peak_lies_on_the_quokka(setting) -> None:
    # One noise sample per channel keeps the cost at that of Score-CAM (K' passes).
    model, x, box, top_class = setting
    cam = SmoothedScoreCAM(model, lite0_target_layer(model)).attribute(
        x, target=top_class, nt_samples=1, generator=torch.Generator().manual_seed(0)
    )
    assert cam.shape == (1, 1, 7, 7) and cam.max() > 0
    assert peak_in_box(cam, box)
