"""How faithful are the maps? Captum's infidelity, and the papers' metrics when installed.

    python examples/evaluate_faithfulness.py --photos quokka,coffee --nt-samples 4

Captum's `infidelity` needs input-shaped attributions: `captum_sscam.insights.input_shaped`
upsamples each map and spreads it over the channels. Deletion/insertion AUC, Average Drop
and Increase in Confidence come from `captum_sscam.metrics` when that module is installed.
"""

from __future__ import annotations

import argparse

import torch
from captum.metrics import infidelity

from captum_sscam.cli import add_model_arguments, bundled_photos, model_and_layer
from captum_sscam.insights import input_shaped
from captum_sscam.report import attribution_methods, mean, metric_values, metrics_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="quokka,coffee", help="bundled photos, by name")
    add_model_arguments(parser)
    parser.add_argument("--nt-samples", type=int, default=4, help="SS-CAM samples (papers: 35)")
    parser.add_argument("--perturbations", type=int, default=8, help="infidelity samples")
    args = parser.parse_args()

    loaded, layer = model_and_layer(args)
    model = loaded.model
    photos = bundled_photos(loaded.input_size, args.photos.split(","))
    x = loaded.preprocess(torch.stack([torch.from_numpy(p.image.copy()) for p in photos]))
    with torch.no_grad():
        target = model(x).argmax(dim=1)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * 0.1
        return noise, inputs - noise

    metrics = metrics_module()
    if metrics is None:
        print("captum_sscam.metrics is not installed: showing Captum's infidelity only.")
    methods = attribution_methods(model, layer, nt_samples=args.nt_samples, ig_steps=16)
    rows = []
    for name, method in methods.items():
        maps = method(x, target)
        torch.manual_seed(0)
        values = {
            "infidelity": infidelity(
                model,
                perturb,
                x,
                input_shaped(maps, x),
                target=target,
                n_perturb_samples=args.perturbations,
            ).tolist()
        }
        if metrics is not None:
            boxes = [photo.boxes for photo in photos]
            values.update(metric_values(model, x, maps, target, boxes, metrics))
        rows.append((name, {metric: mean(v) for metric, v in values.items()}))

    columns = list(rows[0][1])
    print(f"{'method':<22}" + "".join(f"{c:>24}" for c in columns))
    for name, values in rows:
        print(f"{name:<22}" + "".join(f"{values[c]:>24.4g}" for c in columns))
    print(f"(means over {len(photos)} photo(s); lower infidelity is better)")


if __name__ == "__main__":
    main()
