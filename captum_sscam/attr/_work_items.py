"""What a Score-CAM call scores: (example, channel) pairs, and their work items.

A pair is an example and one of its channels that has a mask. A work item is
one sample of a pair: ``(example, channel, sample)``. Its noise is seeded from
the host copies of these numbers; its mask is gathered with the device copy of
its pair index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class WorkItems:
    """Work items ``(example, channel, sample)``, on the host (for seeding) and the device.

    ``pair`` indexes the call's list of (example, channel) pairs; ``example``,
    ``channel`` and ``sample`` are host ``int64`` arrays of the same length.
    """

    pair: Tensor  # (M,) long, on the model's device
    example: np.ndarray
    channel: np.ndarray
    sample: np.ndarray

    def __len__(self) -> int:
        return len(self.example)

    def slice(self, start: int, stop: int) -> WorkItems:
        return WorkItems(
            self.pair[start:stop],
            self.example[start:stop],
            self.channel[start:stop],
            self.sample[start:stop],
        )


@dataclass(frozen=True)
class Pairs:
    """The (example, channel) pairs a call scores, on the device and on the host."""

    example: Tensor  # (P,) long, device
    channel: Tensor  # (P,) long, device
    host_example: np.ndarray
    host_channel: np.ndarray

    @classmethod
    def of(cls, active: Tensor) -> Pairs:
        """The pairs of an ``(N, K)`` bool mask (one host sync: their number)."""
        pairs = active.nonzero()
        host = pairs.cpu().numpy()
        return cls(pairs[:, 0], pairs[:, 1], host[:, 0], host[:, 1])

    def __len__(self) -> int:
        return len(self.host_example)

    def items(self, pair: np.ndarray, sample: np.ndarray) -> WorkItems:
        """Work items for host arrays of pair indices and sample numbers."""
        device_pair = torch.from_numpy(pair).to(self.example.device)
        return WorkItems(device_pair, self.host_example[pair], self.host_channel[pair], sample)
