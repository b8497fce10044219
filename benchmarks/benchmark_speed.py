"""Speed of a Score-CAM call and what each fast option costs in faithfulness, on the CPU.

Part ``timing``: one ``ScoreCAM(model, layer).attribute(x, target=...)`` call per
row, each in a fresh process (rows in turns, ``--repeats`` times, so that load
from other processes falls on all of them alike), on one 224 px photo (coffee):

- the default call (fp32; ``channels_last=None`` times real batches in both
  memory formats and keeps the faster; glibc keeps freed memory);
- the same call forced to ``channels_last=False`` and to ``channels_last=True``;
- ``autocast_dtype="auto"`` (bf16 on CPUs with AMX or AVX512-BF16, else fp32);
- "before": ``channels_last=False`` with ``CAPTUM_SSCAM_MALLOC=default`` (glibc's
  own malloc settings), which is what the default call did before this engine;
- the bare K' forwards the call must make (random inputs, the engine's batch);
- torchcam 0.5.0's ScoreCAM (scores every channel, constant ones included), with
  glibc's own malloc settings, as its users run it, and with freed memory kept as
  this package keeps it (``keep_freed_memory()`` before the call).

Per row: wall, user and system seconds and minor page faults of the call
(``getrusage``), the images through the model, the memory format the call used,
the process's peak resident memory, and "x bare": the call's time over K' times
the cost of one bare forward, measured in the same process right after the call
(32 bare forwards in each memory format at the row's precision, after one untimed
batch in each; the better format's mean). Nothing runs before the call but the
one forward that picks the target, so the call is a process's first, cold one.
``--model lite0`` (default): the bundled pretrained EfficientNet-Lite0, 1280 x 7 x 7
head activation. ``--model resnet50`` /
``resnet18``: torchvision, random weights (seed 0), ImageNet normalisation, layer4.
``--top-k K`` passes ``top_k_channels=K`` to every row of this package (then the
torchcam row is left out: it cannot be restricted).

Part ``calibration``: what the automatic memory format costs, measured where load
cannot tell the rows apart: one warm process, a first call on a fresh ``ScoreCAM``
per row (automatic, forced channels-last, forced contiguous) in turns, ``--repeats``
times; the automatic call's time over the better forced one's, per repeat.

Part ``compile``: ``compile_forward=True`` against the eager call, in one warm process, in
fp32 and with ``autocast_dtype="auto"``: a warm eager call (the default memory format,
after one untimed call), the first compiled call (it compiles), a second compiled call,
the number of calls after which compiling has paid, and the compiled map's largest
difference from the eager map (relative to the map's maximum).

Part ``batch``: bare fp32 forwards of the timing model by batch size (8 to 64).

Part ``groups``: Group Score-CAM against Score-CAM (every channel) and against Score-CAM on
the top-k channels at the same number of forwards (``top_k_channels=G``), in one warm
process, rows in turns, ``--repeats`` times, ``channels_last=False`` in every row: wall
seconds (median), the images through the model, the speed-up over Score-CAM, the map's
correlation with Score-CAM's, and the clustering's cost as the Group call's time minus the
top-k call's (both make G masked forwards). ``--groups`` lists the G.

Part ``faithfulness``: the pretrained EfficientNet-Lite0 on real photos; each
approximate option's map against exact SS-CAM at the same N (Pearson correlation,
change of deletion / insertion AUC) and precision / memory format against fp32 on
the same channels. Part ``noise``: the iid and antithetic noise samplers against
a large-N reference at equal forward budget.

Run (hold the shared lock; the Lite0 timing with 2 repeats took 12 minutes on 2 shared
cores with one torch thread, ``OMP_NUM_THREADS=1``, which the docs' tables used):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/benchmark_speed.py --parts timing --model lite0 --repeats 2

Deletion / insertion AUC come from ``captum_sscam.metrics`` (the Score-CAM
paper's setting: 1 % steps, deletion to zeros, insertion from a blurred copy).

Private names (through ``benchmarks/_common.py``): the CPU line, what
``autocast_dtype="auto"`` picks (each row's bare forwards run at the row's precision), the
malloc variables each row's process is cleared of, and ``varying_channels`` (K', the
forwards a call must make). The memory format a call used is read off its last masked
batch (a forward pre-hook), not from the method's internals.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import (
    OPT_OUT_VARIABLE,
    auto_dtype,
    counted_forwards,
    in_fresh_process,
    lite0,
    lite0_input,
    machine_header,
    measured,
    photos,
    resident_mb,
    top1,
    varying_channel_count,
)
from torch import Tensor, nn

from captum_sscam import GroupScoreCAM, ScoreCAM, SmoothedScoreCAM, set_keep_freed_memory
from captum_sscam.apps.data import photo_tensor, resize_photo
from captum_sscam.apps.models import imagenet_preprocess
from captum_sscam.metrics import deletion_auc, insertion_auc

BRACKET_FORWARDS = 32


# ---------------------------------------------------------------- measuring


@contextmanager
def peak_resident_growth() -> Iterator[list[float]]:
    """Peak resident memory above the start in MB, sampled every 2 ms (Linux)."""
    result = [0.0]
    if not os.path.exists("/proc/self/statm"):
        yield result
        return
    start = resident_mb()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result[0] = max(result[0], resident_mb() - start)
            done.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


@dataclass
class Row:
    name: str
    seconds: float
    forwards: int
    peak_mb: float


def measure(name: str, model: nn.Module, run: Callable[[], Any]) -> tuple[Row, Any]:
    """Time ``run``; count the images that pass through ``model``; peak memory."""
    with counted_forwards(model) as forwards, peak_resident_growth() as peak:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    row = Row(name, seconds, forwards.images, peak[0])
    print(f"  {name}: {seconds:.1f} s, {forwards.images} forwards", flush=True)
    return row, result


# ------------------------------------------------------------------- part 1


@dataclass(frozen=True)
class TimingRow:
    """One row of the timing table: what runs, with which options and allocator."""

    label: str
    kind: str  # "ours", "bare" or "torchcam"
    options: tuple[tuple[str, Any], ...] = ()
    malloc: str = "keep"  # CAPTUM_SSCAM_MALLOC in the row's process

    @property
    def precision(self) -> torch.dtype | None:
        """The autocast dtype of this row's forwards (``"auto"`` resolved on this CPU)."""
        dtype = dict(self.options).get("autocast_dtype")
        return auto_dtype("cpu") if dtype == "auto" else dtype


TIMING_ROWS: dict[str, TimingRow] = {
    row.label: row
    for row in (
        TimingRow("default call", "ours"),
        TimingRow("channels_last=False (fp32 contiguous)", "ours", (("channels_last", False),)),
        TimingRow("channels_last=True", "ours", (("channels_last", True),)),
        TimingRow('autocast_dtype="auto"', "ours", (("autocast_dtype", "auto"),)),
        TimingRow(
            "before: CAPTUM_SSCAM_MALLOC=default, channels_last=False",
            "ours",
            (("channels_last", False),),
            malloc="default",
        ),
        TimingRow("bare K' forwards (fp32 contiguous)", "bare"),
        TimingRow("torchcam 0.5.0 ScoreCAM (glibc defaults)", "torchcam", malloc="default"),
        TimingRow("torchcam 0.5.0 ScoreCAM (freed memory kept)", "torchcam"),
    )
}


def timing_setting(model_name: str, size: int) -> tuple[nn.Module, nn.Module, Tensor, str]:
    """The model, its layer, one photo (coffee) and a title for the timing part."""
    coffee = photos()["coffee"]
    if model_name == "lite0":
        model, layer = lite0()
        title = f"EfficientNet-Lite0 (pretrained), coffee {size} px, head activation"
        return model, layer, lite0_input(coffee, size), title
    from torchvision import models

    torch.manual_seed(0)
    model = getattr(models, model_name)(weights=None).eval()
    x = imagenet_preprocess(photo_tensor(resize_photo(coffee, size))[None])
    return (
        model,
        model.layer4,
        x,
        f"{model_name} (random weights, seed 0), coffee {size} px, layer4",
    )


def bare_forwards(
    model: nn.Module, count: int, batch: Tensor, dtype: torch.dtype | None = None
) -> None:
    """``count`` forwards of rows of ``batch`` (in its memory format), ``len(batch)`` per call."""
    with (
        torch.no_grad(),
        torch.autocast(
            "cpu", torch.bfloat16 if dtype is None else dtype, enabled=dtype is not None
        ),
    ):
        for start in range(0, count, batch.shape[0]):
            model(batch[: min(batch.shape[0], count - start)])


def seconds_per_bare_forward(model: nn.Module, batch: Tensor, dtype: torch.dtype | None) -> float:
    """The better memory format's time of one forward: ``BRACKET_FORWARDS`` in each format,
    after one untimed batch in it."""
    times = []
    for channels_last in (False, True):
        inputs = batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
        bare_forwards(model, inputs.shape[0], inputs, dtype)
        start = time.perf_counter()
        bare_forwards(model, BRACKET_FORWARDS, inputs, dtype)
        times.append((time.perf_counter() - start) / BRACKET_FORWARDS)
    return min(times)


def timing_child(args: argparse.Namespace) -> None:
    """One timing row in this (fresh) process; prints one JSON line."""
    row = TIMING_ROWS[args.child]
    # what the row's call will find: decided as on a process's first call, so
    # CAPTUM_SSCAM_MALLOC=default in the row's environment still opts out
    malloc = set_keep_freed_memory(True)
    torch.manual_seed(0)
    model, layer, x, _ = timing_setting(args.model, args.size)
    target = top1(model, x)
    k_prime = varying_channel_count(model, layer, x)
    forwards_needed = min(k_prime, args.top_k) if args.top_k else k_prime
    bare_batch = torch.randn(args.batch, *x.shape[1:])
    method = ScoreCAM(model, layer)
    options = dict(row.options)
    if args.top_k:
        options["top_k_channels"] = args.top_k

    def run() -> Tensor | None:
        if row.kind == "bare":
            bare_forwards(model, forwards_needed, bare_batch)
            return None
        if row.kind == "torchcam":
            from torchcam.methods import ScoreCAM as TorchcamScoreCAM

            shape = tuple(x.shape[1:])
            with TorchcamScoreCAM(model, layer, batch_size=args.batch, input_shape=shape) as cam:
                with torch.no_grad():
                    scores = model(x)
                return cam(target, scores)[0]
        return method.attribute(x, target=target, perturbations_per_eval=args.batch, **options)

    with counted_forwards(model) as forwards:
        usage, saliency = measured(run)
    bare = seconds_per_bare_forward(model, bare_batch, row.precision)
    if saliency is not None:
        torch.save(saliency.detach().float().reshape(-1), args.map)
    measured_row = {
        **dataclasses.asdict(usage),
        "forwards": forwards.images,
        "k_prime": k_prime,
        "needed": forwards_needed,
        "bare": bare,
        # the format of the call's last masked batch: the automatic choice, or the forced one
        "format": forwards.last_format if row.kind == "ours" else "-",
        "malloc": malloc.applied,
    }
    print(json.dumps(measured_row))


def run_timing_row(row: TimingRow, args: argparse.Namespace, map_path: str) -> dict:
    arguments = [__file__, "--child", row.label, "--map", map_path]
    arguments += ["--model", args.model, "--size", str(args.size), "--batch", str(args.batch)]
    arguments += ["--top-k", str(args.top_k or 0)]
    return in_fresh_process(arguments, {OPT_OUT_VARIABLE: row.malloc})


def timing(args: argparse.Namespace) -> None:
    rows = [
        row
        for label, row in TIMING_ROWS.items()
        if label in (args.rows or TIMING_ROWS) and not (args.top_k and row.kind == "torchcam")
    ]
    results: dict[str, list[dict]] = {row.label: [] for row in rows}
    maps: dict[str, list[Tensor]] = {row.label: [] for row in rows}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for index, row in enumerate(rows):
                map_path = str(Path(folder) / f"{index}-{repeat}.pt")
                results[row.label].append(run_timing_row(row, args, map_path))
                if Path(map_path).exists():
                    maps[row.label].append(torch.load(map_path))
                print(f"  {row.label} #{repeat + 1}: {results[row.label][-1]}", flush=True)
    first = results[rows[0].label][0]
    restricted = f", top_k_channels={args.top_k} in every row" if args.top_k else ""
    _, _, _, title = timing_setting(args.model, args.size)
    print(
        f"\n{title}, K' = {first['k_prime']}{restricted}, batch {args.batch}; one fresh process "
        f"per run, rows in turns, {args.repeats} run(s) each"
    )
    print(
        "| row | run | format | wall s | user s | system s | system / user | minor faults "
        "| forwards | peak RSS MB | bare ms / forward | x bare K' | max map diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    reference_label = "channels_last=False (fp32 contiguous)"
    for row in rows:
        for repeat, run in enumerate(results[row.label]):
            diff = "-"
            if maps[row.label] and maps.get(reference_label):
                reference = maps[reference_label][repeat]
                if maps[row.label][repeat].shape == reference.shape:
                    change = (maps[row.label][repeat] - reference).abs().max()
                    diff = f"{float(change / reference.abs().max().clamp(min=1e-30)):.1e}"
            print(
                f"| {row.label} | {repeat + 1} | {run['format']} | {run['wall']:.1f} "
                f"| {run['user']:.1f} | {run['system']:.2f} "
                f"| {100 * run['system'] / max(run['user'], 1e-9):.0f} % | {run['faults']:,} "
                f"| {run['forwards']} | {run['peak_mb']:.0f} | {1000 * run['bare']:.1f} "
                f"| {run['wall'] / (run['needed'] * run['bare']):.2f} | {diff} |"
            )
    print(
        "\nmax map diff: largest absolute difference from the channels_last=False map of the "
        "same run, relative to that map's maximum (torchcam: channel-softmax mode, not comparable)"
    )
    timing_goals({label: runs for label, runs in results.items() if runs})


def timing_goals(results: dict[str, list[dict]]) -> None:
    """The goals, on the median wall time of each row's runs."""
    wall = {
        label: statistics.median(run["wall"] for run in runs) for label, runs in results.items()
    }
    default, before = (
        wall.get("default call"),
        wall.get("before: CAPTUM_SSCAM_MALLOC=default, channels_last=False"),
    )
    if default and before:
        print(f"default call vs before: {before / default:.2f}x faster (goal >= 2x)")
    if default:
        runs = results["default call"]
        share = statistics.median(run["system"] / run["user"] for run in runs)
        print(f"default call: system time {100 * share:.1f} % of user time (goal < 10 %)")
        forced = [wall.get("channels_last=False (fp32 contiguous)"), wall.get("channels_last=True")]
        if all(forced):
            best = min(forced)
            print(
                f"automatic format: {100 * (default / best - 1):+.1f} % against the better "
                "forced format (goal within 5 %)"
            )
    for label in TIMING_ROWS:
        if label.startswith("torchcam") and label in wall and default:
            print(f"{label} / default call: {wall[label] / default:.2f}x")


def calibration_cost(args: argparse.Namespace) -> None:
    """The automatic memory format's cost, in one warm process: each repeat times a first
    call on a fresh ``ScoreCAM`` (so the default call calibrates every time) with
    ``channels_last=None``, ``True`` and ``False`` in turns, after one untimed call in each
    format. Rows in one process share its allocator and kernels, so what differs between
    them is the format of each batch: the default call's extra time is its calibration's."""
    model, layer, x, title = timing_setting(args.model, args.size)
    with torch.no_grad():
        target = int(model(x).argmax())
    rows = {
        "default call (automatic)": None,
        "channels_last=True": True,
        "channels_last=False": False,
    }
    top_k = {"top_k_channels": args.top_k} if args.top_k else {}

    def call(channels_last: bool | None) -> float:
        start = time.perf_counter()
        ScoreCAM(model, layer).attribute(
            x,
            target=target,
            perturbations_per_eval=args.batch,
            channels_last=channels_last,
            **top_k,
        )
        return time.perf_counter() - start

    for channels_last in (True, False):
        call(channels_last)  # warm-up in each format
    seconds: dict[str, list[float]] = {label: [] for label in rows}
    patterns: set[str] = set()
    for _ in range(args.repeats):
        for label, channels_last in rows.items():
            with counted_forwards(model) as forwards:
                seconds[label].append(call(channels_last))
            if channels_last is None:  # the first forward: the activation pass
                formats = forwards.channels_last[1:6]
                patterns.add("".join("L" if last else "C" for last in formats))
    restricted = f", top_k_channels={args.top_k}" if args.top_k else ""
    print(f"\n{title}{restricted}, batch {args.batch}; one warm process, {args.repeats} repeats")
    print("| row | median s | per repeat s |")
    print("|---|---|---|")
    for label, times in seconds.items():
        print(
            f"| {label} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |"
        )
    ratios = [auto / min(last, plain) for auto, last, plain in zip(*seconds.values(), strict=True)]
    print(
        f"automatic / better forced format, per repeat: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f} (goal <= 1.05); the default call's first "
        f"5 batches (L channels-last, C contiguous): {sorted(patterns)}"
    )


def compile_cost(args: argparse.Namespace) -> None:
    """``compile_forward=True``: its first call (compiling), a later call, the eager call."""
    model, layer, x, title = timing_setting(args.model, args.size)
    with torch.no_grad():
        target = int(model(x).argmax())
    top_k = {"top_k_channels": args.top_k} if args.top_k else {}
    eager_method, compiled_method = ScoreCAM(model, layer), ScoreCAM(model, layer)

    def call(method: ScoreCAM, **options: Any) -> tuple[float, Tensor]:
        start = time.perf_counter()
        cam = method.attribute(
            x, target=target, perturbations_per_eval=args.batch, **top_k, **options
        )
        return time.perf_counter() - start, cam

    restricted = f", top_k_channels={args.top_k}" if args.top_k else ""
    print(f"\n{title}{restricted}, batch {args.batch}; one warm process")
    print(
        "| precision | eager s | compiled, first call s | compiled, later call s "
        "| eager / later | compiling pays after | max map diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, dtype in (("fp32", None), ('autocast_dtype="auto"', "auto")):
        call(eager_method, autocast_dtype=dtype)  # warm-up, memory-format choice
        eager, eager_map = call(eager_method, autocast_dtype=dtype)
        first, _ = call(compiled_method, autocast_dtype=dtype, compile_forward=True)
        later, compiled_map = call(compiled_method, autocast_dtype=dtype, compile_forward=True)
        gain = eager - later
        pays = f"{math.ceil((first - later) / gain)} calls" if gain > 0 else "never"
        difference = float((compiled_map - eager_map).abs().max() / eager_map.abs().max())
        print(
            f"| {label} | {eager:.2f} | {first:.2f} | {later:.2f} | {eager / later:.2f} "
            f"| {pays} | {difference:.1e} |"
        )


def batch_sweep(args: argparse.Namespace) -> None:
    """Bare fp32 forwards (contiguous) by batch size: where larger batches stop paying."""
    model, _, x, title = timing_setting(args.model, args.size)
    print(f"\n{title}: bare forwards by batch size (perturbations_per_eval), ms per image")
    print("| batch | ms per image |")
    print("|---|---|")
    for size in (8, 16, 32, 64):
        batch = torch.randn(size, *x.shape[1:])
        bare_forwards(model, size, batch)  # warm-up at this shape
        start = time.perf_counter()
        bare_forwards(model, BRACKET_FORWARDS * 2, batch)
        print(f"| {size} | {1000 * (time.perf_counter() - start) / (BRACKET_FORWARDS * 2):.1f} |")


def group_cost(args: argparse.Namespace) -> None:
    """Group Score-CAM at each of ``args.groups`` against Score-CAM and top-k at equal forwards."""
    model, layer, x, title = timing_setting(args.model, args.size)
    target = top1(model, x)
    fixed = {"target": target, "perturbations_per_eval": args.batch, "channels_last": False}
    calls: dict[str, Callable[[], Tensor]] = {
        "Score-CAM, every channel": lambda: ScoreCAM(model, layer).attribute(x, **fixed)
    }
    for g in args.groups:
        calls[f"Group Score-CAM, n_groups={g}"] = lambda g=g: GroupScoreCAM(model, layer).attribute(
            x, n_groups=g, **fixed
        )
        calls[f"Score-CAM, top_k_channels={g}"] = lambda g=g: ScoreCAM(model, layer).attribute(
            x, top_k_channels=g, **fixed
        )
    calls[f"Score-CAM, top_k_channels={args.groups[0]}"]()  # warm-up
    rows: dict[str, list[Row]] = {name: [] for name in calls}
    maps: dict[str, Tensor] = {}
    for _ in range(args.repeats):
        for name, call in calls.items():
            row, maps[name] = measure(name, model, call)
            rows[name].append(row)
    wall = {name: statistics.median(row.seconds for row in runs) for name, runs in rows.items()}
    exact = "Score-CAM, every channel"
    print(f"\n{title}, batch {args.batch}, channels_last=False; one warm process, rows in turns,")
    print(f"{args.repeats} run(s) each; forwards: images through the model, the capture included")
    print("| call | forwards | wall s (median) | x faster than Score-CAM | map correlation "
          "with Score-CAM | clustering s (Group - top-k) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in calls:
        clustering = "-"
        if name.startswith("Group"):
            top_k = name.replace("Group Score-CAM, n_groups", "Score-CAM, top_k_channels")
            clustering = f"{wall[name] - wall[top_k]:.2f}"
        print(
            f"| {name} | {rows[name][0].forwards} | {wall[name]:.2f} "
            f"| {wall[exact] / wall[name]:.1f} | {correlation(maps[name], maps[exact]):.4f} "
            f"| {clustering} |"
        )


# ------------------------------------------------------------------- part 2


def deletion_insertion(model: nn.Module, x: Tensor, saliency: Tensor, target: int) -> tuple:
    """Deletion (zeros) and insertion (blur) AUC from ``captum_sscam.metrics``, 1 % steps."""
    deletion = deletion_auc(model, x, saliency, target=target)
    insertion = insertion_auc(model, x, saliency, target=target)
    return float(deletion[0]), float(insertion[0])


def correlation(a: Tensor, b: Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def faithfulness(
    samples: int, photo_names: list[str], top_ks: list[int], precision_channels: int
) -> None:
    model, layer = lite0()
    named = photos()
    sscam, score_cam = SmoothedScoreCAM(model, layer), ScoreCAM(model, layer)
    print(f"\nEfficientNet-Lite0 (pretrained), 1280 x 7 x 7 head, N = {samples}")

    def smoothed(**kwargs: Any) -> Callable[[Tensor, int], Tensor]:
        return lambda x, target: sscam.attribute(
            x,
            target=target,
            nt_samples=samples,
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )

    def plain(**kwargs: Any) -> Callable[[Tensor, int], Tensor]:
        return lambda x, target: score_cam.attribute(
            x, target=target, top_k_channels=precision_channels, **kwargs
        )

    exact_label = f"SS-CAM N={samples} exact fp32"
    options = {exact_label: smoothed()}
    for k in top_ks:
        options[f"SS-CAM N={samples} top-{k} ch."] = smoothed(top_k_channels=k)
        options[f"SS-CAM N={samples} top-{k} antithetic"] = smoothed(
            top_k_channels=k, noise_sampling="antithetic"
        )
    precision_label = f"Score-CAM top-{precision_channels} fp32"
    precision_options = {
        precision_label: plain(),
        f"Score-CAM top-{precision_channels} channels-last": plain(channels_last=True),
        f"Score-CAM top-{precision_channels} bf16 autocast": plain(autocast_dtype=torch.bfloat16),
    }
    totals: dict[str, list[tuple[float, int, float, float, float]]] = {}
    for name in photo_names:
        x = lite0_input(named[name])
        target = top1(model, x)
        print(f"  {name}: class {target}", flush=True)
        maps: dict[str, Tensor] = {}
        for block, base in ((options, exact_label), (precision_options, precision_label)):
            for label, run in block.items():
                row, maps[label] = measure(
                    label, model, lambda run=run, x=x, target=target: run(x, target)
                )
                deletion, insertion = deletion_insertion(model, x, maps[label], target)
                corr = correlation(maps[label], maps[base])
                totals.setdefault(label, []).append(
                    (row.seconds, row.forwards, corr, deletion, insertion)
                )
    print(
        f"\nFaithfulness on {len(photo_names)} photos ({', '.join(photo_names)}), means; "
        "corr / dAUC against the first row of each block (exact SS-CAM; fp32 Score-CAM)"
    )
    print(
        "| option | s/image | forwards | speed-up | corr | deletion | insertion | d del | d ins |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for block in (list(options), list(precision_options)):
        base = [sum(values) / len(values) for values in zip(*totals[block[0]], strict=True)]
        for label in block:
            mean = [sum(values) / len(values) for values in zip(*totals[label], strict=True)]
            print(
                f"| {label} | {mean[0]:.1f} | {mean[1]:.0f} | {base[0] / mean[0]:.1f}x "
                f"| {mean[2]:.3f} | {mean[3]:.4f} | {mean[4]:.4f} "
                f"| {mean[3] - base[3]:+.4f} | {mean[4] - base[4]:+.4f} |"
            )


def noise_variance(photo_name: str, channels: int, reference_samples: int, seeds: int) -> None:
    """Relative map error against a large-N reference at equal forward budget."""
    model, layer = lite0()
    sscam = SmoothedScoreCAM(model, layer)
    x = lite0_input(photos()[photo_name])
    target = top1(model, x)

    def run(samples: int, sampling: str, seed: int) -> Tensor:
        return sscam.attribute(
            x,
            target=target,
            nt_samples=samples,
            top_k_channels=channels,
            noise_sampling=sampling,
            relu_attributions=False,
            generator=torch.Generator().manual_seed(seed),
        )

    reference = run(reference_samples, "iid", 1000)
    print(
        f"\nNoise samplers on {photo_name} (Lite0, top-{channels} channels, no ReLU): relative "
        f"L2 error of the map against an iid N={reference_samples} reference, mean of {seeds} seeds"
    )
    print("| N | forwards | iid | antithetic |")
    print("|---|---|---|---|")
    for samples in (2, 4):
        errors = {}
        for sampling in ("iid", "antithetic"):
            values = [
                float((run(samples, sampling, seed) - reference).norm() / reference.norm())
                for seed in range(seeds)
            ]
            errors[sampling] = sum(values) / len(values)
        print(
            f"| {samples} | {samples * channels} | {errors['iid']:.4f} "
            f"| {errors['antithetic']:.4f} |",
            flush=True,
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["timing"],
        choices=["timing", "calibration", "compile", "batch", "faithfulness", "noise", "groups"],
    )
    parser.add_argument(
        "--model",
        choices=["lite0", "resnet50", "resnet18"],
        default="lite0",
        help="timing: the model",
    )
    parser.add_argument("--size", type=int, default=224, help="timing: image size")
    parser.add_argument("--batch", type=int, default=32, help="timing: perturbations_per_eval")
    parser.add_argument("--top-k", type=int, default=0, help="timing: top_k_channels (0: all)")
    parser.add_argument("--repeats", type=int, default=2, help="timing: runs per row")
    parser.add_argument("--rows", nargs="+", choices=list(TIMING_ROWS), help="timing: rows")
    parser.add_argument("--samples", type=int, default=2, help="faithfulness: SS-CAM N")
    parser.add_argument("--photos", nargs="+", default=["coffee", "quokka"])
    parser.add_argument("--faithful-top-k", type=int, nargs="+", default=[64, 160])
    parser.add_argument("--precision-top-k", type=int, default=16, help="channels, bf16 check")
    parser.add_argument("--groups", type=int, nargs="+", default=[32, 128], help="groups: G")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--map", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.child:
        timing_child(args)
        return
    print(machine_header())
    if "timing" in args.parts:
        timing(args)
    if "calibration" in args.parts:
        calibration_cost(args)
    if "compile" in args.parts:
        compile_cost(args)
    if "batch" in args.parts:
        batch_sweep(args)
    if "faithfulness" in args.parts:
        faithfulness(args.samples, args.photos, args.faithful_top_k, args.precision_top_k)
    if "noise" in args.parts:
        noise_variance(args.photos[0], channels=16, reference_samples=32, seeds=2)
    if "groups" in args.parts:
        group_cost(args)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
