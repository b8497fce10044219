"""The ``captum-sscam`` command line: ``explain``, ``compare`` and ``insights``.

``explain`` writes one overlay per image for one method; ``compare`` runs
several methods (by default Integrated Gradients, Grad-CAM, Score-CAM and
SS-CAM; any of `captum_sscam.apps.methods.METHODS`) on the same images
and writes a self-contained HTML report (`captum_sscam.apps.report`);
``insights`` serves Captum Insights with the registry's layer methods
(`captum_sscam.apps.insights`, Captum 0.8 only). Models: the bundled
pretrained EfficientNet-Lite0 (``lite0``, the default), any torchvision model
by name, transformers included (pretrained weights when they are on this
machine, or ``--weights random``), or ``package.module:function`` returning an
``nn.Module`` (`captum_sscam.apps.models`). Images are files or folders of
them; the model sees each as `captum_sscam.apps.data.center_crop_photo`
makes it, and the overlays are drawn on that.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from captum_sscam import SAMPLE_ALLOCATIONS
from captum_sscam.apps.data import Photo, bundled_photos, image_files, load_images
from captum_sscam.apps.errors import UsageError
from captum_sscam.apps.methods import (
    COMPARED,
    METHODS,
    Explain,
    Method,
    Options,
    explain_functions,
    get_method,
    parse_methods,
    supporting,
)
from captum_sscam.apps.models import (
    LoadedModel,
    add_model_arguments,
    class_index,
    model_and_layer,
)
from captum_sscam.apps.report import class_name, compare, overlay_png, slug, write_report

DEMO_NOTE_SAMPLES = 35


def choose_device(name: str) -> torch.device:
    """The ``--device``, checked to exist; ``auto``: CUDA when this machine has it, else CPU."""
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


def _photos(args: argparse.Namespace, size: int) -> list[Photo]:
    """The photos to explain (printing a note on each image read with a change)."""
    if not args.images and not args.bundled:
        raise UsageError(
            "give one or more image files or folders, or --bundled for the package's photos."
        )
    photos, notes = load_images(args.images, size)
    for note in notes:
        print(f"note: {note}")
    return (bundled_photos(size) if args.bundled else []) + photos


def _options(args: argparse.Namespace) -> Options:
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
    image_files(args.images)  # a wrong path fails before the model loads
    options = _options(args)
    device = choose_device(args.device)
    loaded, layer = model_and_layer(args)
    loaded.model.to(device)
    return loaded, layer, device, options


def _methods(
    keys: Sequence[str], loaded: LoadedModel, layer: nn.Module, options: Options
) -> dict[str, Explain]:
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
    if args.nt_samples < DEMO_NOTE_SAMPLES:
        note += (
            f" The papers use nt_samples={DEMO_NOTE_SAMPLES}: SS-CAM costs nt_samples x "
            "channels forward passes per image, so fewer samples trade smoothness for time."
        )
    return note


def _targets(args: argparse.Namespace, loaded: LoadedModel, count: int) -> list[int] | None:
    if args.target is None:
        return None
    return [class_index(args.target, loaded.class_names)] * count


def run_explain(args: argparse.Namespace) -> int:
    loaded, layer, device, options = _setup(args)
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


def run_compare(args: argparse.Namespace) -> int:
    loaded, layer, device, options = _setup(args)
    keys = parse_methods(args.methods)
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
    methods = _methods(usable, loaded, layer, options)
    photos = _photos(args, loaded.input_size)
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
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    comparison.notes += notes
    path = write_report(comparison, args.out, title=args.title, model_name=loaded.name)
    for run in comparison.runs:
        print(f"  {run.name:<22} {run.seconds:8.2f} s")
    print(f"Report: {path.resolve()}")
    print(f"Overlays (PNG): {path.parent.resolve()}/")
    return 0


def run_insights(args: argparse.Namespace) -> int:
    from captum_sscam.apps.insights import InsightsUnavailableError, serve_bundled

    if args.nt_samples < 1:
        raise UsageError(f"nt_samples must be at least 1, got {args.nt_samples}.")
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
    add_model_arguments(parser)
    parser.add_argument(
        "--target", help="class index or name to explain, e.g. 950 or orange (default: top class)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when available, else CPU), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--nt-samples", type=int, default=35, help="SS-CAM noise samples (default 35)"
    )
    parser.add_argument("--stdevs", type=float, default=2.0, help="SS-CAM noise level (2.0)")
    parser.add_argument(
        "--score-mode", choices=("probability", "channel_softmax"), default="probability"
    )
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per forward pass: masked inputs, Integrated Gradients' steps, metrics",
    )
    parser.add_argument("--seed", type=int, default=0, help="SS-CAM noise seed")
    parser.add_argument(
        "--top-k-channels",
        type=int,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-sscam",
        description="Score-CAM and SS-CAM for Captum: explain images, compare methods, "
        "serve Captum Insights.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="one method's overlays for images")
    _model_options(explain)
    explain.add_argument("--method", choices=tuple(METHODS), default="ss-cam")
    explain.add_argument("--out", default="build/explain", help="folder for the PNG overlays")
    explain.set_defaults(run=run_explain)
    compare_parser = commands.add_parser("compare", help="several methods -> HTML report")
    _model_options(compare_parser)
    compare_parser.add_argument(
        "--methods",
        default=",".join(COMPARED),
        help=f"comma list of {', '.join(METHODS)} (default {','.join(COMPARED)})",
    )
    compare_parser.add_argument(
        "--out", default="build/report", help="folder for report.html + PNGs"
    )
    compare_parser.add_argument("--title", default="Attribution methods compared")
    compare_parser.add_argument("--no-metrics", action="store_true", help="skip the metrics")
    compare_parser.set_defaults(run=run_compare)
    insights = commands.add_parser("insights", help="serve Captum Insights (Captum 0.8)")
    insights.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    insights.add_argument(
        "--nt-samples", type=int, default=8, help="SS-CAM samples preset in the dashboard"
    )
    insights.add_argument(
        "--bind-all", action="store_true", help="listen on all interfaces, not only localhost"
    )
    insights.set_defaults(run=run_insights)
    return parser


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
