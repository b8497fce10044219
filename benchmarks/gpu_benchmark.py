"""SS-CAM on a CUDA GPU: exact N=35 against the bare time of its forward passes.

ResNet-50 with random weights (seed 0), one 224 px input, layer4 (K = 2048).
For each configuration (the default call: fp32 with the automatic memory format;
fp32 forced contiguous; ``autocast_dtype="auto"``; fp16 and bf16 autocast with
channels-last; fp32 and ``"auto"`` with ``compile_forward=True``) it times the bare
forwards of N x K' random inputs at the engine's batch size (compiled, on whole
batches, for the compiled rows) and exact SS-CAM (N = 35, iid), and reports the ratio
(goal: <= 1.2x) and masked images per second. Then the fast path
(``autocast_dtype="auto"``, adaptive sampling at N = 16; again compiled when the
``compiled-auto`` row ran) and the fastest approximate mode (top-k channels,
antithetic noise) per 224 px image (goal: < 1 s). Without CUDA it says so and exits.
``--out`` also writes the table to a file (``make gpu-check`` does). The warm-up
before each timed call is a call with the fewest samples whose passes fill the
automatic memory format's calibration batches, so the choice is made there and the
timed call is a later call (no calibration in it); the bare forwards run in the
format it chose.

Then EfficientNet-Lite0 (pretrained, the package's demo model) on real photos, where the
CPU measurements established equal error: adaptive allocation at N = 16 reached uniform
N = 35's spread over seeds on coffee, chelsea and astronaut (docs/performance.md, table
3b). Per photo: the exact default call (N = 35, uniform, fp32) and the fast path
(``autocast_dtype="auto"``, adaptive N = 16; compiled too when the ``compiled-auto`` row
ran), each with the relative standard error its call returns (``return_error=True``,
``||SE|| / ||map||`` before the ReLU), so the run shows the two at equal error on the
GPU itself. Photos: ``--lite0-photos FILE ...`` (``make gpu-wheels`` writes the three to
``.whl/photos/``), by default scikit-image's, skipped with a line where the Lite0
packages or the photos are missing.

``--forward-options`` adds a table of bare forwards per second at the engine's batch,
channels-last, fp32 and bf16: eager, eager with cuDNN's autotuner
(``torch.backends.cudnn.benchmark``), and ``torch.compile`` (with its compile time),
then the fast path with the autotuner on.

Run on a machine with a GPU:

    PYTHONPATH=. python benchmarks/gpu_benchmark.py [--samples 35] [--batch 256] [--out F]

``--device cpu --model resnet18 --size 64 --samples 1 --lite0-channels 4`` is a dry run
of the script on the CPU in a minute (the tests run it), so that a GPU's time is not spent
on its bugs.

Private names: the CPU line, ``autocast_dtype="auto"``'s dtype and K' come through
``benchmarks/_common.py``. Two engine constants are read here so that the script follows
the engine: ``captum_sscam._core.scorer.CALIBRATION_ROUNDS`` (the warm-up makes the
``2 x CALIBRATION_ROUNDS`` full batches the automatic memory format times, so the timed call
does not calibrate) and ``captum_sscam._core.batch_size.MAX_AUTO_BATCH`` (the largest
automatic batch: the call that reads the engine's batch off its forwards makes that many
masked passes). The memory format the engine chose is read off the warm-up's last masked
batch (a forward pre-hook).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from _common import (
    Forwards,
    auto_dtype,
    counted_forwards,
    cpu_line,
    lite0,
    lite0_input,
    synchronized_time,
    timed,
    top1,
    varying_channel_count,
)
from torch import Tensor, nn

from captum_sscam import SmoothedScoreCAM
from captum_sscam._core.batch_size import MAX_AUTO_BATCH
from captum_sscam._core.scorer import CALIBRATION_ROUNDS

FAST_SAMPLES_AT_35 = 16  # adaptive N that reached uniform N = 35's spread on Lite0's photos
LITE0_PHOTOS = ("coffee", "chelsea", "astronaut")

CONFIGURATIONS: dict[str, tuple[str, torch.dtype | str | None, bool | None, bool]] = {
    # label, autocast_dtype, channels_last, compile_forward
    "default": ("default call (fp32, automatic memory format)", None, None, False),
    "contiguous": ("fp32, contiguous", None, False, False),
    "auto": ('autocast_dtype="auto"', "auto", None, False),
    "fp16": ("fp16 autocast, channels-last", torch.float16, True, False),
    "bf16": ("bf16 autocast, channels-last", torch.bfloat16, True, False),
    "compiled": ("fp32, compile_forward=True", None, None, True),
    "compiled-auto": ('autocast_dtype="auto", compile_forward=True', "auto", None, True),
}


def bare_forwards(
    model: nn.Module, count: int, batch: int, x: Tensor, dtype: torch.dtype | None, last: bool
) -> None:
    """``count`` forwards of random inputs shaped like ``x``, ``batch`` per call."""
    enabled = dtype is not None
    autocast = torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=enabled)
    with torch.no_grad(), autocast:
        for start in range(0, count, batch):
            inputs = torch.randn(min(batch, count - start), *x.shape[1:], device=x.device)
            if last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            model(inputs)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=35)
    parser.add_argument("--batch", type=int, default=None, help="default: from free memory")
    parser.add_argument("--top-k", type=int, default=128, help="channels, approximate mode")
    parser.add_argument("--approx-samples", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument(
        "--device", default="cuda", help="cpu: a dry run of this script (with a small --model)"
    )
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "resnet18"])
    parser.add_argument("--size", type=int, default=224, help="image size")
    parser.add_argument(
        "--configs", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS)
    )
    parser.add_argument(
        "--lite0-photos",
        nargs="*",
        default=None,
        help="image files for the Lite0 table (default: scikit-image's coffee, chelsea and "
        "astronaut; none: skip the table)",
    )
    parser.add_argument(
        "--lite0-channels",
        type=int,
        default=None,
        help="top_k_channels in the Lite0 table, for a dry run (default: all channels)",
    )
    parser.add_argument(
        "--forward-options",
        action="store_true",
        help="also time bare forwards with cuDNN's autotuner and torch.compile",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: this benchmark needs a GPU (see benchmark_speed.py for CPU).")
        sys.exit(0)
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    from torchvision import models

    torch.manual_seed(0)
    model = getattr(models, args.model)().eval().to(device)
    x = torch.randn(1, 3, args.size, args.size, device=device)
    target, k_prime = top1(model, x), varying_channel_count(model, model.layer4, x)
    method = SmoothedScoreCAM(model, model.layer4)
    device_dtype = auto_dtype(device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    emit(f"{device_name}, torch {torch.__version__}")
    emit(f"CPU: {cpu_line()}")
    emit(f'autocast_dtype="auto" picks {device_dtype} on this device')
    if device.type == "cuda":
        tf32 = torch.backends.cudnn.allow_tf32
        emit(f"fp32 convolutions: {'TF32' if tf32 else 'IEEE fp32'} (cuDNN, PyTorch's setting)")
    emit(
        f"{args.model} random weights, layer4 K' = {k_prime}, N = {args.samples}, "
        f"one {args.size} px image"
    )
    emit("")
    emit("| configuration | batch | bare N x K' s | SS-CAM s | x bare | masked images/s |")
    emit("|---|---|---|---|---|---|")
    compiled_model: nn.Module | None = None  # the compiled rows' bare forwards
    for label, dtype, last, compiled in (CONFIGURATIONS[name] for name in args.configs):
        if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        options = {"autocast_dtype": dtype, "channels_last": last, "compile_forward": compiled}
        bare_dtype = device_dtype if dtype == "auto" else dtype

        # SS-CAM and its bare forwards run at one batch: the engine's automatic one, read off
        # an eager call (a compiled call would round it to a power of two)
        batch = args.batch or _auto_batch(method, x, target)

        def run(options: dict = options, samples: int = args.samples, batch: int = batch) -> Tensor:
            return method.attribute(
                x,
                target=target,
                nt_samples=samples,
                perturbations_per_eval=batch,
                generator=torch.Generator(device).manual_seed(0),
                **options,
            )

        count = args.samples * k_prime
        # warm-up: kernels, and the automatic memory format's calibration (kept on `method`
        # for this batch and precision, so the timed call below does not repeat it); the
        # calibration needs 2 x CALIBRATION_ROUNDS full batches of masked passes. An eager
        # row's last batch shows the format chosen; a compiled model gets no hook (adding or
        # removing one would make it recompile)
        counting = nullcontext(Forwards()) if compiled else counted_forwards(model)
        with counting as warm_up:
            run(samples=math.ceil(2 * CALIBRATION_ROUNDS * batch / k_prime))
        if compiled:
            # compile_forward leaves the layout to the compiler (contiguous inputs) and pads
            # the last batch, so the compiled bare forwards run whole batches too
            if compiled_model is None:
                compiled_model = torch.compile(model, dynamic=False)
            bare_model, bare_last = compiled_model, bool(last)
            bare_count = math.ceil(count / batch) * batch
        else:
            bare_model, bare_count = model, count
            # the automatic format: the one the warm-up's last batch ran in, after calibrating
            bare_last = bool(last) if last is not None else warm_up.channels_last[-1]
        bare_forwards(bare_model, 2 * batch, batch, x, bare_dtype, bare_last)
        bare = timed(
            lambda net=bare_model, n=bare_count, dtype=bare_dtype, last=bare_last, batch=batch: (
                bare_forwards(net, n, batch, x, dtype, last)
            ),
            device,
        )
        seconds = timed(run, device)
        if last is None and not compiled:
            label += f": {'channels-last' if bare_last else 'contiguous'}"
        emit(
            f"| {label} | {batch} | {bare:.2f} | {seconds:.2f} | {seconds / bare:.2f} "
            f"| {count / seconds:.0f} |"
        )

    fast_samples = fast_budget(args.samples)

    def fast_path(compile_forward: bool = False) -> Tensor:
        return method.attribute(
            x,
            target=target,
            nt_samples=fast_samples,
            sample_allocation="adaptive",
            autocast_dtype="auto",
            perturbations_per_eval=args.batch,
            generator=torch.Generator(device).manual_seed(0),
            compile_forward=compile_forward,
        )

    fast_path()
    seconds = timed(fast_path, device)
    emit(
        f"\nFast path (autocast auto, adaptive N={fast_samples}, where adaptive allocation "
        f"reached uniform N=35's error on CPU): {seconds:.3f} s per {args.size} px image "
        "(goal < 1 s)"
    )
    if "compiled-auto" in args.configs:  # its rows compiled the forward at this batch
        fast_path(compile_forward=True)
        seconds = timed(lambda: fast_path(compile_forward=True), device)
        emit(
            f"Fast path with compile_forward=True (compiled above): {seconds:.3f} s per "
            f"{args.size} px image (goal < 1 s)"
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
    seconds = timed(approximate, device)
    emit(
        f"Fastest approximate mode (top-{args.top_k} channels, antithetic N="
        f"{args.approx_samples}, fp16, channels-last): {seconds:.3f} s per {args.size} px image "
        f"(goal < 1 s)"
    )
    if args.forward_options:
        emit("")
        batch = args.batch or _auto_batch(method, x, target)
        forward_options_table(model, x, batch, emit)
        with _cudnn_autotuner(device):
            fast_path()  # the autotuner's trials, for each batch shape of the call
            seconds = timed(fast_path, device)
        emit(f"\nFast path with cuDNN's autotuner on: {seconds:.3f} s per {args.size} px image")
    lite0_table(args, device, emit)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"table written to {args.out}")


def fast_budget(samples: int) -> int:
    """The adaptive budget at the error of uniform ``samples`` (16 for 35, measured on CPU)."""
    return max(3, round(samples * FAST_SAMPLES_AT_35 / 35))


def lite0_inputs(paths: list[str] | None) -> list[tuple[str, Tensor]] | str:
    """``(name, Lite0 input)`` of each photo at 224 px, or why there are none."""
    from captum_sscam.apps.data import read_image, skimage_photos

    if paths is None:
        try:
            photos = [p for p in skimage_photos() if p.name in LITE0_PHOTOS]
        except ImportError:
            return "no scikit-image for its photos: pass --lite0-photos (make gpu-wheels)"
    else:
        photos = [read_image(path)[0] for path in paths]
    if not photos:
        return "no photos"
    return [(p.name, lite0_input(p)) for p in photos]


def lite0_table(
    args: argparse.Namespace, device: torch.device, emit: Callable[[str], None]
) -> None:
    """Exact SS-CAM against the fast path on Lite0's photos, with their returned errors."""
    emit("")
    inputs = lite0_inputs(args.lite0_photos)
    try:
        model, layer = lite0()
        model = model.to(device)
    except ImportError as error:
        inputs = f"{error} (make gpu-wheels carries it)"
    if isinstance(inputs, str):
        emit(f"EfficientNet-Lite0 table skipped: {inputs}.")
        return
    compiled = "compiled-auto" in args.configs
    exact_samples = max(2, args.samples)  # the standard error needs two samples per channel
    fast_samples = fast_budget(exact_samples)
    emit(
        f"EfficientNet-Lite0 (pretrained), head activation, 224 px photos, the top-1 class: "
        f"exact SS-CAM (default call, N = {exact_samples}, uniform, fp32) against the fast "
        f'path (autocast_dtype="auto", adaptive N = {fast_samples}). rel. SE: the returned '
        "standard error's norm over the map's, before the ReLU."
        + (f" top_k_channels={args.lite0_channels} (dry run)." if args.lite0_channels else "")
    )
    emit("")
    emit(
        "| photo | K' | batch | exact s | exact rel. SE | fast s | fast rel. SE "
        f"| {'fast compiled s | ' if compiled else ''}exact / fastest |"
    )
    emit(f"|---|---|---|---|---|---|---|{'---|' if compiled else ''}---|")
    fastest_times, error_ratios = [], []
    # one method for all photos: its memory-format choice and compiled forward carry over
    method = SmoothedScoreCAM(model, layer)
    for name, photo in inputs:
        x = photo.to(device)
        target = top1(model, x)
        k_prime = varying_channel_count(model, layer, x, args.lite0_channels)
        batch = args.batch or _auto_batch(method, x, target, k_prime)
        common = {
            "target": target,
            "perturbations_per_eval": batch,
            "top_k_channels": args.lite0_channels,
            "relu_attributions": False,
            "return_error": True,
            "show_progress": False,
        }
        fast = {"autocast_dtype": "auto", "sample_allocation": "adaptive"}
        calibration = math.ceil(2 * CALIBRATION_ROUNDS * batch / k_prime)
        rows = {
            "exact": ({}, exact_samples),
            "fast": (fast, fast_samples),
            **({"compiled": ({**fast, "compile_forward": True}, fast_samples)} if compiled else {}),
        }
        seconds, errors = {}, {}
        for row, (options, samples) in rows.items():
            call = {"nt_samples": samples, **common, **options}
            warm_up = max(2, min(samples, calibration))
            _lite0_call(method, x, {**call, "nt_samples": warm_up}, device)
            seconds[row], errors[row] = _lite0_call(method, x, call, device)
        fastest = min(seconds["fast"], seconds.get("compiled", math.inf))
        fastest_times.append(fastest)
        error_ratios.append(errors["fast"] / errors["exact"])
        compiled_cell = f"{seconds['compiled']:.3f} | " if compiled else ""
        emit(
            f"| {name} | {k_prime} | {batch} | {seconds['exact']:.3f} | {errors['exact']:.4f} "
            f"| {seconds['fast']:.3f} | {errors['fast']:.4f} | {compiled_cell}"
            f"{seconds['exact'] / fastest:.1f} |"
        )
    emit(
        f"\nFastest equal-error mode on Lite0: {statistics.mean(fastest_times):.3f} s per 224 px "
        f"image, mean over {len(fastest_times)} photos (goal < 1 s); fast / exact rel. SE "
        f"{min(error_ratios):.2f}-{max(error_ratios):.2f}"
    )


def _lite0_call(
    method: SmoothedScoreCAM, x: Tensor, call: dict, device: torch.device
) -> tuple[float, float]:
    """Seconds of one seeded call and its relative standard error ``||SE|| / ||map||``.

    The first call of a configuration also warms up: kernels, the memory format's
    calibration and, with ``compile_forward``, the compilation.
    """
    generator = torch.Generator(device).manual_seed(0)
    start = synchronized_time(device)
    saliency, error = method.attribute(x, generator=generator, **call)
    seconds = synchronized_time(device) - start
    return seconds, float(error.norm() / saliency.norm())


def forward_options_table(
    model: nn.Module, x: Tensor, batch: int, emit: Callable[[str], None]
) -> None:
    """Bare forwards per second: eager, eager with cuDNN's autotuner, ``torch.compile``."""
    count = 8 * batch
    emit(
        f"| bare forwards, channels-last, batch {batch} | fp32 images/s | bf16 images/s "
        "| first 2 batches s (fp32, bf16) |"
    )
    emit("|---|---|---|---|")
    for label in ("eager", "eager, cudnn.benchmark", "torch.compile"):
        network = torch.compile(model) if label == "torch.compile" else model
        rates, first = [], []
        with _cudnn_autotuner(x.device, label == "eager, cudnn.benchmark"):
            for dtype in (None, torch.bfloat16):
                first.append(_timed_forwards(network, 2 * batch, batch, x, dtype))
                rates.append(count / _timed_forwards(network, count, batch, x, dtype))
        emit(f"| {label} | {rates[0]:.0f} | {rates[1]:.0f} | {first[0]:.1f}, {first[1]:.1f} |")


def _timed_forwards(
    model: nn.Module, count: int, batch: int, x: Tensor, dtype: torch.dtype | None
) -> float:
    """Seconds for ``count`` channels-last forwards, ``batch`` per call."""
    return timed(lambda: bare_forwards(model, count, batch, x, dtype, True), x.device)


@contextmanager
def _cudnn_autotuner(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set for the block, restored after it."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled and device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _auto_batch(
    method: SmoothedScoreCAM, x: Tensor, target: int, k_prime: int = MAX_AUTO_BATCH
) -> int:
    """The batch the engine picks from free memory, read off the forward sizes."""
    channels = min(k_prime, MAX_AUTO_BATCH)  # enough masked passes for the largest batch
    samples = math.ceil(MAX_AUTO_BATCH / channels)
    with counted_forwards(method.forward_func) as forwards:
        method.attribute(
            x, target=target, nt_samples=samples, top_k_channels=channels, show_progress=False
        )
    return max(forwards.sizes[1:])  # the first forward: the activation pass


if __name__ == "__main__":
    main()
