"""Score-CAM and SS-CAM on a torchvision ResNet-18 (`model.layer4`), and NoiseTunnel.

    python examples/torchvision_resnet.py                   # pretrained if cached, else random
    python examples/torchvision_resnet.py --weights random --size 64

Pretrained weights are used only when they are already in torch's hub cache: nothing is
downloaded. Random weights still show the API; their maps explain an untrained network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from captum.attr import LayerAttribution, NoiseTunnel

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam.apps import UsageError, bundled_photos, load_model
from captum_sscam.visualization import method_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="DEFAULT", help="DEFAULT (if cached), FILE, random")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--nt-samples", type=int, default=4, help="SS-CAM samples (papers: 35)")
    parser.add_argument("--tunnel-samples", type=int, default=2, help="NoiseTunnel samples")
    parser.add_argument("--batch-size", type=int, default=64, help="masked inputs per forward")
    parser.add_argument("--out", default="build/examples/resnet18.png")
    args = parser.parse_args()

    try:
        loaded = load_model("resnet18", args.weights, args.size)
    except UsageError as error:
        print(f"{error}\n-> using random weights")
        loaded = load_model("resnet18", "random", args.size)
    model = loaded.model

    (photo,) = bundled_photos(args.size, ["coffee"])
    x = loaded.preprocess(torch.from_numpy(photo.image.copy())[None])
    with torch.no_grad():
        target = int(model(x).argmax())

    score_cam = ScoreCAM(model, model.layer4)
    cam = score_cam.attribute(x, target=target, perturbations_per_eval=args.batch_size)
    sscam = SmoothedScoreCAM(model, model.layer4).attribute(
        x,
        target=target,
        nt_samples=args.nt_samples,
        perturbations_per_eval=args.batch_size,
        generator=torch.Generator().manual_seed(0),
    )
    # Captum's SmoothGrad around Score-CAM: noise on the input, a Score-CAM pass per sample.
    tunnel = NoiseTunnel(score_cam).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=args.tunnel_samples,
        stdevs=0.1,
        target=target,
        perturbations_per_eval=args.batch_size,
    )
    heatmap = LayerAttribution.interpolate(cam, (args.size, args.size), interpolate_mode="bilinear")

    name = loaded.class_names[target] if loaded.class_names else f"class {target}"
    print(f"target: {name} [{target}]; layer4 map {tuple(cam.shape)} -> {tuple(heatmap.shape)}")
    figure = method_grid(
        [photo.image],
        {"Score-CAM": cam, "SS-CAM": sscam, "NoiseTunnel(Score-CAM)": tunnel},
        row_titles=[name],
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)
    print(f"grid -> {args.out}")


if __name__ == "__main__":
    main()
