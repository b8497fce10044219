"""keep_freed_memory: when it changes glibc's malloc, and that batches then stop page-faulting.

The page-fault tests run in fresh processes (the allocator is per process):
a 40 MiB tensor, above the 32 MiB up to which glibc raises its mmap threshold
by itself, is allocated, written and freed again and again; the minor page
faults of the last rounds (``getrusage``) are counted. With glibc's defaults
every round faults all of its pages in again; after ``keep_freed_memory()``
none does.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from captum_sscam._core import malloc as _allocator
from captum_sscam._core.malloc import (
    GLIBC_DEFAULT_THRESHOLD,
    KEEP_BYTES,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    apply_thresholds,
    keep_freed_memory,
    set_keep_freed_memory,
)

ON_GLIBC = _allocator._find_glibc()[0] is not None
needs_glibc = pytest.mark.skipif(not ON_GLIBC, reason="needs Linux with glibc's malloc")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
BLOCK_MIB = 40
PAGES = BLOCK_MIB * 2**20 // PAGE_SIZE
MEASURED_ROUNDS = 5
CLEAN_ENVIRONMENT = {
    key: value
    for key, value in os.environ.items()
    if key not in (*_allocator.USER_MALLOC_VARIABLES, "GLIBC_TUNABLES", "LD_PRELOAD")
    and key != _allocator.OPT_OUT_VARIABLE
}

FAULTS_SCRIPT = textwrap.dedent(
    f"""
    import json, resource, sys
    import torch
    from captum_sscam._core.malloc import (
        keep_freed_memory, release_freed_memory, set_keep_freed_memory,
    )

    def resident_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * {PAGE_SIZE} / 2**20

    def faults_of_rounds():
        # glibc 2.36's posix_memalign cannot reuse a freed block of exactly the
        # requested size, so the heap grows for a few rounds before blocks are reused.
        for _ in range(10):
            torch.empty({BLOCK_MIB} * 2**18).fill_(1.0)
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range({MEASURED_ROUNDS}):
            torch.empty({BLOCK_MIB} * 2**18).fill_(1.0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    setting = keep_freed_memory()
    result = {{"applied": setting.applied, "same": keep_freed_memory() is setting}}
    result["faults"] = faults_of_rounds()
    result["resident_kept"] = resident_mib()
    if "--switch-off" in sys.argv:
        result["still_applied"] = set_keep_freed_memory(False).applied
    else:
        result["released"] = release_freed_memory()
    result["resident_after"] = resident_mib()
    print(json.dumps(result))
    """
)


def run_in_fresh_process(code: str, *args: str, **environment: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**CLEAN_ENVIRONMENT, **environment},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first call in this process as far as the module knows, in a clean environment."""
    monkeypatch.setattr(_allocator, "_setting", None)
    monkeypatch.setattr(_allocator, "_switched_off", False)
    for name in (*_allocator.USER_MALLOC_VARIABLES, "GLIBC_TUNABLES", _allocator.OPT_OUT_VARIABLE):
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------- page faults


@needs_glibc
def test_glibc_defaults_fault_every_large_block_in_again() -> None:
    result = run_in_fresh_process(FAULTS_SCRIPT, CAPTUM_SSCAM_MALLOC="default")
    assert not result["applied"]
    assert result["faults"] >= 0.9 * MEASURED_ROUNDS * PAGES


@needs_glibc
def test_kept_blocks_are_reused_without_faults_and_handed_back() -> None:
    result = run_in_fresh_process(FAULTS_SCRIPT)
    assert result["applied"] and result["same"]
    assert result["faults"] <= 0.01 * MEASURED_ROUNDS * PAGES
    # the heap holds freed blocks; malloc_trim hands them back to the kernel
    assert result["released"]
    assert result["resident_kept"] - result["resident_after"] >= BLOCK_MIB


@needs_glibc
def test_switching_off_hands_the_kept_blocks_back() -> None:
    result = run_in_fresh_process(FAULTS_SCRIPT, "--switch-off")
    assert result["applied"] and result["faults"] <= 0.01 * MEASURED_ROUNDS * PAGES
    assert result["still_applied"] is False
    assert result["resident_kept"] - result["resident_after"] >= BLOCK_MIB


# ----------------------------------------------------------- when it applies


@needs_glibc
@pytest.mark.parametrize("value", ["keep", "KEEP", ""])
def test_applied_on_glibc_unless_opted_out(value: str) -> None:
    code = (
        "import json; from captum_sscam._core.malloc import keep_freed_memory as k; "
        "s = k(); print(json.dumps([s.applied, s.mmap_threshold, s.trim_threshold, k() is s]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**CLEAN_ENVIRONMENT, "CAPTUM_SSCAM_MALLOC": value},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == [True, KEEP_BYTES, KEEP_BYTES, True]


@pytest.mark.usefixtures("fresh_state")
def test_opt_out_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTUM_SSCAM_MALLOC", "Default")
    setting = keep_freed_memory()
    assert (setting.applied, setting.reason) == (False, "CAPTUM_SSCAM_MALLOC=default")
    assert setting.mmap_threshold is None and setting.trim_threshold is None


@pytest.mark.usefixtures("fresh_state")
def test_unknown_opt_out_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTUM_SSCAM_MALLOC", "off")
    with pytest.raises(ValueError, match=r"CAPTUM_SSCAM_MALLOC='off'.*'default'.*'keep'"):
        keep_freed_memory()


@pytest.mark.usefixtures("fresh_state")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_TOP_PAD_", "0"),
        ("MALLOC_MMAP_MAX_", "0"),
        ("MALLOC_ARENA_MAX", "2"),
        ("GLIBC_TUNABLES", "glibc.elision.enable=0:glibc.malloc.trim_threshold=1"),
    ],
)
def test_the_users_own_malloc_settings_are_respected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    setting = keep_freed_memory()
    assert not setting.applied
    assert setting.reason == f"left as the user set it ({name})"


@pytest.mark.usefixtures("fresh_state")
def test_other_platforms_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for platform, reason in (("darwin", "malloc is not glibc's (darwin)"), ("win32", "(win32)")):
        monkeypatch.setattr(sys, "platform", platform)
        monkeypatch.setattr(_allocator, "_setting", None)
        setting = keep_freed_memory()
        assert not setting.applied and setting.reason.endswith(reason)
        assert not _allocator.release_freed_memory()


@pytest.mark.usefixtures("fresh_state")
def test_python_switch_off_before_the_first_call() -> None:
    setting = set_keep_freed_memory(False)
    assert (setting.applied, setting.reason) == (
        False,
        "switched off with set_keep_freed_memory(False)",
    )
    assert keep_freed_memory() is setting
    with pytest.raises(TypeError, match="True or False"):
        set_keep_freed_memory("no")  # type: ignore[arg-type]


def preloaded_allocators() -> list[str]:
    names = (ctypes.util.find_library(name) for name in ("jemalloc", "tcmalloc_minimal"))
    return [name for name in names if name]


@needs_glibc
@pytest.mark.skipif(not preloaded_allocators(), reason="neither jemalloc nor tcmalloc installed")
@pytest.mark.parametrize("library", preloaded_allocators())
def test_a_preloaded_allocator_is_left_alone(library: str) -> None:
    code = (
        "import json; from captum_sscam._core.malloc import keep_freed_memory as k; "
        "s = k(); print(json.dumps([s.applied, s.reason]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**CLEAN_ENVIRONMENT, "LD_PRELOAD": library},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == [
        False,
        f"malloc is not glibc's but another allocator's (LD_PRELOAD={library})",
    ]


# ----------------------------------------------------------- mallopt's answers


class FakeMallopt:
    """Records calls; accepts mmap thresholds up to ``mmap_cap`` and trim if ``trim_ok``."""

    def __init__(self, mmap_cap: int, trim_ok: bool = True) -> None:
        self.mmap_cap, self.trim_ok = mmap_cap, trim_ok
        self.calls: list[tuple[int, int]] = []

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        if parameter == M_MMAP_THRESHOLD:
            return int(value <= self.mmap_cap)
        return int(self.trim_ok)


def test_thresholds_set_to_one_gib() -> None:
    mallopt = FakeMallopt(mmap_cap=2**31 - 1)
    setting = apply_thresholds(mallopt)
    assert setting.applied
    assert (setting.mmap_threshold, setting.trim_threshold) == (2**30, 2**30)
    assert mallopt.calls == [(M_MMAP_THRESHOLD, 2**30), (M_TRIM_THRESHOLD, 2**30)]


def test_an_older_glibcs_cap_on_the_mmap_threshold() -> None:
    # glibc before the cap's removal refuses more than HEAP_MAX_SIZE / 2 = 32 MiB (64-bit)
    setting = apply_thresholds(FakeMallopt(mmap_cap=32 * 2**20))
    assert setting.applied
    assert (setting.mmap_threshold, setting.trim_threshold) == (32 * 2**20, 2**30)
    assert "M_MMAP_THRESHOLD=33554432" in setting.reason


def test_refused_thresholds_change_nothing() -> None:
    setting = apply_thresholds(FakeMallopt(mmap_cap=0))
    assert not setting.applied and "refused every M_MMAP_THRESHOLD" in setting.reason
    mallopt = FakeMallopt(mmap_cap=2**30, trim_ok=False)
    setting = apply_thresholds(mallopt)
    assert not setting.applied and "refused M_TRIM_THRESHOLD" in setting.reason
    assert mallopt.calls[-1] == (M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
