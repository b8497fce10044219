"""How many samples each channel gets, and the per-channel statistics of their scores.

A Score-CAM variant estimates, for every (example, channel) pair ``p``, the mean
score ``a_p`` of its samples. :class:`ChannelStats` keeps each pair's sample
count, sum and sum of squares, from which the mean and its Monte-Carlo variance
follow. :func:`uniform_items` gives every pair the same number of samples (the
papers' allocation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from captum_sscam.attr._perturb import WorkItems


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


def uniform_items(pairs: Pairs, samples: int) -> WorkItems:
    """``samples`` items per pair, pair-major: ``(p, 0), (p, 1), ..., (p + 1, 0), ...``."""
    pair = np.repeat(np.arange(len(pairs), dtype=np.int64), samples)
    sample = np.tile(np.arange(samples, dtype=np.int64), len(pairs))
    return pairs.items(pair, sample)


@dataclass
class ChannelStats:
    """Per-pair sample count, sum and sum of squares of the scores ``(P, T)``."""

    counts: Tensor  # (P, 1)
    sums: Tensor  # (P, T)
    squares: Tensor  # (P, T)

    @classmethod
    def empty(cls, num_pairs: int, num_targets: int, device: torch.device) -> ChannelStats:
        zeros = torch.zeros(num_pairs, num_targets, device=device, dtype=torch.float64)
        return cls(zeros.new_zeros(num_pairs, 1), zeros, zeros.clone())

    def add(self, pair: Tensor, scores: Tensor) -> None:
        """Add the ``(M, T)`` scores of items belonging to pairs ``pair`` ``(M,)``."""
        scores = scores.to(self.sums.dtype)
        self.counts.index_add_(0, pair, torch.ones_like(scores[:, :1]))
        self.sums.index_add_(0, pair, scores)
        self.squares.index_add_(0, pair, scores.square())

    @property
    def means(self) -> Tensor:
        return self.sums / self.counts.clamp(min=1)

    @property
    def variances(self) -> Tensor:
        """Unbiased per-sample variance of each pair's scores (0 with one sample)."""
        counts = self.counts.clamp(min=1)
        centred = self.squares - self.sums.square() / counts
        return (centred / (counts - 1).clamp(min=1)).clamp(min=0)

    @property
    def variances_of_means(self) -> Tensor:
        """Monte-Carlo variance of each pair's mean score: ``variance / count``."""
        return self.variances / self.counts.clamp(min=1)
