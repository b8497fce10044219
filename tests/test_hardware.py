"""fastest_autocast_dtype and the CPU line: from injected cpuinfo text, and on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captum_sscam._core import hardware as _hardware
from captum_sscam._core.hardware import (
    CpuInfo,
    cpu_autocast_dtype,
    cpu_description,
    cpu_info,
    cuda_autocast_dtype,
    describe_cpu,
    fastest_autocast_dtype,
    has_bf16_units,
    parse_cpuinfo,
)

XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
EPYC_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
EPYC_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse avx avx2 fma sha_ni vaes
"""
XEON_SKYLAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu sse avx2 avx512f avx512bw avx512vl avx512_vnni
"""
ARM = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


@pytest.mark.parametrize(
    ("text", "model", "expected"),
    [
        (XEON_AMX, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", torch.bfloat16),
        (EPYC_ZEN4, "AMD EPYC 9B14", torch.bfloat16),
        (EPYC_ZEN3, "AMD EPYC 7B13", None),
        (XEON_SKYLAKE, "Intel(R) Xeon(R) CPU @ 2.00GHz", None),
        (ARM, "0xd40", None),  # bf16 on ARM is not among the x86 units this policy knows
        ("", "unknown CPU", None),
    ],
)
def test_cpu_policy_from_cpuinfo_text(text: str, model: str, expected: torch.dtype | None):
    info = parse_cpuinfo(text)
    assert info.model == model
    assert cpu_autocast_dtype(info.flags) is expected


def test_cpuinfo_flags_and_units() -> None:
    info = parse_cpuinfo(XEON_AMX)
    assert {"amx_bf16", "amx_tile", "avx512_bf16", "fpu"} <= info.flags
    assert has_bf16_units({"amx_bf16"}) and has_bf16_units(["avx512_bf16"])
    assert not has_bf16_units({"avx512f", "avx512_vnni", "bf16"})
    assert "bf16" in parse_cpuinfo(ARM).flags


@pytest.mark.parametrize(
    ("capability", "rocm", "expected"),
    [
        ((9, 0), False, torch.bfloat16),  # Hopper
        ((8, 0), False, torch.bfloat16),  # Ampere
        ((7, 5), False, torch.float16),  # Turing
        ((7, 0), False, torch.float16),  # Volta
        ((6, 1), False, None),  # Pascal: no tensor cores
        ((9, 4), True, torch.bfloat16),  # ROCm (gfx94x reports 9.4)
    ],
)
def test_cuda_policy(capability: tuple[int, int], rocm: bool, expected: torch.dtype | None):
    assert cuda_autocast_dtype(capability, is_rocm=rocm) is expected


def test_describe_cpu() -> None:
    info = CpuInfo("AMD EPYC 9B14", frozenset({"avx512_bf16", "avx2"}))
    assert describe_cpu(info, 2) == (
        "AMD EPYC 9B14 (amx_bf16: no, avx512_bf16: yes), torch threads: 2"
    )


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_this_machine_agrees_with_proc_cpuinfo() -> None:
    from_proc = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    expected = torch.bfloat16 if has_bf16_units(from_proc.flags) else None
    assert fastest_autocast_dtype("cpu") is expected
    assert fastest_autocast_dtype(torch.device("cpu")) is expected
    for flag in _hardware.BF16_CPU_FLAGS:
        assert (flag in cpu_info().flags) == (flag in from_proc.flags), flag
    description = cpu_description()
    assert description.endswith(f"torch threads: {torch.get_num_threads()}")
    for flag in _hardware.BF16_CPU_FLAGS:
        assert f"{flag}: {'yes' if flag in from_proc.flags else 'no'}" in description


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_proc_cpuinfo_is_read_without_torchs_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    cpu_info.cache_clear()
    try:
        assert cpu_info() == parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    finally:
        cpu_info.cache_clear()


def test_other_devices_run_in_full_precision() -> None:
    assert fastest_autocast_dtype("meta") is None


@pytest.mark.cuda
def test_this_gpu() -> None:
    device = torch.device("cuda")
    capability = torch.cuda.get_device_capability(device)
    expected = {True: torch.bfloat16, False: torch.float16 if capability[0] == 7 else None}
    assert fastest_autocast_dtype(device) is expected[capability[0] >= 8]
    if capability[0] >= 8:
        assert torch.cuda.is_bf16_supported(including_emulation=False)
