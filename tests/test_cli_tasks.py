"""The command line beyond ImageNet classifiers: timm models (random weights unless cached, said
so), torchvision's segmentation and detection models with their default layers and inputs, and
``explain --target-box`` for a segmentation region or a detector's object."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

from captum_sscam import DetectionBox, ScoreCAM, SegmentationRegion
from captum_sscam.apps.cli import main
from captum_sscam.apps.data import bundled_photos, photo_tensor
from captum_sscam.apps.errors import UsageError
from captum_sscam.apps.models import load_model, resolve_layer
from captum_sscam.apps.tasks import box_target


def test_a_timm_model_without_cached_weights_is_random_and_says_so(tmp_path, capsys) -> None:
    code = main([
        "explain", "--bundled-names", "chelsea", "--model", "timm:resnet18", "--size", "64",
        "--method", "score-cam", "--top-k-channels", "4", "--out", str(tmp_path), "--quiet",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "note: timm:resnet18: its pretrained weights are not in this machine's cache" in printed
    assert "the weights are random" in printed
    assert (tmp_path / "chelsea_score-cam.png").stat().st_size > 0


def test_a_timm_model_loads_cached_weights_without_a_note(tmp_path, monkeypatch) -> None:
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(3)
    trained = timm.create_model("resnet18", pretrained=False)
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # timm/resnet18.a1_in1k
    repo = tmp_path / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file(trained.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    loaded = load_model("timm:resnet18")
    assert loaded.notes == ()
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name
    assert (loaded.default_layer, loaded.input_size, len(loaded.class_names)) == (
        "layer4",
        224,
        1000,
    )


def test_a_timm_vit_gets_its_preprocessing_and_token_reshape() -> None:
    loaded = load_model("timm:vit_tiny_patch16_224", "random")
    pixels = torch.full((1, 8, 8, 3), 255, dtype=torch.uint8)
    # timm's ViT normalises with mean 0.5 and std 0.5: white becomes (1 - 0.5) / 0.5 = 1
    torch.testing.assert_close(loaded.preprocess(pixels), torch.ones(1, 3, 8, 8))
    layer = resolve_layer(loaded.model, loaded.default_layer, loaded.name)
    assert loaded.default_layer == "blocks.11"
    x = torch.rand(1, 3, 224, 224)
    maps = ScoreCAM(loaded.model, layer, reshape_transform=loaded.reshape_transform).attribute(
        x, target=3, top_k_channels=2
    )
    assert maps.shape == (1, 1, 14, 14)  # 224 / 16 patches, the class token dropped


def test_timm_weights_are_checked() -> None:
    assert load_model("timm:resnet18", "random").notes == ()  # asked for: no note
    with pytest.raises(UsageError, match=r"a timm model takes DEFAULT .* random, or a state_dict"):
        load_model("timm:resnet18", "IMAGENET1K_V1")


def test_an_unknown_timm_model_suggests_names() -> None:
    with pytest.raises(UsageError, match=r"unknown timm model 'resnet_18'.*did you mean resnet18"):
        load_model("timm:resnet_18")


@pytest.mark.parametrize(
    ("name", "layer", "preprocess"),
    [
        ("lraspp_mobilenet_v3_large", "backbone.16", "imagenet_preprocess"),
        ("deeplabv3_mobilenet_v3_large", "backbone.16", "imagenet_preprocess"),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "backbone.body.16", "unit_preprocess"),
        ("ssdlite320_mobilenet_v3_large", "backbone.features.1", "unit_preprocess"),
    ],
)
def test_segmentation_and_detection_models_load_with_random_weights(
    name: str, layer: str, preprocess: str
) -> None:
    # weights_backbone=None too: nothing is fetched; detectors normalise inputs themselves
    loaded = load_model(name, "random", 64)
    assert (loaded.default_layer, loaded.preprocess.__name__) == (layer, preprocess)
    resolve_layer(loaded.model, loaded.default_layer, name)


def test_target_box_on_a_segmentation_model(tmp_path, capsys) -> None:
    code = main([
        "explain", "--bundled-names", "chelsea", "--model", "lraspp_mobilenet_v3_large",
        "--weights", "random", "--size", "64", "--target-box", "8,16,40,48", "--target", "8",
        "--method", "score-cam", "--top-k-channels", "4", "--out", str(tmp_path), "--quiet",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "chelsea: Score-CAM of class 8 (cat) in box (8, 16, 40, 48)" in printed
    assert (tmp_path / "chelsea_score-cam.png").stat().st_size > 0


def photo_input(loaded_preprocess, size: int = 64) -> Tensor:
    (photo,) = bundled_photos(size, ["chelsea"])
    return loaded_preprocess(photo_tensor(photo)[None])


def test_the_default_segmentation_class_is_the_likeliest_in_the_box() -> None:
    torch.manual_seed(0)
    loaded = load_model("lraspp_mobilenet_v3_large", "random", 64)
    x = photo_input(loaded.preprocess)
    box = (8.0, 16.0, 40.0, 48.0)
    chosen = box_target(loaded.model, x, box, None, loaded.class_names, loaded.name)
    with torch.no_grad():
        inside = loaded.model(x)["out"][0].softmax(dim=0)[:, 16:48, 8:40].mean(dim=(1, 2))
    inside[0] = -1  # not the background
    expected = int(inside.argmax())
    assert isinstance(chosen.target, SegmentationRegion)
    assert chosen.description.startswith(f"class {expected} ({loaded.class_names[expected]})")
    maps = ScoreCAM(loaded.model, resolve_layer(loaded.model, "backbone.16", "")).attribute(
        x, target=chosen.target, top_k_channels=4
    )
    direct = ScoreCAM(loaded.model, resolve_layer(loaded.model, "backbone.16", "")).attribute(
        x, target=SegmentationRegion(expected, box=box), top_k_channels=4
    )
    torch.testing.assert_close(maps, direct)


def small_detector() -> nn.Module:
    """A random-weights Faster R-CNN that keeps its (low) scores, for --model MODULE:FUNCTION."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0,
        rpn_post_nms_top_n_test=20, box_detections_per_img=20,
    )  # fmt: skip


def test_target_box_on_a_detector_explains_the_best_matching_label(tmp_path, capsys) -> None:
    box = (8.0, 8.0, 48.0, 56.0)
    code = main([
        "explain", "--bundled-names", "chelsea", "--model", "tests.test_cli_tasks:small_detector",
        "--layer", "backbone.body.16", "--size", "64", "--target-box", "8,8,48,56",
        "--method", "ss-cam", "--nt-samples", "2", "--top-k-channels", "2",
        "--out", str(tmp_path), "--quiet",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    # the label of the prediction with the best score x IoU, computed here on the same input
    from torchvision.ops import box_iou

    model = small_detector().eval()
    with torch.no_grad():
        found = model(photo_input(lambda pixels: pixels.permute(0, 3, 1, 2).float() / 255))[0]
    overlap = box_iou(found["boxes"], torch.tensor([box]))[:, 0]
    label = int(found["labels"][int((found["scores"] * overlap).argmax())])
    assert re.search(rf"chelsea: SS-CAM of label {label}\b.* at box \(8, 8, 48, 56\)", printed)
    assert (tmp_path / "chelsea_ss-cam.png").stat().st_size > 0


def test_box_target_of_a_detector_with_a_given_label() -> None:
    model = small_detector().eval()
    x = torch.rand(1, 3, 64, 64)
    chosen = box_target(model, x, (0.0, 0.0, 32.0, 32.0), "17", (), "detector")
    assert isinstance(chosen.target, DetectionBox)
    assert chosen.description == "label 17 at box (0, 0, 32, 32)"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--target-box", "1,1,20"], "must be four numbers x0,y0,x1,y1"),
        (["--target-box", "20,1,10,30"], "must have x1 > x0 and y1 > y0"),
        (["--target-box", "1,1,20,20", "--method", "grad-cam"], "Score-CAM family .* not grad-cam"),
        (["--target-box", "1,1,20,20", "--method", "score-cam"], "leave out --target-box for a"),
        (["--target-box", "1,1,200,20", "--method", "score-cam"], "lies outside the model's 64"),
    ],
)
def test_target_box_mistakes_are_explained(arguments, message, tmp_path, capsys) -> None:
    command = [
        "explain", "--bundled-names", "chelsea", "--model", "resnet18", "--weights", "random",
        "--size", "64", "--out", str(tmp_path), "--quiet", *arguments,
    ]  # fmt: skip
    try:
        code = main(command)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
