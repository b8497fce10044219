"""Keeping large freed blocks in the process, so that batches of forwards do not page-fault.

glibc's malloc serves every block above ``M_MMAP_THRESHOLD`` (128 KiB at
start, raised on the fly to at most 32 MiB) with an ``mmap`` of its own and
returns it to the kernel with ``munmap`` when it is freed; and it gives the
free top of its heap back once more than ``M_TRIM_THRESHOLD`` lies there. A
Score-CAM call allocates and frees the same large blocks (the masked batch,
each activation of the model) once per batch, so every batch faults all of
them back in, page by page, and the kernel zeroes each page: on a 2-core CPU,
as much system time as the model's own computation. With both thresholds at
1 GiB the freed blocks stay in the heap and the next batch reuses them.

`keep_freed_memory` sets the two thresholds once per process with
``mallopt``. It leaves the allocator alone where that is not glibc's (another
C library, macOS, Windows, or jemalloc / tcmalloc loaded with ``LD_PRELOAD``),
where the user tuned glibc's malloc through its environment variables, and
where the user opted out: ``CAPTUM_SSCAM_MALLOC=default`` in the environment,
or `set_keep_freed_memory` with ``False`` in Python.

The cost is memory held between calls, not a higher peak: after a call the
process keeps the call's peak resident (on Lite0 with batch 32, about 700 MB
above the model, where glibc's defaults keep about 250 MB) until
`release_freed_memory` hands it back (``malloc_trim``, about 0.2 s). One
more cost, seen on glibc 2.36: its ``posix_memalign`` (PyTorch's CPU
allocations) cannot reuse a freed block for a request of exactly its size, so
a loop over one block size grows the heap by several such blocks before it
reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

M_TRIM_THRESHOLD = -1  # the constants of glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30
SMALLEST_KEEP_BYTES = 1 << 20  # an older glibc caps M_MMAP_THRESHOLD (32 MiB on 64-bit)
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
OPT_OUT_VARIABLE = "CAPTUM_SSCAM_MALLOC"
OPT_OUT_VALUES = {"keep": False, "": False, "default": True}
USER_MALLOC_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_ARENA_MAX",
)

Mallopt = Callable[[int, int], int]


@dataclass(frozen=True)
class MallocSetting:
    """What `keep_freed_memory` did.

    Attributes:
        applied: whether this process's malloc now keeps freed blocks.
        reason: what was set, or why nothing was.
        mmap_threshold: the ``M_MMAP_THRESHOLD`` set in bytes (``None`` if none).
        trim_threshold: the ``M_TRIM_THRESHOLD`` set in bytes (``None`` if none).
    """

    applied: bool
    reason: str
    mmap_threshold: int | None = None
    trim_threshold: int | None = None


_lock = threading.Lock()
_setting: MallocSetting | None = None
_switched_off = False


def keep_freed_memory() -> MallocSetting:
    """Make glibc's malloc keep large freed blocks in the process, once per process.

    Cheap after the first call (it returns the first call's result), so the
    methods call it on every ``attribute`` call. Nothing is changed, and the
    result says why, where malloc is not glibc's, where any of
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
    ``MALLOC_MMAP_MAX_``, ``MALLOC_ARENA_MAX`` or a ``glibc.malloc`` tunable in
    ``GLIBC_TUNABLES`` is set, where ``CAPTUM_SSCAM_MALLOC=default``, or after
    ``set_keep_freed_memory(False)``.

    Raises:
        ValueError: ``CAPTUM_SSCAM_MALLOC`` holds something other than
            ``keep`` or ``default``.
    """
    global _setting
    if _setting is not None:
        return _setting
    with _lock:
        if _setting is None:
            _setting = _decide()
        return _setting


def set_keep_freed_memory(enabled: bool) -> MallocSetting:
    """The Python-level switch for `keep_freed_memory` (on unless switched off).

    ``False``: no later call changes the allocator, and if it was changed, the
    thresholds go back to glibc's documented defaults (128 KiB; glibc's raising
    of the mmap threshold on the fly stays off) and the kept memory is handed
    back to the kernel (the heap's free space stays reserved: later requests
    that fit in it are served from it). ``True``: decide again, as on a first
    call.
    """
    global _setting, _switched_off
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}.")
    with _lock:
        _switched_off = not enabled
        if not enabled and _setting is not None and _setting.applied:
            libc = _glibc()
            if libc is not None:
                mallopt = _mallopt(libc)
                mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
                libc.malloc_trim(0)
        _setting = None
    return keep_freed_memory()


def release_freed_memory() -> bool:
    """Hand the free memory of glibc's heap back to the kernel (``malloc_trim(0)``).

    Returns whether glibc released any. ``False`` where malloc is not glibc's.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(ctypes.c_size_t(0)))


def _decide() -> MallocSetting:
    opted_out = _opted_out()
    if opted_out is not None:
        return MallocSetting(False, opted_out)
    user_tuned = _user_malloc_settings()
    if user_tuned:
        return MallocSetting(False, f"left as the user set it ({', '.join(user_tuned)})")
    libc, why_not = _find_glibc()
    if libc is None:
        return MallocSetting(False, why_not)
    return apply_thresholds(_mallopt(libc))


def apply_thresholds(mallopt: Mallopt) -> MallocSetting:
    """Set ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to 1 GiB with ``mallopt``.

    An older glibc refuses an mmap threshold above 32 MiB (64-bit); the largest
    power of two it accepts, down to 1 MiB, is used then. Both thresholds must
    be set: either one alone turns off glibc's raising of the mmap threshold
    and leaves the other at 128 KiB, which faults more than the defaults.
    """
    mmap_threshold = KEEP_BYTES
    while not mallopt(M_MMAP_THRESHOLD, mmap_threshold):
        mmap_threshold //= 2
        if mmap_threshold < SMALLEST_KEEP_BYTES:
            return MallocSetting(False, "glibc's mallopt refused every M_MMAP_THRESHOLD tried")
    if not mallopt(M_TRIM_THRESHOLD, KEEP_BYTES):
        mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        return MallocSetting(False, "glibc's mallopt refused M_TRIM_THRESHOLD")
    return MallocSetting(
        True,
        f"glibc malloc keeps freed blocks: M_MMAP_THRESHOLD={mmap_threshold}, "
        f"M_TRIM_THRESHOLD={KEEP_BYTES}",
        mmap_threshold,
        KEEP_BYTES,
    )


def _opted_out() -> str | None:
    if _switched_off:
        return "switched off with set_keep_freed_memory(False)"
    value = os.environ.get(OPT_OUT_VARIABLE, "").strip().lower()
    if value not in OPT_OUT_VALUES:
        raise ValueError(
            f"{OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]!r} is not understood; set it to "
            "'default' (leave malloc as it is) or 'keep' (keep freed memory, the default)."
        )
    return f"{OPT_OUT_VARIABLE}=default" if OPT_OUT_VALUES[value] else None


def _user_malloc_settings() -> list[str]:
    names = [name for name in USER_MALLOC_VARIABLES if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return names


def _glibc() -> ctypes.CDLL | None:
    """glibc, if it is this process's C library and its malloc is the one in use."""
    return _find_glibc()[0]


def _find_glibc() -> tuple[ctypes.CDLL | None, str]:
    """glibc, or ``None`` and why not."""
    if not sys.platform.startswith("linux"):
        return None, f"malloc is not glibc's ({sys.platform})"
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        version = None
    if not version:
        return None, "the C library is not glibc"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        process = ctypes.CDLL(None)
    except OSError as error:
        return None, f"glibc could not be loaded ({error})"
    if _address(process.malloc) != _address(libc.malloc):
        preload = os.environ.get("LD_PRELOAD", "not set")
        return None, f"malloc is not glibc's but another allocator's (LD_PRELOAD={preload})"
    return libc, version


def _mallopt(libc: ctypes.CDLL) -> Mallopt:
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def _address(function: Any) -> int | None:  # a ctypes function pointer (no public type)
    return ctypes.cast(function, ctypes.c_void_p).value
