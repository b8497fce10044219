"""Forward cost of EfficientNet-Lite0 on this CPU by precision and memory format.

Does "the CPU has bf16 units" mean "bf16 autocast is faster" here? Batches of
masked copies of the coffee photo (224 px, the masks Score-CAM makes: a
random 7 x 7 map upsampled and rescaled to [0, 1]) go through the bundled
pretrained Lite0 in fp32 and under bf16 autocast, each with contiguous and
channels-last input (the model is left as it is, as ``channels_last=True``
does). The rows are timed in turns (one forward of each, ``--repeats`` times)
so that load from other processes falls on all of them alike; the table gives
the fastest (least disturbed by other processes) and the median ms per image,
the median CPU time per image (all threads; it counts waiting threads that
spin), the speed-up of the fastest over fp32 contiguous, and the largest
change of a class probability against fp32.

``--compile`` adds ``torch.compile`` of the fp32 forward (channels-last input):
the time of the first call (the compilation) and ms per image after it.

Freed memory is kept in the process (``keep_freed_memory()``; see
``benchmarks/page_faults.py``) so that page faults do not blur the comparison;
``CAPTUM_SSCAM_MALLOC=default`` measures with glibc's defaults.

The CPU line is the library's (private) one, through ``benchmarks/_common.py``.

Run (a minute or two on 2 cores, several with ``--compile``; hold the shared lock):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/precision.py [--compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import lite0, lite0_input, machine_header, photos
from torch import Tensor

from captum_sscam import set_keep_freed_memory

Forward = Callable[[Tensor], Tensor]


def masked_batch(batch: int, size: int = 224) -> Tensor:
    """``batch`` copies of the coffee photo, each under a random Score-CAM-like mask."""
    x = lite0_input(photos()["coffee"], size)
    maps = F.interpolate(torch.rand(batch, 1, 7, 7), size=(size, size), mode="bilinear")
    low = maps.amin(dim=(2, 3), keepdim=True)
    high = maps.amax(dim=(2, 3), keepdim=True)
    return x * (maps - low) / (high - low)


def run_rows(
    rows: dict[str, tuple[Forward, Tensor]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of one forward per row, ``repeats`` times, the rows in turns."""
    wall: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, (forward, batch) in rows.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            forward(batch)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def autocast_forward(model: torch.nn.Module, dtype: torch.dtype | None) -> Forward:
    def forward(batch: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=dtype is not None):
            return model(batch).float().softmax(dim=1)

    return forward


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="images per forward")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per row")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (fp32)")
    return parser


def main() -> None:
    args = build_parser().parse_args()

    malloc = set_keep_freed_memory(True)  # CAPTUM_SSCAM_MALLOC=default still opts out
    print(machine_header(f"malloc: {malloc.reason}"))
    model, _ = lite0()
    batch = masked_batch(args.batch)
    channels_last = batch.contiguous(memory_format=torch.channels_last)
    rows: dict[str, tuple[Forward, Tensor]] = {
        "fp32 contiguous": (autocast_forward(model, None), batch),
        "fp32 channels-last": (autocast_forward(model, None), channels_last),
        "bf16 autocast contiguous": (autocast_forward(model, torch.bfloat16), batch),
        "bf16 autocast channels-last": (autocast_forward(model, torch.bfloat16), channels_last),
    }
    if args.compile:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(channels_last)
        compile_seconds = time.perf_counter() - start
        print(f"torch.compile (fp32, channels-last input): first call {compile_seconds:.1f} s")
        rows["fp32 channels-last, torch.compile"] = (
            autocast_forward(compiled, None),
            channels_last,
        )
    reference = rows["fp32 contiguous"][0](batch)
    errors = {
        name: float((forward(x) - reference).abs().max()) for name, (forward, x) in rows.items()
    }
    seconds, cpu_seconds = run_rows(rows, args.repeats)
    base = min(seconds["fp32 contiguous"])
    print(
        f"\nEfficientNet-Lite0, batch {args.batch}, 224 px, {args.repeats} forwards per row "
        "(in turns), ms per image"
    )
    print(
        "| forward | fastest | median | median CPU (all threads) | speed-up (fastest) "
        "| max abs change of a probability |"
    )
    print("|---|---|---|---|---|---|")
    for name, times in seconds.items():
        print(
            f"| {name} | {1000 * min(times) / args.batch:.1f} "
            f"| {1000 * statistics.median(times) / args.batch:.1f} "
            f"| {1000 * statistics.median(cpu_seconds[name]) / args.batch:.1f} "
            f"| {base / min(times):.2f}x | {errors[name]:.2e} |"
        )
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
