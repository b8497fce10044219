"""How faithful are the maps? Captum's infidelity and the papers' metrics.

    python examples/evaluate_faithfulness.py --photos quokka,coffee --nt-samples 4

Captum's `infidelity` needs attributions shaped like the inputs: `captum_sscam.metrics.input_shaped`
upsamples each map and repeats it over the colour channels, so that a perturbation's dot
product with the attribution counts every channel of a pixel at the pixel's value.
Deletion/insertion AUC, Average Drop and Increase in Confidence come from
`captum_sscam.metrics` (through `captum_sscam.apps.metric_values`).
"""

from __future__ import annotations

import argparse

import torch
from captum.metrics import infidelity
from torch import Tensor

from captum_sscam.apps import (
    COMPARED,
    Options,
    add_model_arguments,
    bundled_photos,
    explain_functions,
    metric_values,
    model_and_layer,
)
from captum_sscam.apps.report import mean
from captum_sscam.metrics import input_shaped


def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Gaussian noise of standard deviation 0.1: (the perturbation I, the input x - I)."""
    noise = torch.randn_like(inputs) * 0.1
    return noise, inputs - noise


def captum_infidelity(
    model: torch.nn.Module, x: Tensor, maps: Tensor, target: Tensor, perturbations: int
) -> Tensor:
    """Captum's infidelity of layer maps ``(N, 1, h, w)``, brought to the input's shape."""
    (shaped,) = input_shaped(maps, x)
    return infidelity(model, perturb, x, shaped, target=target, n_perturb_samples=perturbations)


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

    options = Options(nt_samples=args.nt_samples, ig_steps=16)
    methods = explain_functions(
        COMPARED, model, layer, options, reshape_transform=loaded.reshape_transform
    )
    rows = []
    for name, method in methods.items():
        maps = method(x, target)
        torch.manual_seed(0)
        infid = captum_infidelity(model, x, maps, target, args.perturbations)
        values = {"infidelity": infid.tolist()}
        values.update(metric_values(model, x, maps, target, [p.boxes for p in photos]).values)
        rows.append((name, {metric: mean(v) for metric, v in values.items()}))

    columns = list(rows[0][1])
    print(f"{'method':<22}" + "".join(f"{c:>16}" for c in columns))
    for name, values in rows:
        print(f"{name:<22}" + "".join(f"{values[c]:>16.4g}" for c in columns))
    print(f"(means over {len(photos)} photo(s); lower infidelity is better)")


if __name__ == "__main__":
    main()
