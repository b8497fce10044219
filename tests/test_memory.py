"""Memory is bounded by the batch: it does not grow with the noise samples N or channels K.

Two measurements: the largest batch the model ever receives (a forward
pre-hook), and the peak of the CPU memory the engine holds, from PyTorch's
memory profiler (allocations and frees in order; the peak of their running sum).
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from captum_sscam import SmoothedScoreCAM
from tests.tiny_models import SmallCNN

BATCH = 4


def largest_batch_and_peak_bytes(
    channels: int, samples: int, allocation: str = "uniform"
) -> tuple[int, int]:
    model = SmallCNN(channels=channels).eval()
    x = torch.randn(1, 3, 32, 32)
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    method = SmoothedScoreCAM(model, model.layer)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        # channels_last=False: the automatic choice times a few batches in both formats,
        # holding one more batch-sized copy in the calls that are long enough to calibrate
        method.attribute(
            x, target=0, nt_samples=samples, perturbations_per_eval=BATCH, channels_last=False,
            sample_allocation=allocation,
        )  # fmt: skip
    events = sorted(
        (event for event in prof.events() if event.self_cpu_memory_usage != 0),
        key=lambda event: event.time_range.start,
    )
    held, peak = 0, 0
    for event in events:
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return max(sizes[1:]), peak  # sizes[0]: the capture forward


@pytest.mark.parametrize(
    ("channels", "samples", "allocation"),
    [(4, 32, "uniform"), (32, 4, "uniform"), (4, 32, "adaptive"), (32, 4, "adaptive")],
)
def test_peak_memory_does_not_grow_with_samples_or_channels(
    channels: int, samples: int, allocation: str
) -> None:
    small_batch, small_peak = largest_batch_and_peak_bytes(4, 3, allocation)
    large_batch, large_peak = largest_batch_and_peak_bytes(channels, samples, allocation)
    assert small_batch == large_batch == BATCH
    # 8x (or 16x) more masked inputs; one masked batch of 32 x 32 images is 48 KiB.
    # The per-item bookkeeping (K x T scores) is a few hundred bytes; allow 25 %.
    assert small_peak > 0
    assert large_peak < 1.25 * small_peak, (small_peak, large_peak)
