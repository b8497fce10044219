"""Explain one image with Score-CAM or SS-CAM and draw the map over it.

python examples/explain_image.py                        # bundled photo, bundled Lite0
python examples/explain_image.py --image my.jpg --method score-cam
python examples/explain_image.py --nt-samples 35        # the papers' setting (minutes)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam.apps import add_model_arguments, bundled_photos, load_images, model_and_layer
from captum_sscam.visualization import overlay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="an image file (default: scikit-image's chelsea)")
    add_model_arguments(parser)
    parser.add_argument("--method", choices=("ss-cam", "score-cam"), default="ss-cam")
    parser.add_argument("--nt-samples", type=int, default=8, help="SS-CAM samples (papers: 35)")
    parser.add_argument("--out", default="build/examples/explain.png")
    args = parser.parse_args()

    loaded, layer = model_and_layer(args)
    model = loaded.model
    if args.image:  # what the model sees: short side resized, centre crop
        (photo,), notes = load_images([args.image], loaded.input_size)
        for note in notes:
            print(f"note: {note}")
    else:
        (photo,) = bundled_photos(loaded.input_size, ["chelsea"])
    x = loaded.preprocess(torch.from_numpy(photo.image.copy())[None])

    with torch.no_grad():
        probabilities = model(x).softmax(dim=1)
    target = int(probabilities.argmax())
    name = loaded.class_names[target] if loaded.class_names else f"class {target}"

    transform = loaded.reshape_transform  # None for CNNs; tokens -> maps for ViT, Swin
    if args.method == "score-cam":
        cam = ScoreCAM(model, layer, reshape_transform=transform).attribute(
            x, target=target, show_progress=True
        )
    else:
        cam = SmoothedScoreCAM(model, layer, reshape_transform=transform).attribute(
            x,
            target=target,
            nt_samples=args.nt_samples,
            stdevs=2.0,
            generator=torch.Generator().manual_seed(0),
            show_progress=True,
        )

    figure, _ = overlay(cam, photo.image, title=f"{args.method}: {name}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)
    probability = probabilities[0, target]
    print(f"{photo.name}: {name} ({probability:.1%}); map {tuple(cam.shape)} -> {args.out}")


if __name__ == "__main__":
    main()
