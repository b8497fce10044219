"""How many masked inputs go through the model per forward when the user sets none.

On CPU a fixed batch (measured in ``benchmarks/benchmark_speed.py``: larger
batches no longer pay once the convolutions are big enough to keep every core
busy). On CUDA the batch follows the device's free memory: the capture forward,
which the methods run anyway, is measured, and the batch is the number of such
per-example footprints (plus the masked input's own copies) that fit in half
of the memory the device has free, counting the memory PyTorch's caching
allocator holds unused as free (so a second call does not get a smaller batch
because the first one's memory is cached). For a compiled forward the batch is
rounded down to a power of two, so that small changes of free memory do not
change the shape the forward was compiled for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

DEFAULT_CPU_BATCH = 32
DEFAULT_CUDA_BATCH = 128
CUDA_MEMORY_FRACTION = 0.5
MAX_AUTO_BATCH = 1024
MASKED_INPUT_COPIES = 4  # source gather, mask product, noise, channels-last copy

Result = TypeVar("Result")


def run_measuring_peak(
    device: torch.device, forward: Callable[[], Result]
) -> tuple[Result, int | None]:
    """Run ``forward``; on CUDA also return the peak bytes it allocated (else None).

    Resets the device's peak-memory statistics (``torch.cuda.reset_peak_memory_stats``).
    """
    if device.type != "cuda":
        return forward(), None
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = forward()
    torch.cuda.synchronize(device)
    return result, max(0, torch.cuda.max_memory_allocated(device) - start)


def default_batch_size(
    device: torch.device,
    forward_peak_bytes: int | None = None,
    num_examples: int = 1,
    input_bytes_per_example: int = 0,
    power_of_two: bool = False,
) -> int:
    """Masked inputs per forward when the user gives none.

    Args:
        device: where the inputs (and the model) live.
        forward_peak_bytes: peak memory of a forward of ``num_examples``
            examples on CUDA (from ``run_measuring_peak``), or ``None``.
        num_examples: the examples that forward held.
        input_bytes_per_example: bytes of one example's inputs.
        power_of_two: round the CUDA batch down to a power of two (a compiled
            forward's batch, stable under small changes of free memory).
    """
    if device.type != "cuda":
        return DEFAULT_CPU_BATCH
    if forward_peak_bytes is None:
        return DEFAULT_CUDA_BATCH
    per_item = forward_peak_bytes / num_examples + MASKED_INPUT_COPIES * input_bytes_per_example
    fitting = int(CUDA_MEMORY_FRACTION * free_cuda_bytes(device) // max(per_item, 1.0))
    batch = max(1, min(MAX_AUTO_BATCH, fitting))
    return 1 << (batch.bit_length() - 1) if power_of_two else batch


def free_cuda_bytes(device: torch.device) -> int:
    """The device's free memory plus what PyTorch's caching allocator holds unused."""
    free_bytes, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free_bytes + max(0, cached)
