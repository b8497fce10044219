"""Speed and faithfulness of Score-CAM / SS-CAM and their fast options, in one run.

Part 1 (timing, issue 2 and 5): ResNet-18 with random weights (seed 0), one
224 px photo, layer4. This package's Score-CAM and SS-CAM (exact fp32 and each
fast option) against torchcam's ScoreCAM / SSCAM, grad-cam's ScoreCAM and the
bare time of the forward passes they must make (K' = non-constant channels:
K' batched forwards of random inputs at the same batch size; N x that for
SS-CAM). Time per image, forward passes (images through the model, the capture
forward included) and peak resident memory above the start of each call.

Part 2 (faithfulness, issue 5): the pretrained EfficientNet-Lite0 on real
photos. Each approximate option's map against exact SS-CAM at the same N:
Pearson correlation of the maps and the change in deletion / insertion AUC;
mixed precision and channels-last against fp32 on the same channels; and the
noise samplers (iid, antithetic) against a large-N reference at equal forward
budget.

Run (about 15-20 minutes on 2 busy cores; hold the shared lock):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/benchmark_speed.py

Deletion / insertion AUC come from ``captum_sscam.metrics`` (the Score-CAM
paper's setting: 1 % steps, deletion to zeros, insertion from a blurred copy).
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_sscam import ScoreCAM, SmoothedScoreCAM
from captum_sscam.apps.data import photo_tensor, quokka, resize_photo, skimage_photos
from captum_sscam.attr._masks import varying_channels
from captum_sscam.metrics import deletion_auc, insertion_auc

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
BRACKET_FORWARDS = 64
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------- measuring


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


@contextmanager
def peak_resident_growth() -> Iterator[list[int]]:
    """Peak resident memory above the start, sampled every 2 ms (Linux)."""
    result = [0]
    if not os.path.exists("/proc/self/statm"):
        yield result
        return
    start = resident_bytes()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result[0] = max(result[0], resident_bytes() - start)
            done.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


@dataclass
class Row:
    name: str
    seconds: float
    forwards: int
    peak_mb: float


def measure(name: str, model: nn.Module, run: Callable[[], Any]) -> tuple[Row, Any]:
    """Time ``run``; count the images that pass through ``model``; peak memory."""
    images = [0]

    def count(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        images[0] += args[0].shape[0]

    handle = model.register_forward_pre_hook(count)
    try:
        with peak_resident_growth() as peak:
            start = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - start
    finally:
        handle.remove()
    row = Row(name, seconds, images[0], peak[0] / 2**20)
    print(f"  {name}: {seconds:.1f} s, {images[0]} forwards", flush=True)
    return row, result


def bare_forwards(model: nn.Module, count: int, batch: int, shape: tuple[int, ...]) -> None:
    """``count`` forwards of random inputs, ``batch`` per call: the limit."""
    with torch.no_grad():
        for start in range(0, count, batch):
            model(torch.randn(min(batch, count - start), *shape))


def print_table(title: str, rows: list[Row], limits: dict[str, float], peers: dict[str, str]):
    print(f"\n{title}")
    header = f"| {'method':<44} | s/image | forwards | peak MB | x limit | x peer |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    seconds = {row.name: row.seconds for row in rows}
    for row in rows:
        limit = limits.get(row.name)
        peer = peers.get(row.name)
        x_limit = f"{row.seconds / limit:7.2f}" if limit else "      -"
        x_peer = f"{row.seconds / seconds[peer]:6.2f}" if peer in seconds else "     -"
        print(
            f"| {row.name:<44} | {row.seconds:7.1f} | {row.forwards:8d} | {row.peak_mb:7.0f} "
            f"| {x_limit} | {x_peer} |"
        )


# ------------------------------------------------------------------- part 1


def timing_setting(model_name: str, size: int) -> tuple[nn.Module, nn.Module, Tensor, str]:
    """The model, its layer, one photo (coffee) and a title for the timing part."""
    photo = resize_photo(skimage_photos()[0], size)
    if model_name == "lite0":
        from captum_sscam.apps.models import (
            efficientnet_lite0,
            lite0_preprocess,
            lite0_target_layer,
        )

        model = efficientnet_lite0()
        title = f"EfficientNet-Lite0 (pretrained), {size} px, head activation"
        return model, lite0_target_layer(model), lite0_preprocess(photo_tensor(photo)), title
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18().eval()
    x = (photo_tensor(photo).permute(2, 0, 1)[None].float() / 255 - IMAGENET_MEAN) / IMAGENET_STD
    return model, model.layer4, x, f"ResNet-18 (random weights), {size} px, layer4"


def timing(samples: int, batch: int, top_k: int, size: int, model_name: str) -> None:
    from pytorch_grad_cam import ScoreCAM as GradCamScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam import methods as torchcam_methods

    model, layer, x, title = timing_setting(model_name, size)
    with torch.no_grad():
        features = []
        handle = layer.register_forward_hook(lambda _m, _i, out: features.append(out))
        target = int(model(x).argmax())
        handle.remove()
    k_prime = int(varying_channels(features[0]).sum())
    shape = tuple(x.shape[1:])
    print(f"{title}: K = {features[0].shape[1]}, K' = {k_prime}")

    print("\nForward cost of one batch by precision and memory format (ms per image):")
    probe = torch.randn(4, *shape)
    for label, dtype, channels_last in (
        ("fp32", None, False),
        ("fp32 channels-last", None, True),
        ("bf16 autocast", torch.bfloat16, False),
        ("bf16 autocast channels-last", torch.bfloat16, True),
    ):
        batch_input = (
            probe.contiguous(memory_format=torch.channels_last) if channels_last else probe
        )
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=bool(dtype)),
        ):
            model(batch_input)
            start = time.perf_counter()
            model(batch_input)
            per_image = (time.perf_counter() - start) / probe.shape[0]
        print(f"  {label:<30} {1000 * per_image:8.1f}")

    print("\nBatch size (perturbations_per_eval) sweep, bare forwards (ms per image):")
    for size in (8, 16, 32, 64):
        start = time.perf_counter()
        bare_forwards(model, 64, size, shape)
        print(f"  batch {size:3d}: {1000 * (time.perf_counter() - start) / 64:8.1f}")

    print(f"\nTiming runs (batch {batch}, N = {samples} noise samples):", flush=True)
    rows: list[Row] = []
    limits: dict[str, float] = {}

    def seconds_per_bare_forward() -> float:
        start = time.perf_counter()
        bare_forwards(model, BRACKET_FORWARDS, batch, shape)
        return (time.perf_counter() - start) / BRACKET_FORWARDS

    def add(name: str, run: Callable[[], Any], needed: int | None = None) -> None:
        """Time ``run``; its limit: ``needed`` bare forwards at the cost per forward
        measured just before and just after it (the load on shared cores drifts)."""
        before = seconds_per_bare_forward() if needed else 0.0
        row, _ = measure(name, model, run)
        rows.append(row)
        if needed:
            limits[name] = needed * (before + seconds_per_bare_forward()) / 2

    generator = torch.Generator().manual_seed(0)
    sscam = SmoothedScoreCAM(model, layer)
    add(f"bare K'={k_prime} forwards (limit)", lambda: bare_forwards(model, k_prime, batch, shape))
    add(
        "captum_sscam ScoreCAM fp32",
        lambda: ScoreCAM(model, layer).attribute(x, target=target, perturbations_per_eval=batch),
        k_prime,
    )

    def torchcam_run(extractor_cls: type, **kwargs: Any) -> Callable[[], Any]:
        def run() -> Any:
            with extractor_cls(
                model, layer, batch_size=batch, input_shape=shape, **kwargs
            ) as extractor:
                with torch.no_grad():
                    scores = model(x)
                return extractor(target, scores)

        return run

    add("torchcam ScoreCAM", torchcam_run(torchcam_methods.ScoreCAM), k_prime)

    def grad_cam_run() -> Any:
        with GradCamScoreCAM(model, [layer]) as cam:
            cam.batch_size = batch
            return cam(x, [ClassifierOutputTarget(target)])

    add("grad-cam ScoreCAM", grad_cam_run, k_prime)

    def ours(**options: Any) -> Callable[[], Any]:
        return lambda: sscam.attribute(
            x,
            target=target,
            nt_samples=samples,
            perturbations_per_eval=batch,
            generator=generator,
            **options,
        )

    add(f"captum_sscam SS-CAM N={samples} fp32 (iid)", ours(), samples * k_prime)
    add(
        f"torchcam SSCAM N={samples}",
        torchcam_run(torchcam_methods.SSCAM, num_samples=samples),
        samples * k_prime,
    )
    add(
        f"captum_sscam SS-CAM N={samples} top-{top_k} ch.",
        ours(top_k_channels=top_k),
        samples * min(top_k, k_prime),
    )
    add(
        f"captum_sscam SS-CAM N={samples} top-{top_k} antithetic",
        ours(top_k_channels=top_k, noise_sampling="antithetic"),
        samples * min(top_k, k_prime),
    )
    peers = {
        "captum_sscam ScoreCAM fp32": "torchcam ScoreCAM",
        "grad-cam ScoreCAM": "torchcam ScoreCAM",
    }
    peers.update(
        {row.name: f"torchcam SSCAM N={samples}" for row in rows[4:] if "captum" in row.name}
    )
    print_table(
        f"{title}, 1 image, batch {batch}; x limit = time / bare "
        f"time of the forwards the task needs (K'; N x K' for SS-CAM; N x k for top-k), "
        f"at the cost per forward measured around each row; x peer = time / torchcam's",
        rows,
        limits,
        peers,
    )


# ------------------------------------------------------------------- part 2


def deletion_insertion(model: nn.Module, x: Tensor, saliency: Tensor, target: int) -> tuple:
    """Deletion (zeros) and insertion (blur) AUC from ``captum_sscam.metrics``, 1 % steps."""
    deletion = deletion_auc(model, x, saliency, target=target)
    insertion = insertion_auc(model, x, saliency, target=target)
    return float(deletion[0]), float(insertion[0])


def correlation(a: Tensor, b: Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def faithfulness(
    samples: int, photo_names: list[str], top_ks: list[int], precision_channels: int
) -> None:
    from captum_sscam.apps.models import efficientnet_lite0, lite0_preprocess, lite0_target_layer

    model = efficientnet_lite0()
    layer = lite0_target_layer(model)
    photos = {photo.name: photo for photo in [*skimage_photos(), quokka()]}
    sscam, score_cam = SmoothedScoreCAM(model, layer), ScoreCAM(model, layer)
    print(f"\nEfficientNet-Lite0 (pretrained), 1280 x 7 x 7 head, N = {samples}")

    def smoothed(**kwargs: Any) -> Callable[[Tensor, int], Tensor]:
        return lambda x, target: sscam.attribute(
            x,
            target=target,
            nt_samples=samples,
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )

    def plain(**kwargs: Any) -> Callable[[Tensor, int], Tensor]:
        return lambda x, target: score_cam.attribute(
            x, target=target, top_k_channels=precision_channels, **kwargs
        )

    exact_label = f"SS-CAM N={samples} exact fp32"
    options = {exact_label: smoothed()}
    for k in top_ks:
        options[f"SS-CAM N={samples} top-{k} ch."] = smoothed(top_k_channels=k)
        options[f"SS-CAM N={samples} top-{k} antithetic"] = smoothed(
            top_k_channels=k, noise_sampling="antithetic"
        )
    precision_label = f"Score-CAM top-{precision_channels} fp32"
    precision_options = {
        precision_label: plain(),
        f"Score-CAM top-{precision_channels} channels-last": plain(channels_last=True),
        f"Score-CAM top-{precision_channels} bf16 autocast": plain(autocast_dtype=torch.bfloat16),
    }
    totals: dict[str, list[tuple[float, int, float, float, float]]] = {}
    for name in photo_names:
        image = photo_tensor(resize_photo(photos[name], 224))
        x = lite0_preprocess(image)
        with torch.no_grad():
            target = int(model(x).argmax())
        print(f"  {name}: class {target}", flush=True)
        maps: dict[str, Tensor] = {}
        for block, base in ((options, exact_label), (precision_options, precision_label)):
            for label, run in block.items():
                row, maps[label] = measure(
                    label, model, lambda run=run, x=x, target=target: run(x, target)
                )
                deletion, insertion = deletion_insertion(model, x, maps[label], target)
                corr = correlation(maps[label], maps[base])
                totals.setdefault(label, []).append(
                    (row.seconds, row.forwards, corr, deletion, insertion)
                )
    print(
        f"\nFaithfulness on {len(photo_names)} photos ({', '.join(photo_names)}), means; "
        "corr / dAUC against the first row of each block (exact SS-CAM; fp32 Score-CAM)"
    )
    print(
        "| option | s/image | forwards | speed-up | corr | deletion | insertion | d del | d ins |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for block in (list(options), list(precision_options)):
        base = [sum(values) / len(values) for values in zip(*totals[block[0]], strict=True)]
        for label in block:
            mean = [sum(values) / len(values) for values in zip(*totals[label], strict=True)]
            print(
                f"| {label} | {mean[0]:.1f} | {mean[1]:.0f} | {base[0] / mean[0]:.1f}x "
                f"| {mean[2]:.3f} | {mean[3]:.4f} | {mean[4]:.4f} "
                f"| {mean[3] - base[3]:+.4f} | {mean[4] - base[4]:+.4f} |"
            )


def noise_variance(photo_name: str, channels: int, reference_samples: int, seeds: int) -> None:
    """Relative map error against a large-N reference at equal forward budget."""
    from captum_sscam.apps.models import efficientnet_lite0, lite0_preprocess, lite0_target_layer

    model = efficientnet_lite0()
    sscam = SmoothedScoreCAM(model, lite0_target_layer(model))
    photos = {photo.name: photo for photo in [*skimage_photos(), quokka()]}
    x = lite0_preprocess(photo_tensor(resize_photo(photos[photo_name], 224)))
    with torch.no_grad():
        target = int(model(x).argmax())

    def run(samples: int, sampling: str, seed: int) -> Tensor:
        return sscam.attribute(
            x,
            target=target,
            nt_samples=samples,
            top_k_channels=channels,
            noise_sampling=sampling,
            relu_attributions=False,
            generator=torch.Generator().manual_seed(seed),
        )

    reference = run(reference_samples, "iid", 1000)
    print(
        f"\nNoise samplers on {photo_name} (Lite0, top-{channels} channels, no ReLU): relative "
        f"L2 error of the map against an iid N={reference_samples} reference, mean of {seeds} seeds"
    )
    print("| N | forwards | iid | antithetic |")
    print("|---|---|---|---|")
    for samples in (2, 4):
        errors = {}
        for sampling in ("iid", "antithetic"):
            values = [
                float((run(samples, sampling, seed) - reference).norm() / reference.norm())
                for seed in range(seeds)
            ]
            errors[sampling] = sum(values) / len(values)
        print(
            f"| {samples} | {samples * channels} | {errors['iid']:.4f} "
            f"| {errors['antithetic']:.4f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2, help="SS-CAM noise samples N")
    parser.add_argument("--batch", type=int, default=32, help="perturbations_per_eval")
    parser.add_argument("--top-k", type=int, default=64, help="channels kept in part 1")
    parser.add_argument("--size", type=int, default=224, help="image size in part 1")
    parser.add_argument("--photos", nargs="+", default=["coffee", "quokka"])
    parser.add_argument("--faithful-top-k", type=int, nargs="+", default=[64, 160])
    parser.add_argument("--precision-top-k", type=int, default=16, help="channels, bf16 check")
    parser.add_argument("--model", choices=["resnet18", "lite0"], default="resnet18")
    parser.add_argument("--parts", nargs="+", default=["timing", "faithfulness", "noise"])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()}"
    )
    if "timing" in args.parts:
        timing(args.samples, args.batch, args.top_k, args.size, args.model)
    if "faithfulness" in args.parts:
        faithfulness(args.samples, args.photos, args.faithful_top_k, args.precision_top_k)
    if "noise" in args.parts:
        noise_variance(args.photos[0], channels=16, reference_samples=32, seeds=2)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
