"""SS-CAM on a CUDA GPU: exact N=35 against the bare time of its forward passes.

ResNet-50 with random weights (seed 0), one 224 px input, layer4 (K = 2048).
For each precision (fp32; fp16 and bf16 autocast, channels-last) it times the
bare forwards of N x K' random inputs at the engine's batch size and exact
SS-CAM (N = 35, iid), and reports the ratio (goal: <= 1.2x) and masked images
per second; then the fastest approximate mode (top-k channels, antithetic
noise, fp16) per 224 px image (goal: < 1 s). Without CUDA it says so and exits.

Run on a machine with a GPU:

    PYTHONPATH=. python benchmarks/gpu_benchmark.py [--samples 35] [--batch 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from captum_sscam import SmoothedScoreCAM
from captum_sscam.attr._masks import varying_channels

PRECISIONS: dict[str, tuple[torch.dtype | None, bool]] = {
    "fp32": (None, False),
    "fp16 autocast, channels-last": (torch.float16, True),
    "bf16 autocast, channels-last": (torch.bfloat16, True),
}


def timed(run: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def bare_forwards(
    model: nn.Module, count: int, batch: int, x: Tensor, dtype: torch.dtype | None, last: bool
) -> None:
    """``count`` forwards of random inputs shaped like ``x``, ``batch`` per call."""
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float16, enabled=bool(dtype)):
        for start in range(0, count, batch):
            inputs = torch.randn(min(batch, count - start), *x.shape[1:], device=x.device)
            if last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            model(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=35)
    parser.add_argument("--batch", type=int, default=None, help="default: from free memory")
    parser.add_argument("--top-k", type=int, default=128, help="channels, approximate mode")
    parser.add_argument("--approx-samples", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA device: this benchmark needs a GPU (see benchmark_speed.py for CPU).")
        sys.exit(0)
    from torchvision.models import resnet50

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = resnet50().eval().to(device)
    x = torch.randn(1, 3, 224, 224, device=device)
    features: list[Tensor] = []
    handle = model.layer4.register_forward_hook(lambda _m, _i, out: features.append(out))
    with torch.no_grad():
        target = int(model(x).argmax())
    handle.remove()
    k_prime = int(varying_channels(features[0]).sum())
    method = SmoothedScoreCAM(model, model.layer4)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print(f"ResNet-50 random weights, layer4 K' = {k_prime}, N = {args.samples}, one 224 px image")
    print("| precision | batch | bare N x K' s | SS-CAM s | x bare | masked images/s |")
    print("|---|---|---|---|---|---|")
    for label, (dtype, last) in PRECISIONS.items():
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            continue
        options = {"autocast_dtype": dtype, "channels_last": last}

        def run(options: dict = options) -> Tensor:
            return method.attribute(
                x,
                target=target,
                nt_samples=args.samples,
                perturbations_per_eval=args.batch,
                generator=torch.Generator(device).manual_seed(0),
                **options,
            )

        batch = args.batch or _auto_batch(method, x, target)
        count = args.samples * k_prime
        bare_forwards(model, 2 * batch, batch, x, dtype, last)  # warm-up (cuDNN autotune)
        run()
        bare = timed(
            lambda dtype=dtype, last=last, batch=batch, count=count: bare_forwards(
                model, count, batch, x, dtype, last
            )
        )
        seconds = timed(run)
        print(
            f"| {label} | {batch} | {bare:.2f} | {seconds:.2f} | {seconds / bare:.2f} "
            f"| {count / seconds:.0f} |",
            flush=True,
        )

    def approximate() -> Tensor:
        return method.attribute(
            x,
            target=target,
            nt_samples=args.approx_samples,
            noise_sampling="antithetic",
            top_k_channels=args.top_k,
            autocast_dtype=torch.float16,
            channels_last=True,
            perturbations_per_eval=args.batch,
        )

    approximate()
    seconds = timed(approximate)
    print(
        f"\nFastest approximate mode (top-{args.top_k} channels, antithetic N="
        f"{args.approx_samples}, fp16, channels-last): {seconds:.3f} s per 224 px image "
        f"(goal < 1 s)"
    )


def _auto_batch(method: SmoothedScoreCAM, x: Tensor, target: int) -> int:
    """The batch the engine picks from free memory, read off the forward sizes."""
    sizes: list[int] = []
    handle = method.forward_func.register_forward_pre_hook(
        lambda _m, args: sizes.append(args[0].shape[0])
    )
    try:
        method.attribute(x, target=target, nt_samples=1, top_k_channels=1024)
    finally:
        handle.remove()
    return max(sizes[1:])


if __name__ == "__main__":
    main()
