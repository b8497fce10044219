"""The ``captum-sscam`` command line: ``explain``, ``compare``, ``evaluate`` and ``insights``.

``explain`` writes one overlay per image for one method; ``compare`` runs
several methods (by default Integrated Gradients, Grad-CAM, Score-CAM and
SS-CAM; any of `captum_sscam.apps.methods.METHODS`) on the same images
and writes a self-contained HTML report (`captum_sscam.apps.report`);
``evaluate`` scores the methods on every image of a folder with the bundled
EfficientNet-Lite0, in one process or under ``torchrun``, resumably
(`captum_sscam.apps.evaluate`); ``insights`` serves Captum Insights with the
registry's layer methods (`captum_sscam.apps.insights`, Captum 0.8 only).
Models: the bundled pretrained EfficientNet-Lite0 (``lite0``, the default),
any torchvision model by name, transformers included (pretrained weights when
they are on this machine, or ``--weights random``), or
``package.module:function`` returning an ``nn.Module``
(`captum_sscam.apps.models`). Images are files or folders of them; the model
sees each as `captum_sscam.apps.data.center_crop_photo` makes it, and the
overlays are drawn on that.

The parser is built from `captum_sscam.apps.arguments`, which imports only the
standard library: ``--help`` and every mistake in the arguments answer before
torch, Captum, torchvision, matplotlib or a model is imported; each command
imports them when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from captum_sscam.apps.arguments import (
    COMPARED,
    METHOD_KEYS,
    SAMPLE_ALLOCATIONS,
    SCORE_MODES,
    TASK_METHODS,
    add_model_arguments,
    box,
    fraction,
    integer_at_least,
    method_keys,
    non_negative_number,
)
from captum_sscam.apps.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from captum_sscam.apps.data import Photo
    from captum_sscam.apps.methods import Explain, Method, Options
    from captum_sscam.apps.models import LoadedModel

PAPERS_NT_SAMPLES = 35
"""The SS-CAM and IS-CAM papers' noise samples; the notes say when fewer were used."""

DEFAULT_METRIC_STEP = 0.01
"""The deletion and insertion curves' step: 1 % of the pixels per step (101 points)."""

DEFAULT_SANITY_STEPS = 5
"""``compare --sanity``: the parameterised blocks re-initialised, from the output side."""


def choose_device(name: str) -> torch.device:
    """The ``--device``, checked to exist; ``auto``: CUDA when this machine has it, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu.")
    return device


def _check_images(args: argparse.Namespace) -> None:
    """Images were given (checked before anything is imported) and the paths exist."""
    if not args.images and not _bundled(args):
        raise UsageError(
            "give one or more image files or folders, or --bundled for the package's photos."
        )
    from captum_sscam.apps.data import image_files

    image_files(args.images)


def _bundled(args: argparse.Namespace) -> bool:
    return args.bundled or bool(args.bundled_names)


def _photos(args: argparse.Namespace, size: int) -> list[Photo]:
    """The photos to explain (printing a note on each image read with a change)."""
    from captum_sscam.apps.data import bundled_photos, load_images

    photos, notes = load_images(args.images, size)
    for note in notes:
        print(f"note: {note}")
    bundled = bundled_photos(size, args.bundled_names) if _bundled(args) else []
    return bundled + photos


def _options(args: argparse.Namespace) -> Options:
    from captum_sscam.apps.methods import Options

    return Options(
        nt_samples=args.nt_samples,
        stdevs=args.stdevs,
        score_mode=args.score_mode,
        ig_steps=args.ig_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        top_k_channels=args.top_k_channels,
        show_progress=not args.quiet,
        sample_allocation=args.sample_allocation,
        autocast_dtype=None if args.autocast == "none" else args.autocast,
        compile_forward=args.compile,
    )


def _setup(args: argparse.Namespace) -> tuple[LoadedModel, nn.Module, torch.device, Options]:
    """The model, its layer, the device and the options; the images, the options and the
    device are checked first, cheapest first, so that a mistake fails before the model loads."""
    _check_images(args)
    options = _options(args)
    device = choose_device(args.device)
    from captum_sscam.apps.models import model_and_layer

    loaded, layer = model_and_layer(args)
    for note in loaded.notes:
        print(f"note: {note}")
    loaded.model.to(device)
    return loaded, layer, device, options


def _methods(
    keys: Sequence[str], loaded: LoadedModel, layer: nn.Module, options: Options
) -> dict[str, Explain]:
    from captum_sscam.apps.methods import explain_functions

    return explain_functions(keys, loaded.model, layer, options, loaded.reshape_transform)


_COMPILE_NOTE = (
    "; compiled forward (compiled once per command: the first Score-CAM-family method's "
    "time includes the compilation)"
)


def _settings_notes(args: argparse.Namespace, methods: Sequence[Method]) -> list[str]:
    """The SS-CAM and channel-selection notes that apply to ``methods``, no others."""
    notes = []
    if any("nt_samples" in method.options for method in methods):
        notes.append(_samples_note(args))
    if args.top_k_channels and any("top_k_channels" in method.options for method in methods):
        notes.append(_channels_note(args))
    return notes


def _channels_note(args: argparse.Namespace) -> str:
    return (
        f"Score-CAM family: only the {args.top_k_channels} most varying channels are scored "
        "(--top-k-channels; faster, an approximation of the maps over all channels)."
    )


def _samples_note(args: argparse.Namespace) -> str:
    note = (
        f"SS-CAM: nt_samples={args.nt_samples}, stdevs={args.stdevs}, "
        f"{args.sample_allocation} allocation; score mode {args.score_mode}; "
        f"precision: {'fp32' if args.autocast == 'none' else 'autocast ' + args.autocast}"
        f"{_COMPILE_NOTE if args.compile else ''}."
    )
    if args.nt_samples < PAPERS_NT_SAMPLES:
        note += (
            f" The papers use nt_samples={PAPERS_NT_SAMPLES}: SS-CAM costs nt_samples x "
            "channels forward passes per image, so fewer samples trade smoothness for time."
        )
    return note


def _targets(args: argparse.Namespace, loaded: LoadedModel, count: int) -> list[int] | None:
    from captum_sscam.apps.models import class_index

    if args.target is None:
        return None
    return [class_index(args.target, loaded.class_names)] * count


def run_explain(args: argparse.Namespace) -> int:
    if args.target_box is not None:
        return _explain_box(args)
    loaded, layer, device, options = _setup(args)
    from captum_sscam.apps.methods import get_method
    from captum_sscam.apps.report import class_name, compare, overlay_png, slug

    method = get_method(args.method)
    explain = _methods([args.method], loaded, layer, options)
    photos = _photos(args, loaded.input_size)
    comparison = compare(
        loaded.model,
        photos,
        loaded.preprocess,
        explain,
        class_names=loaded.class_names,
        targets=_targets(args, loaded, len(photos)),
        device=device,
        with_metrics=False,
        progress=False,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (run,) = comparison.runs
    for index, photo in enumerate(photos):
        path = out / f"{slug(photo.name)}_{method.key}.png"
        path.write_bytes(overlay_png(run.maps[index : index + 1], photo))
        prediction = comparison.predictions[index]
        explained = comparison.targets[index]
        print(
            f"{photo.name}: predicted {prediction.name} ({prediction.probability:.1%}); "
            f"{method.name} of {class_name(loaded.class_names, explained)} [{explained}] -> {path}"
        )
    print(f"{method.name} took {run.seconds:.2f} s for {len(photos)} image(s) on {device}.")
    for note in _settings_notes(args, [method]):
        print(note)
    return 0


def _explain_box(args: argparse.Namespace) -> int:
    """``explain --target-box``: a segmentation region or a detector's object per image."""
    if args.method not in TASK_METHODS:
        raise UsageError(
            f"--target-box takes a method of the Score-CAM family ({', '.join(TASK_METHODS)}), "
            f"not {args.method}: it explains a region or an object, not a class index."
        )
    loaded, layer, device, options = _setup(args)
    import time

    from captum_sscam.apps.data import photo_tensor
    from captum_sscam.apps.methods import get_method
    from captum_sscam.apps.report import overlay_png, slug
    from captum_sscam.apps.tasks import box_target

    method = get_method(args.method)
    (explain,) = _methods([args.method], loaded, layer, options).values()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    photos = _photos(args, loaded.input_size)
    for photo in photos:
        inputs = loaded.preprocess(photo_tensor(photo)[None]).to(device)
        target = box_target(
            loaded.model, inputs, args.target_box, args.target, loaded.class_names, loaded.name
        )
        start = time.perf_counter()
        maps = explain(inputs, target.target)  # a callable target: the Score-CAM family takes it
        seconds += time.perf_counter() - start
        path = out / f"{slug(photo.name)}_{method.key}.png"
        path.write_bytes(overlay_png(maps, photo))
        print(f"{photo.name}: {method.name} of {target.description} -> {path}")
    print(f"{method.name} took {seconds:.2f} s for {len(photos)} image(s) on {device}.")
    for note in _settings_notes(args, [method]):
        print(note)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    loaded, layer, device, options = _setup(args)
    from captum_sscam.apps.methods import METHODS, supporting
    from captum_sscam.apps.report import compare, sanity_check, write_report

    keys = args.methods
    usable = [key for key in keys if key in supporting(loaded.reshape_transform)]
    skipped = [METHODS[key].name for key in keys if key not in usable]
    notes = _settings_notes(args, [METHODS[key] for key in usable])
    if "ig" in usable:
        notes.append(f"Integrated Gradients: {args.ig_steps} steps, zero baseline.")
    if skipped:
        notes.append(
            f"Left out: {', '.join(skipped)} (cannot reshape the output of {loaded.name}'s "
            "layer, a transformer's tokens)."
        )
    if not args.no_metrics and args.metric_step != DEFAULT_METRIC_STEP:
        notes.append(
            f"Deletion and insertion: {args.metric_step:.0%} of the pixels per step "
            f"(--metric-step {args.metric_step}; {DEFAULT_METRIC_STEP:.0%} by default), so "
            "their AUCs are coarser."
        )
    if args.bundled_names:
        notes.append(f"Bundled photos: {', '.join(args.bundled_names)} (--bundled-names).")
    methods = _methods(usable, loaded, layer, options)
    photos = _photos(args, loaded.input_size)
    sanity = None
    if args.sanity:
        sanity = sanity_check(
            usable, loaded.model, layer, options, loaded.reshape_transform, args.sanity_steps
        )
        notes.append(
            f"Sanity check: {len(sanity.layers)} of the model's {sanity.total_layers} "
            f"parameterised blocks re-initialised, from the output side (--sanity-steps)."
        )
    print(
        f"Comparing {', '.join(methods)} on {len(photos)} image(s) with {loaded.name} on "
        f"{device}. {' '.join(notes)}",
        flush=True,
    )
    comparison = compare(
        loaded.model,
        photos,
        loaded.preprocess,
        methods,
        class_names=loaded.class_names,
        targets=_targets(args, loaded, len(photos)),
        device=device,
        with_metrics=not args.no_metrics,
        metric_step=args.metric_step,
        batch_size=args.batch_size,
        progress=not args.quiet,
        sanity=sanity,
    )
    comparison.notes += notes
    path = write_report(comparison, args.out, title=args.title, model_name=loaded.name)
    for run in comparison.runs:
        print(f"  {run.name:<22} {run.seconds:8.2f} s")
    print(f"Report: {path.resolve()}")
    print(f"Overlays (PNG): {path.parent.resolve()}/")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """The dataset evaluation (`captum_sscam.apps.evaluate`); under ``torchrun`` each rank
    joins the process group and takes the device `init_distributed` gives it."""
    import torch.distributed as dist

    from captum_sscam.apps.evaluate import ImageFolder, evaluate, format_table, init_distributed
    from captum_sscam.apps.methods import Options, explain_functions
    from captum_sscam.apps.models import efficientnet_lite0, lite0_target_layer

    options = Options(nt_samples=args.nt_samples, ig_steps=args.ig_steps, seed=args.seed)
    dataset = ImageFolder(args.images)
    device = init_distributed()
    model = efficientnet_lite0().to(device)
    methods = explain_functions(args.methods, model, lite0_target_layer(model), options)
    records = evaluate(model, methods, dataset, args.out, args.step, args.batch)
    if records:
        print(format_table(records, list(methods)))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def run_insights(args: argparse.Namespace) -> int:
    from captum_sscam.apps.insights import InsightsUnavailableError, serve_bundled

    try:
        serve_bundled(port=args.port, nt_samples=args.nt_samples, bind_all=args.bind_all)
    except InsightsUnavailableError as error:
        raise UsageError(str(error)) from None
    return 0


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", help="image files or folders of them")
    parser.add_argument(
        "--bundled", action="store_true", help="add the package's real photos to the images"
    )
    parser.add_argument(
        "--bundled-names",
        type=_names,
        default=None,
        metavar="NAMES",
        help="add only these bundled photos, a comma list of coffee, chelsea, astronaut, "
        "rocket, motorcycle, quokka, voc (implies --bundled)",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--target", help="class index or name to explain, e.g. 950 or orange (default: top class)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when available, else CPU), cpu, cuda or cuda:N",
    )
    _sampling_options(parser)
    parser.add_argument(
        "--stdevs", type=non_negative_number, default=2.0, help="SS-CAM noise level (2.0)"
    )
    parser.add_argument("--score-mode", choices=SCORE_MODES, default="probability")
    parser.add_argument(
        "--batch-size",
        type=integer_at_least(1),
        default=None,
        help="images per forward pass: masked inputs, Integrated Gradients' steps, metrics",
    )
    parser.add_argument(
        "--top-k-channels",
        type=integer_at_least(1),
        default=None,
        metavar="K",
        help="Score-CAM family: score only the K most varying channels (faster, approximate)",
    )
    parser.add_argument(
        "--sample-allocation",
        choices=SAMPLE_ALLOCATIONS,
        default="uniform",
        help="SS-CAM: share --nt-samples by channel (adaptive: unbiased, fewer samples "
        "for the same error; default uniform, the paper)",
    )
    parser.add_argument(
        "--autocast",
        choices=("none", "auto"),
        default="none",
        help="Score-CAM family: auto runs the forwards in bf16/fp16 where the hardware has "
        "them (faster, not exact; default none: fp32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="Score-CAM family: compile the masked forwards with torch.compile once, then "
        "reuse them for every image (pays on a GPU over many images; exact up to rounding)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    """``--nt-samples``, ``--ig-steps`` and ``--seed``: the options every method command has."""
    parser.add_argument(
        "--nt-samples",
        type=integer_at_least(1),
        default=PAPERS_NT_SAMPLES,
        help=f"SS-CAM noise samples (default {PAPERS_NT_SAMPLES}, the papers')",
    )
    parser.add_argument(
        "--ig-steps", type=integer_at_least(1), default=32, help="Integrated Gradients steps"
    )
    parser.add_argument("--seed", type=int, default=0, help="SS-CAM noise seed")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _methods_option(parser: argparse.ArgumentParser, default: Sequence[str]) -> None:
    parser.add_argument(
        "--methods",
        type=method_keys,
        default=",".join(default),
        help=f"comma list of {', '.join(METHOD_KEYS)} (default {','.join(default)})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``captum-sscam`` parser (the standard library only: nothing heavy is imported)."""
    parser = argparse.ArgumentParser(
        prog="captum-sscam",
        description="Score-CAM and SS-CAM for Captum: explain images, compare methods, "
        "evaluate them on a folder, serve Captum Insights.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="one method's overlays for images")
    _model_options(explain)
    explain.add_argument("--method", choices=METHOD_KEYS, default="ss-cam")
    explain.add_argument(
        "--target-box",
        type=box,
        default=None,
        metavar="X0,Y0,X1,Y1",
        help="segmentation and detection models: explain the box (pixels of the model's "
        "input) instead of a class: a segmentation class's mean probability in it, or how "
        "strongly a detector finds its label there (--target: the class or label; default: "
        "the likeliest one); Score-CAM family only",
    )
    explain.add_argument("--out", default="build/explain", help="folder for the PNG overlays")
    explain.set_defaults(run=run_explain)
    compare_parser = commands.add_parser("compare", help="several methods -> HTML report")
    _model_options(compare_parser)
    _methods_option(compare_parser, COMPARED)
    compare_parser.add_argument(
        "--out", default="build/report", help="folder for report.html + PNGs"
    )
    compare_parser.add_argument("--title", default="Attribution methods compared")
    compare_parser.add_argument("--no-metrics", action="store_true", help="skip the metrics")
    compare_parser.add_argument(
        "--metric-step",
        type=fraction,
        default=DEFAULT_METRIC_STEP,
        metavar="FRACTION",
        help="deletion/insertion: fraction of the pixels per step (default "
        f"{DEFAULT_METRIC_STEP}; 0.05 is 5x faster and coarser)",
    )
    compare_parser.add_argument(
        "--sanity",
        action="store_true",
        help="add each method's cascading model randomisation per image (the sanity check)",
    )
    compare_parser.add_argument(
        "--sanity-steps",
        type=integer_at_least(1),
        default=DEFAULT_SANITY_STEPS,
        metavar="N",
        help="--sanity re-initialises the model's first N parameterised blocks from the "
        f"output side (default {DEFAULT_SANITY_STEPS}); each step costs one more map per "
        "method and image",
    )
    compare_parser.set_defaults(run=run_compare)
    _evaluate_parser(commands)
    insights = commands.add_parser("insights", help="serve Captum Insights (Captum 0.8)")
    insights.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    insights.add_argument(
        "--nt-samples",
        type=integer_at_least(1),
        default=8,
        help="SS-CAM samples preset in the dashboard",
    )
    insights.add_argument(
        "--bind-all", action="store_true", help="listen on all interfaces, not only localhost"
    )
    insights.set_defaults(run=run_insights)
    return parser


def _evaluate_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="every method's metrics on an image folder (resumable; under torchrun too)",
        description="Explain every image of a folder with the bundled EfficientNet-Lite0 by "
        "each method and score it; results.jsonl and table.md in --out. Under torchrun "
        "(torchrun --nproc_per_node 4 -m captum_sscam evaluate ...) each rank takes a shard "
        "on the device the launcher gives it (cuda:LOCAL_RANK, else the CPU).",
    )
    evaluate.add_argument("images", help="folder of images (searched recursively)")
    evaluate.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    _methods_option(evaluate, METHOD_KEYS)
    _sampling_options(evaluate)
    evaluate.add_argument(
        "--step",
        "--metric-step",
        dest="step",
        type=fraction,
        default=DEFAULT_METRIC_STEP,
        help=f"deletion/insertion step, a fraction of the pixels (default {DEFAULT_METRIC_STEP})",
    )
    evaluate.add_argument(
        "--batch",
        type=integer_at_least(1),
        default=64,
        help="perturbed images per forward pass of the metrics (default 64)",
    )
    evaluate.set_defaults(run=run_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``captum-sscam`` and ``python -m captum_sscam``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"captum-sscam {args.command}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "choose_device", "main"]
