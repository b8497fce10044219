"""Page faults and system time of a Score-CAM call under each memory allocator setting.

One ``ScoreCAM(...).attribute`` call on the bundled pretrained EfficientNet-Lite0
(coffee photo, 224 px, head activation, ``top_k_channels=--channels``,
``perturbations_per_eval=--batch``) runs in a fresh process per row, under:

- glibc's defaults (``CAPTUM_SSCAM_MALLOC=default``);
- ``keep_freed_memory()`` (mallopt: ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``
  at 1 GiB), called just before the call;
- the same thresholds through glibc's environment variables
  (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, read at start-up);
- jemalloc and tcmalloc through ``LD_PRELOAD``, where Debian's ``libjemalloc2``
  / ``libtcmalloc-minimal4`` are installed.

For the call: wall, user and system seconds and minor page faults
(``getrusage``); the process's peak resident memory (``ru_maxrss``, model and
start-up included) and its resident memory before the call; and the largest
difference of the map from the first glibc-defaults row. The configurations
run in turns, ``--repeats`` times, so that load from other processes falls on
all of them alike.

Each row's process starts with its own allocator variables only (``benchmarks/_common.py``:
the variables glibc's malloc reads, as the library lists them, ``LD_PRELOAD`` and the
package's ``CAPTUM_SSCAM_MALLOC``); the CPU line is the library's (private) one.

Run (about 5 minutes on 2 cores with the defaults; hold the shared lock):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/page_faults.py [--channels 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import ctypes.util
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from _common import (
    FREED_MEMORY_KEPT,
    GLIBC_DEFAULTS,
    in_fresh_process,
    lite0,
    lite0_input,
    machine_header,
    measured,
    photos,
    resident_mb,
    top1,
)

GIB = str(1 << 30)


def configurations() -> dict[str, dict[str, str]]:
    """Each row's allocator variables (the parent's are not passed on)."""
    rows = {
        "glibc defaults": GLIBC_DEFAULTS,
        "keep_freed_memory() (mallopt)": FREED_MEMORY_KEPT,
        "MALLOC_*_THRESHOLD_=1GiB env": {
            "MALLOC_MMAP_THRESHOLD_": GIB,
            "MALLOC_TRIM_THRESHOLD_": GIB,
        },
    }
    for label, name in (("jemalloc", "jemalloc"), ("tcmalloc", "tcmalloc_minimal")):
        library = ctypes.util.find_library(name)
        if library:
            rows[f"{label} (LD_PRELOAD={library})"] = {"LD_PRELOAD": library, **GLIBC_DEFAULTS}
    return rows


# ------------------------------------------------------------------- child


def child(channels: int, batch: int, map_path: str) -> None:
    """One attribute call, measured; prints one JSON line."""
    import torch

    from captum_sscam import ScoreCAM, release_freed_memory, set_keep_freed_memory

    model, layer = lite0()
    x = lite0_input(photos()["coffee"])
    target = top1(model, x)
    method = ScoreCAM(model, layer)
    rss_before = resident_mb()
    # decided as on a process's first call: the row's CAPTUM_SSCAM_MALLOC or MALLOC_* variables
    # are respected; the call would decide the same
    malloc = set_keep_freed_memory(True)
    usage, saliency = measured(
        lambda: method.attribute(
            x, target=target, top_k_channels=channels, perturbations_per_eval=batch
        )
    )
    rss_after = resident_mb()
    start = time.perf_counter()
    release_freed_memory()
    release_ms = 1000 * (time.perf_counter() - start)
    torch.save(saliency, map_path)
    print(
        json.dumps(
            {
                **dataclasses.asdict(usage),
                "rss_before_mb": rss_before,
                "rss_after_mb": rss_after,
                "rss_released_mb": resident_mb(),
                "release_ms": release_ms,
                "malloc": malloc.reason,
            }
        )
    )


# ------------------------------------------------------------------ parent


def run_row(environment: dict[str, str], args: argparse.Namespace, map_path: str) -> dict:
    arguments = [__file__, "--child", "--channels", str(args.channels)]
    arguments += ["--batch", str(args.batch), "--map", map_path]
    return in_fresh_process(arguments, environment)


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=128, help="top_k_channels")
    parser.add_argument("--batch", type=int, default=32, help="perturbations_per_eval")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--map", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.child:
        child(args.channels, args.batch, args.map)
        return

    import torch

    print(machine_header(os.confstr("CS_GNU_LIBC_VERSION") or "not glibc"))
    rows = configurations()
    results: dict[str, list[dict]] = {name: [] for name in rows}
    maps: dict[str, list] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for index, (name, environment) in enumerate(rows.items()):
                map_path = str(Path(folder) / f"{index}-{repeat}.pt")
                results[name].append(run_row(environment, args, map_path))
                maps[name].append(torch.load(map_path))
                print(f"  {name} #{repeat + 1}: {results[name][-1]}", flush=True)
    reference = maps["glibc defaults"][0]
    print(
        f"\nScoreCAM.attribute on EfficientNet-Lite0 (pretrained), coffee 224 px, "
        f"top_k_channels={args.channels}, batch {args.batch}; one fresh process per run"
    )
    print(
        "| allocator | run | wall s | user s | system s | minor faults | peak RSS MB "
        "| RSS before / after call MB | after malloc_trim MB | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        for repeat, run in enumerate(runs):
            diff = float((maps[name][repeat] - reference).abs().max())
            print(
                f"| {name} | {repeat + 1} | {run['wall']:.1f} | {run['user']:.1f} "
                f"| {run['system']:.1f} | {run['faults']:,} | {run['peak_mb']:.0f} "
                f"| {run['rss_before_mb']:.0f} / {run['rss_after_mb']:.0f} "
                f"| {run['rss_released_mb']:.0f} | {diff:.1e} |"
            )
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
