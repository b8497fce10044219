"""What the benchmark scripts share: the machine line, timers, counted forwards, fresh processes
with chosen malloc settings, and the photos and the Lite0 model.

The scripts run as ``python benchmarks/X.py``: Python puts ``benchmarks/`` first on the
module path, so they import this module as ``_common`` (the tests put that folder on the path
too). The benchmarks measure through the library's public options. The private names they rely
on, each for a reason given where it is used:

- here: ``captum_sscam._core.hardware.cpu_description`` (the CPU line: the model, its bf16
  units and the torch threads), ``fastest_autocast_dtype`` (what ``autocast_dtype="auto"``
  picks, for a script's own forwards), ``captum_sscam._core.malloc.USER_MALLOC_VARIABLES`` and
  ``OPT_OUT_VARIABLE`` (the variables that change glibc's malloc: written once, in the
  library), and ``captum_sscam.attr._masks.varying_channels`` (K', the channels that get a
  mask: the engine's definition, for bare-forward counts);
- ``sscam_cost.py``: the debugging hook ``captum_sscam.attr._recording.recording_scores`` and
  the allocation functions of ``captum_sscam.attr._sampling`` (its docstring says which);
- ``gpu_benchmark.py``: ``_core.scorer.CALIBRATION_ROUNDS`` and
  ``_core.batch_size.MAX_AUTO_BATCH`` (its docstring says why).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from captum.attr import LayerActivation
from torch import Tensor, nn

from captum_sscam._core.hardware import cpu_description, fastest_autocast_dtype
from captum_sscam._core.malloc import OPT_OUT_VARIABLE, USER_MALLOC_VARIABLES
from captum_sscam.apps.data import Photo, photo_tensor, quokka, resize_photo, skimage_photos
from captum_sscam.apps.models import efficientnet_lite0, lite0_preprocess, lite0_target_layer
from captum_sscam.attr._masks import varying_channels

T = TypeVar("T")

# ------------------------------------------------------------------ the machine


def cpu_line() -> str:
    """The CPU line every table is printed with, e.g.
    ``AMD EPYC (amx_bf16: no, avx512_bf16: yes), torch threads: 1``."""
    return cpu_description()


def machine_header(*details: str) -> str:
    """The CPU line, then torch's version, ``details``, the load average and the time."""
    facts = [f"torch {torch.__version__}", *details, f"load average {os.getloadavg()}"]
    return f"{cpu_line()}\n{', '.join(facts)}, {time.strftime('%F %R %Z')}"


def auto_dtype(device: torch.device | str) -> torch.dtype | None:
    """What ``autocast_dtype="auto"`` picks on ``device`` (``None``: fp32)."""
    return fastest_autocast_dtype(device)


# ------------------------------------------------------------------ measuring


def synchronized_time(device: torch.device | str) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA: synchronized)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed(run: Callable[[], object], device: torch.device | str) -> float:
    """Seconds ``run`` takes on ``device``, its queued GPU work included."""
    start = synchronized_time(device)
    run()
    return synchronized_time(device) - start


@dataclass
class Forwards:
    """The batches through a model: their sizes and whether each was channels-last."""

    sizes: list[int] = field(default_factory=list)
    channels_last: list[bool] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(self.sizes)

    @property
    def last_format(self) -> str:
        """The last 4-D batch's memory format, ``"-"`` if none ran."""
        if not self.channels_last:
            return "-"
        return "channels-last" if self.channels_last[-1] else "contiguous"


@contextmanager
def counted_forwards(model: nn.Module) -> Iterator[Forwards]:
    """The batches through ``model`` inside the block (a forward pre-hook, removed after)."""
    forwards = Forwards()

    def hook(_module: nn.Module, args: tuple[object, ...]) -> None:
        if args and isinstance(args[0], Tensor) and args[0].dim() > 0:
            forwards.sizes.append(args[0].shape[0])
            if args[0].dim() == 4:
                last = args[0].is_contiguous(memory_format=torch.channels_last)
                forwards.channels_last.append(last and not args[0].is_contiguous())
            else:
                forwards.channels_last.append(False)

    handle = model.register_forward_pre_hook(hook)
    try:
        yield forwards
    finally:
        handle.remove()


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE / 2**20


@dataclass(frozen=True)
class Usage:
    """Wall, user and system seconds and minor page faults of one run (``getrusage``), and
    the process's peak resident memory after it (``ru_maxrss``, everything before included)."""

    wall: float
    user: float
    system: float
    faults: int
    peak_mb: float


def measured(run: Callable[[], T]) -> tuple[Usage, T]:
    """``run()``'s result and what it cost this process."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    usage = Usage(
        wall,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        after.ru_minflt - before.ru_minflt,
        after.ru_maxrss / 1024,
    )
    return usage, result


# --------------------------------------------------- fresh processes and malloc

# Every variable that changes this process's allocator: glibc's own (the library's list),
# its tunables, a preloaded allocator, the package's opt-out and PyTorch's huge-page switch.
ALLOCATOR_VARIABLES = (
    *USER_MALLOC_VARIABLES,
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
    OPT_OUT_VARIABLE,
    "THP_MEM_ALLOC_ENABLE",
)
GLIBC_DEFAULTS = {OPT_OUT_VARIABLE: "default"}  # glibc's own malloc settings
FREED_MEMORY_KEPT = {OPT_OUT_VARIABLE: "keep"}  # what the package's calls do by default


def allocator_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its allocator variables, then ``settings``."""
    environment = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    return {**environment, **settings}


def in_fresh_process(arguments: Sequence[str], settings: Mapping[str, str]) -> dict:
    """Run ``python ARGUMENTS`` in a fresh process whose allocator variables are ``settings``
    only; return the last line of its output that is a JSON object.

    A fresh process, because one whose heap grew while freed memory was kept does not fault
    like a new one, even after the setting is undone.
    """
    command = [sys.executable, *arguments]
    environment = allocator_environment(settings)
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(command)} printed no JSON line:\n{result.stdout[-3000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------ photos and Lite0


def photos() -> dict[str, Photo]:
    """The bundled photos by name: scikit-image's (coffee, chelsea, astronaut, rocket,
    motorcycle) and imgaug's quokka."""
    return {photo.name: photo for photo in [*skimage_photos(), quokka()]}


def lite0() -> tuple[nn.Module, nn.Module]:
    """The bundled pretrained EfficientNet-Lite0 and its 1280 x 7 x 7 head activation."""
    model = efficientnet_lite0()
    return model, lite0_target_layer(model)


def lite0_input(photo: Photo, size: int = 224) -> Tensor:
    """The photo resized to ``size`` x ``size`` px as a whole, as Lite0's input."""
    return lite0_preprocess(photo_tensor(resize_photo(photo, size)))


def top1(model: nn.Module, x: Tensor) -> int:
    """The model's top class for the one example ``x``."""
    with torch.no_grad():
        return int(model(x).argmax())


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def layer_activation(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """``layer``'s output for ``x`` (Captum's ``LayerActivation``: what the methods mask)."""
    return LayerActivation(model, layer).attribute(x)


def varying_channel_count(
    model: nn.Module, layer: nn.Module, x: Tensor, top_k: int | None = None
) -> int:
    """K' of the one example ``x``: its channels of ``layer`` that get a mask (at most
    ``top_k``), i.e. the masked forwards of a Score-CAM call."""
    k_prime = int(varying_channels(layer_activation(model, layer, x)).sum())
    return min(k_prime, top_k) if top_k else k_prime
