"""A debugging hook: the score of every work item the Score-CAM family's calls compute.

A call averages each (example, channel) pair's sample scores into one channel score,
so the single samples are gone from its result. Studies of the Monte-Carlo estimator
need them: each channel's score variance, what another allocation of the same samples
would give, the map from a channel's first ``n`` samples (``benchmarks/sscam_cost.py``).
Inside ``with recording_scores() as record:`` every round of scored work items of every
call (in any thread) is added to ``record.rounds`` as a ``ScoredRound``: the items'
example, channel and sample numbers and their scores ``(M, T)``, as the call's
per-pair statistics receive them. That is the target's score (probability or logit)
minus the baseline's score when baselines are given. With
``noise_sampling="antithetic"`` there is one row per pair of samples ``(2j, 2j + 1)``,
their mean score, numbered ``2j``. An adaptive call in channel-softmax mode also
reports its pilot samples, which are numbered first.

Not public API: a private module, documented in docs/performance.md, for benchmarks and
debugging. Recording changes no result. While a block is open, each round's scores are
copied to the host.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from captum_sscam.attr._work_items import WorkItems


@dataclass(frozen=True)
class ScoredRound:
    """One round of scored work items: ``(M,)`` example, channel and sample numbers
    (``int64``) and their ``(M, T)`` scores (``float64``), all on the host."""

    example: Tensor
    channel: Tensor
    sample: Tensor
    scores: Tensor


@dataclass
class ScoreRecord:
    """The rounds scored while a ``recording_scores`` block was open, in order."""

    rounds: list[ScoredRound] = field(default_factory=list)

    def joined(self) -> ScoredRound:
        """All rounds as one ``ScoredRound`` (rows in the order they were scored)."""
        if not self.rounds:
            raise ValueError("no scores were recorded: no Score-CAM call ran in the block.")
        return ScoredRound(
            *(torch.cat([getattr(r, name) for r in self.rounds]) for name in _FIELDS)
        )


_FIELDS = ("example", "channel", "sample", "scores")
_lock = threading.Lock()
_open_records: list[ScoreRecord] = []


@contextmanager
def recording_scores() -> Iterator[ScoreRecord]:
    """Record every scored round of the Score-CAM family's calls made inside the block."""
    record = ScoreRecord()
    with _lock:
        _open_records.append(record)
    try:
        yield record
    finally:
        with _lock:
            _open_records.remove(record)


def report_round(items: WorkItems, scores: Tensor, unit: int) -> None:
    """The engine's call for each scored round: ``scores`` has one row per ``unit`` items
    (``unit = 2``: antithetic pairs). Returns at once while no block is open."""
    if not _open_records:
        return
    scored = ScoredRound(
        torch.from_numpy(items.example[::unit].copy()),
        torch.from_numpy(items.channel[::unit].copy()),
        torch.from_numpy(items.sample[::unit].copy()),
        scores.detach().to("cpu", torch.float64),
    )
    with _lock:
        for record in _open_records:
            record.rounds.append(scored)
