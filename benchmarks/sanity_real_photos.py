"""The model randomisation sanity check of every compared method on the real photos with boxes.

Pretrained EfficientNet-Lite0 (224 px, layer: the 1280 x 7 x 7 head activation) on the photos,
targets and boxes of ``evaluate_real_photos.py`` (``photo_samples``). For each photo and
method: the map, then ``captum_sscam.metrics.model_randomisation`` (cascading, from that map;
seed 0) over ``--layers`` (default: the first six of the model's parameterised blocks from the
output side, ``_fc`` to ``_blocks.13``, then all 16 MBConv blocks at once, ``_blocks``, which
leaves only the stem trained), and beside it the deletion and insertion AUC
(``captum_sscam.metrics``, step ``--step``) and Quantus 0.6.0's ROAD (MoRF, noisy linear
imputation through ``captum_sscam.metrics.road_perturb_func`` on the map repeated over the
channels; the share of photos still classified as the target after imputing ``p`` % of the
pixels; lower is better).

Methods (the applications' registry): Integrated Gradients (``--ig-steps``), Grad-CAM,
Score-CAM, SS-CAM (noise on the mask) at ``stdevs`` 2.0 and 0.25, IS-CAM
(``--is-steps``), Group Score-CAM; the Score-CAM family at ``top_k_channels=--top-k`` and
SS-CAM at ``nt_samples=--nt-samples``. Prints the median Spearman rho per step, the
constant-map counts, the first step at which each method's median rho falls below 0.5, and
the ROAD / deletion / insertion table, and writes the curves' figure (``--figure``).

Run it under the shared lock (about 15 minutes on one core of this project's CPU):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sanity_real_photos.py --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import quantus
import torch
from _common import machine_header
from evaluate_real_photos import PHOTOS, photo_samples
from torch import Tensor, nn

from captum_sscam.apps.methods import METHODS, Explain, Options
from captum_sscam.apps.models import efficientnet_lite0, lite0_target_layer
from captum_sscam.apps.report import sanity_curve
from captum_sscam.metrics import (
    deletion_auc,
    insertion_auc,
    model_randomisation,
    road_perturb_func,
)
from captum_sscam.visualization import upsample_map

LAYERS = ("_fc", "_bn1", "_conv_head", "_blocks.15", "_blocks.14", "_blocks.13", "_blocks")
ROAD_PERCENTAGES = (10, 30, 50, 70, 90)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=",".join(PHOTOS), help=f"comma list from {PHOTOS}")
    parser.add_argument("--layers", default=",".join(LAYERS), help="modules, output side first")
    parser.add_argument("--top-k", type=int, default=32, help="Score-CAM family top_k_channels")
    parser.add_argument("--nt-samples", type=int, default=4, help="SS-CAM noise samples")
    parser.add_argument("--is-steps", type=int, default=4, help="IS-CAM n_steps")
    parser.add_argument("--ig-steps", type=int, default=16, help="Integrated Gradients steps")
    parser.add_argument("--step", type=float, default=0.05, help="deletion/insertion step")
    parser.add_argument("--figure", default="docs/img/sanity_curves.png", help="the PNG")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser


def methods(args: argparse.Namespace) -> dict[str, tuple[str, Options, dict]]:
    """Display name -> (registry key, options, fixed arguments replaced)."""
    options = Options(
        nt_samples=args.nt_samples, ig_steps=args.ig_steps, top_k_channels=args.top_k, seed=0
    )
    return {
        "Integrated Gradients": ("ig", options, {}),
        "Grad-CAM": ("grad-cam", options, {}),
        "Score-CAM": ("score-cam", options, {}),
        "SS-CAM (stdevs 2.0)": ("ss-cam", dataclasses.replace(options, stdevs=2.0), {}),
        "SS-CAM (stdevs 0.25)": ("ss-cam", dataclasses.replace(options, stdevs=0.25), {}),
        "IS-CAM": ("is-cam", options, {"n_steps": args.is_steps}),
        "Group Score-CAM": ("group-score-cam", options, {}),
    }


def explainer(key: str, options: Options, fixed: dict, layer_name: str):
    """``model copy -> explain function`` of a registry entry, its layer found by name."""
    method = METHODS[key]
    if fixed:
        method = dataclasses.replace(method, fixed={**method.fixed, **fixed})

    def build(model: nn.Module) -> Explain:
        return method.explain(model, model.get_submodule(layer_name), options)

    return build


class Explained:
    def __init__(self, explain: Explain) -> None:
        self.explain = explain

    def attribute(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.explain(inputs, target)


def road(model: nn.Module, image: Tensor, target: int, maps: Tensor) -> list[float]:
    """Quantus's ROAD (MoRF) on one photo: 1.0 where the target is still predicted."""
    shaped = upsample_map(maps, tuple(image.shape[-2:])).expand(-1, image.shape[0], -1, -1)
    metric = quantus.ROAD(
        percentages=list(ROAD_PERCENTAGES), perturb_func=road_perturb_func,
        disable_warnings=True,
    )  # fmt: skip
    result = metric(
        model=model, x_batch=image[None].numpy(), y_batch=np.array([target]),
        a_batch=shaped.numpy().copy(), device="cpu",
    )  # fmt: skip
    return [float(result[p]) for p in ROAD_PERCENTAGES]


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = efficientnet_lite0()
    layer_name = next(n for n, m in model.named_modules() if m is lite0_target_layer(model))
    samples = photo_samples(args.photos.split(","), model)
    layers = args.layers.split(",")
    np.random.seed(0)  # ROAD's imputation noise (numpy's global generator)
    rows: dict[str, dict[str, list]] = {}
    began = time.perf_counter()
    for name, (key, options, fixed) in methods(args).items():
        build = explainer(key, options, fixed, layer_name)
        explain = build(model)
        row: dict[str, list] = {"rho": [], "constant": [], "seconds": [], "road": [],
                                "deletion": [], "insertion": []}  # fmt: skip
        for sample in samples:
            x, target = sample.image[None], torch.tensor([sample.target])
            start = time.perf_counter()
            maps = explain(x, target)
            result = model_randomisation(
                model, lambda copy, build=build: Explained(build(copy)), x, target,
                layers=layers, original=maps, show_progress=False,
            )  # fmt: skip
            row["seconds"].append(time.perf_counter() - start)
            row["rho"].append(result.spearman[:, 0].tolist())
            row["constant"].append((result.constant[:, 0] | result.original_constant[0]).tolist())
            row["road"].append(road(model, sample.image, sample.target, maps))
            row["deletion"].append(float(deletion_auc(model, x, maps, target, step=args.step)))
            row["insertion"].append(float(insertion_auc(model, x, maps, target, step=args.step)))
        rows[name] = row
        print(f"{name}: {sum(row['seconds']):.0f} s", flush=True)
    print_tables(args, samples, layers, rows, time.perf_counter() - began)
    write_figure(Path(args.figure), layers, rows, len(samples))


def median_rho(values: list[float]) -> float:
    defined = [v for v in values if not np.isnan(v)]
    return statistics.median(defined) if defined else float("nan")


def print_tables(args, samples, layers: list[str], rows: dict, seconds: float) -> None:
    print(machine_header(f"{seconds / 60:.1f} min"))
    print(
        f"Lite0, {len(samples)} photos ({', '.join(s.name for s in samples)}); Score-CAM family "
        f"top_k_channels={args.top_k}, SS-CAM nt_samples={args.nt_samples} (noise on the mask), "
        f"IS-CAM n_steps={args.is_steps}, IG {args.ig_steps} steps; cascading, seed 0\n"
    )
    print("Median Spearman rho with the original map after each cumulative step "
          "(photos with a constant map, rho undefined, in brackets):\n")  # fmt: skip
    print("| method | " + " | ".join(f"+ {layer}" for layer in layers) + " |")
    print("| --- |" + " --- |" * len(layers))
    for name, row in rows.items():
        cells = []
        for step in range(len(layers)):
            rho = median_rho([photo[step] for photo in row["rho"]])
            flat = sum(photo[step] for photo in row["constant"])
            value = "undefined" if np.isnan(rho) else f"{rho:.2f}"
            cells.append(value + (f" ({flat})" if flat else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nFirst step at which the median rho falls below 0.5 (or most maps are constant):\n")
    for name, row in rows.items():
        first = next(
            (layers[step] for step in range(len(layers))
             if not median_rho([p[step] for p in row["rho"]]) >= 0.5),
            "never",
        )  # fmt: skip
        print(f"- {name}: {first}")
    print(f"\nROAD (Quantus 0.6.0, MoRF, share of photos still classified as the target; lower "
          f"is better) beside deletion (zeros) and insertion (blur) AUC at step {args.step}, "
          f"mean over the photos:\n")  # fmt: skip
    heads = " | ".join(f"ROAD {p} %" for p in ROAD_PERCENTAGES)
    print(f"| method | {heads} | ROAD mean | deletion AUC | insertion AUC | s / photo |")
    print("| --- |" + " --- |" * (len(ROAD_PERCENTAGES) + 4))
    for name, row in rows.items():
        road_means = np.mean(row["road"], axis=0)
        cells = " | ".join(f"{v:.2f}" for v in road_means)
        print(f"| {name} | {cells} | {road_means.mean():.3f} | {np.mean(row['deletion']):.3f} | "
              f"{np.mean(row['insertion']):.3f} | {np.mean(row['seconds']):.1f} |")  # fmt: skip


def write_figure(path: Path, layers: list[str], rows: dict, count: int) -> None:
    medians = {
        name: [median_rho([p[step] for p in row["rho"]]) for step in range(len(layers))]
        for name, row in rows.items()
    }
    mostly_constant = {
        name: [sum(p[step] for p in row["constant"]) * 2 > count for step in range(len(layers))]
        for name, row in rows.items()
    }
    title = f"Lite0, median over {count} photos, cascading randomisation"
    figure = sanity_curve(medians, mostly_constant, layers, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    from PIL import Image

    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)  # a small PNG


if __name__ == "__main__":
    main()
