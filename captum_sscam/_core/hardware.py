"""What the machine can do fast, decided at run time on the machine that runs.

The same code runs on CPUs with and without bf16 units and on GPUs of several
generations, and the fastest precision differs between them: bf16 autocast
runs on dedicated units on Intel Xeons with AMX and AMD EPYCs with AVX512-BF16,
but is emulated, and slower than fp32, on CPUs without them. So the
speed policy reads the CPU's feature flags (PyTorch's own CPU probe,
``torch.cpu.get_capabilities``, where it exists; ``/proc/cpuinfo`` otherwise)
and the GPU's compute capability, never a fixed setting.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

BF16_CPU_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
CUDA_BF16_MAJOR = 8  # Ampere and later: bf16 tensor cores
CUDA_FP16_MAJOR = 7  # Volta and Turing: fp16 tensor cores
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and feature flags (lower case, as Linux names them)."""

    model: str
    flags: frozenset[str]


def parse_cpuinfo(text: str) -> CpuInfo:
    """Model name and flags of the first processor in ``/proc/cpuinfo`` text.

    x86 lists its features on a ``flags`` line, ARM on ``Features``; the model
    is the ``model name`` line (x86) or ``Hardware`` / ``CPU part`` where that
    is all there is.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        key = key.strip().lower()
        if separator and key not in fields:
            fields[key] = value.strip()
    flags = fields.get("flags", fields.get("features", ""))
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu part", "")
    return CpuInfo(model or "unknown CPU", frozenset(flags.lower().split()))


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:  # PyTorch's cpuinfo probe: any OS
        found = dict(capabilities())
        flags = frozenset(name for name, value in found.items() if value is True)
        model = str(found.get("cpu_name") or platform.processor() or platform.machine())
        return CpuInfo(model, flags)
    if CPUINFO.exists():
        return parse_cpuinfo(CPUINFO.read_text(errors="replace"))
    return CpuInfo(platform.processor() or platform.machine() or "unknown CPU", frozenset())


def has_bf16_units(flags: Collection[str]) -> bool:
    """Whether a CPU with these feature flags computes bf16 in hardware (AMX or AVX512-BF16)."""
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def cpu_autocast_dtype(flags: Collection[str]) -> torch.dtype | None:
    """``torch.bfloat16`` for a CPU with bf16 units, ``None`` (fp32) for any other."""
    return torch.bfloat16 if has_bf16_units(flags) else None


def cuda_autocast_dtype(capability: tuple[int, int], is_rocm: bool = False) -> torch.dtype | None:
    """The autocast dtype for a GPU of this compute capability.

    bf16 from compute capability 8.0 (Ampere) on and on ROCm; fp16 on 7.x
    (Volta, Turing: fp16 tensor cores, no bf16); ``None`` (fp32) on older
    GPUs, whose fp16 is not faster than fp32 or not at all supported.
    """
    if is_rocm or capability[0] >= CUDA_BF16_MAJOR:
        return torch.bfloat16
    if capability[0] >= CUDA_FP16_MAJOR:
        return torch.float16
    return None


def fastest_autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The ``torch.autocast`` dtype that makes forwards fastest on ``device``, or ``None``.

    ``None`` means full precision (fp32): on CPUs without bf16 units and on
    devices other than CPU and CUDA. The choice follows the hardware only; the
    map changes by rounding under any autocast dtype.

    Args:
        device: a ``torch.device`` or its name (``"cpu"``, ``"cuda:1"``).
    """
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_autocast_dtype(cpu_info().flags)
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        return cuda_autocast_dtype(capability, is_rocm=torch.version.hip is not None)
    return None


def describe_cpu(info: CpuInfo, threads: int) -> str:
    """One line for a benchmark table: the model, its bf16 flags and the thread count."""
    flags = ", ".join(f"{flag}: {'yes' if flag in info.flags else 'no'}" for flag in BF16_CPU_FLAGS)
    return f"{info.model} ({flags}), torch threads: {threads}"


def cpu_description() -> str:
    """This CPU as `describe_cpu` writes it, e.g.

    ``AMD EPYC (amx_bf16: no, avx512_bf16: yes), torch threads: 2``.
    """
    return describe_cpu(cpu_info(), torch.get_num_threads())
