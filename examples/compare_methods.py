"""Integrated Gradients, Grad-CAM, Score-CAM and SS-CAM side by side in one figure.

    python examples/compare_methods.py --photos coffee,chelsea --nt-samples 4

For the HTML report with times and metrics, use `captum-sscam compare` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from captum_sscam.apps import (
    COMPARED,
    Options,
    add_model_arguments,
    bundled_photos,
    class_name,
    compare,
    explain_functions,
    model_and_layer,
)
from captum_sscam.visualization import method_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="coffee,chelsea", help="bundled photos, by name")
    add_model_arguments(parser)
    parser.add_argument("--nt-samples", type=int, default=4, help="SS-CAM samples (papers: 35)")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--out", default="build/examples/compare.png")
    args = parser.parse_args()

    loaded, layer = model_and_layer(args)
    photos = bundled_photos(loaded.input_size, args.photos.split(","))

    options = Options(nt_samples=args.nt_samples, ig_steps=args.ig_steps)
    methods = explain_functions(COMPARED, loaded.model, layer, options, loaded.reshape_transform)
    comparison = compare(
        loaded.model, photos, loaded.preprocess, methods, class_names=loaded.class_names
    )
    figure = method_grid(
        [photo.image for photo in photos],
        {run.name: run.maps for run in comparison.runs},
        metrics={run.name: run.metrics for run in comparison.runs},
        row_titles=[class_name(loaded.class_names, t) for t in comparison.targets],
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)
    for run in comparison.runs:
        print(f"{run.name:<22} {run.seconds:7.2f} s")
    print(f"grid -> {args.out}")


if __name__ == "__main__":
    main()
