"""How many samples each channel gets, and the per-channel statistics of their scores.

A Score-CAM variant estimates, for every (example, channel) pair ``p``, the mean
score ``a_p`` of its samples. ``ChannelStats`` keeps each pair's sample
count, sum and sum of squares, from which the mean and its Monte-Carlo variance
follow. ``Sampling`` says how many samples each pair gets: the same number (the
papers' allocation) or a Neyman allocation on each channel's gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


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


SampleAllocation = Literal["uniform", "adaptive"]
SAMPLE_ALLOCATIONS: tuple[str, ...] = ("uniform", "adaptive")
# Shrinkage of each channel's variance toward its example's pooled variance, as a prior
# worth this many degrees of freedom: a channel with one sample gets the pooled variance,
# a 2-sample estimate (1 degree of freedom) weight 1/5, a 35-sample one 34/38.
PRIOR_DEGREES_OF_FREEDOM = 4.0
# target_error checks the error after these fractions of the budget.
ROUND_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
# The most work items (masked inputs, each one forward's row) one call may plan. A round's
# items are built at once: int64 pair, example, channel and sample numbers on the host, the
# pair index on the device, and their temporaries, measured at 48-64 bytes per item, so
# 2**28 items hold 12-16 GiB before the first masked forward (2**31 would need 96-128 GiB,
# beyond most hosts); and 2**28 forwards take hours even for a small model on a GPU.
MAX_WORK_ITEMS = 2**28
BYTES_PER_WORK_ITEM = 64
# Adaptive allocation spends an example's budget uniformly unless Neyman allocation predicts
# a map variance below this share of uniform's. The prediction assumes equal score variances
# sigma_k^2 over an example's channels; the real ratio, sum_k w_k^2 sigma_k^2 / n_k over the
# same sum with uniform n, exceeds it where the channels that get more samples have the
# smaller sigma_k. On Lite0 the channels' score coefficients of variation have interquartile
# ranges of 0.43-0.60 (performance.md, table 3a: sigma_k^2 varies about 2x between quartiles),
# enough to undo a predicted 10 % saving; measured there, a prediction of 0.94-0.99
# (top_k_channels 64 and 128) gained nothing (spread over seeds 1.01x and 1.53x uniform's),
# one of 0.47-0.60 (all channels) divided the variance by 2.1-2.9.
UNIFORM_ABOVE_PREDICTED_RATIO = 0.9


@dataclass(frozen=True)
class Sampling:
    """How many perturbed samples each (example, channel) pair gets.

    ``samples`` is the budget: at most ``samples`` per pair on average, so at
    most ``samples * K'`` forwards per example. ``"uniform"`` gives every pair
    ``samples`` (the papers); ``"adaptive"`` shares the budget by Neyman
    allocation on each pair's gain (``neyman_counts``), after a pilot of
    ``pilot`` samples per pair where the gains depend on the scores
    (channel-softmax mode; 0 otherwise). ``antithetic`` samples come in pairs
    ``(2j, 2j + 1)`` whose mean is one unit of the budget's statistics.
    ``target_error`` stops early once the map's estimated relative standard error
    is below it.
    """

    samples: int = 1
    allocation: str = "uniform"
    antithetic: bool = False
    target_error: float | None = None
    pilot: int = 0

    @property
    def unit(self) -> int:
        """Samples per statistical unit: an antithetic pair counts once."""
        return 2 if self.antithetic else 1


def check_samples_per_channel(name: str, samples: int) -> None:
    """Refuse a per-channel budget that alone exceeds ``MAX_WORK_ITEMS`` (checked with the
    arguments, before anything is allocated: one channel of one example already needs it)."""
    if samples > MAX_WORK_ITEMS:
        raise ValueError(
            f"{name}={samples:,} asks for {samples:,} masked forwards per channel and "
            f"example, more than the {MAX_WORK_ITEMS:,} (2**28) work items one call can "
            f"plan ({_held(samples)}); use {name} <= {MAX_WORK_ITEMS:,}, in practice far "
            "fewer (the papers use 10-35)."
        )


def check_planned_work(num_pairs: int, samples: int, method_name: str) -> None:
    """Refuse a call whose ``num_pairs x samples`` work items exceed ``MAX_WORK_ITEMS``,
    before their index arrays are built (every sampling plan stays within that budget)."""
    items = num_pairs * samples
    if items > MAX_WORK_ITEMS:
        raise ValueError(
            f"{method_name} would make {items:,} masked forwards in this call ({num_pairs:,} "
            f"(example, channel) pairs x {samples:,} samples each), more than the "
            f"{MAX_WORK_ITEMS:,} (2**28) work items one call can plan ({_held(items)}). "
            "Use fewer samples per channel, fewer channels (top_k_channels=) or fewer "
            "examples per call."
        )


def _held(items: int) -> str:
    gib = items * BYTES_PER_WORK_ITEM / 2**30
    return f"their index arrays alone would take about {gib:,.0f} GiB of host memory"


def pilot_samples(budget: int, antithetic: bool) -> int:
    """Pilot samples per pair where adaptive allocation needs one: about 1/8 of the
    budget, at least 2 (two antithetic pairs: variance needs two units)."""
    pilot = max(2, budget // 8)
    return 2 * max(2, pilot // 2) if antithetic else pilot


def minimum_pilot_budget(antithetic: bool) -> int:
    """The smallest ``nt_samples`` a pilot allows: the pilot plus one unit."""
    return pilot_samples(1, antithetic) + (2 if antithetic else 1)


def shrunk_variances(stats: ChannelStats, pair_example: Tensor, num_examples: int) -> Tensor:
    """Per-pair score variances ``(P, T)`` shrunk toward their example's pooled variance.

    ``(nu_k s_k^2 + nu_0 s_pooled^2) / (nu_k + nu_0)`` with ``nu_k = n_k - 1`` the
    pair's degrees of freedom and ``nu_0`` = ``PRIOR_DEGREES_OF_FREEDOM``: small
    pilots' variance estimates are too noisy to allocate by on their own.
    """
    dof = (stats.counts - 1).clamp(min=0)
    weighted = torch.zeros(num_examples, stats.sums.shape[1], dtype=dof.dtype, device=dof.device)
    weighted.index_add_(0, pair_example, stats.variances * dof)
    total_dof = torch.zeros(num_examples, 1, dtype=dof.dtype, device=dof.device)
    total_dof.index_add_(0, pair_example, dof)
    pooled = weighted / total_dof.clamp(min=1)
    own = stats.variances * dof
    return (own + PRIOR_DEGREES_OF_FREEDOM * pooled[pair_example]) / (
        dof + PRIOR_DEGREES_OF_FREEDOM
    )


def mean_variances(
    stats: ChannelStats, allocation: str, pair_example: Tensor, num_examples: int
) -> Tensor:
    """Monte-Carlo variance of each pair's mean score ``(P, T)``, as the standard error uses it.

    Uniform: the pair's own variance over its count. Adaptive: the variance shrunk toward
    its example's pooled one (``shrunk_variances``), since a pair with one unit has no
    variance of its own.
    """
    if allocation == "uniform":
        return stats.variances_of_means
    return shrunk_variances(stats, pair_example, num_examples) / stats.counts.clamp(min=1)


def neyman_counts(
    weights: Tensor, pair_example: Tensor, units_per_example: Tensor, num_examples: int
) -> Tensor:
    """Units per pair ``(P,)`` minimising ``sum_k weights_k^2 / n_k`` for each example's total.

    Neyman allocation (Neyman, "On the two different aspects of the representative
    method", J. R. Stat. Soc. 97, 1934): ``n_k`` proportional to ``weights_k``. Every
    pair gets at least one unit; the rest of ``units_per_example`` ``(N,)`` is shared
    in proportion to the weights and rounded by largest remainders, so each example
    gets exactly its total (or one unit per pair where the total is smaller). An
    example whose weights are all zero shares uniformly.
    """
    weights = weights.to(torch.float64)
    pairs_per_example = torch.zeros(num_examples, dtype=torch.float64, device=weights.device)
    pairs_per_example.index_add_(0, pair_example, torch.ones_like(weights))
    totals = torch.zeros_like(pairs_per_example).index_add_(0, pair_example, weights)
    uniform = 1.0 / pairs_per_example.clamp(min=1)
    share = torch.where(
        totals[pair_example] > 0, weights / totals[pair_example].clamp(min=1e-300),
        uniform[pair_example],
    )  # fmt: skip
    extra = (units_per_example.to(torch.float64) - pairs_per_example).clamp(min=0)
    ideal = share * extra[pair_example]
    counts = torch.floor(ideal)
    given = torch.zeros_like(extra).index_add_(0, pair_example, counts)
    leftover = torch.round(extra - given)  # (N,): units still to give, fewer than the pairs
    # rank each pair within its example by its remainder, largest first: the key sorts by
    # example (2 * example) and, within one, by decreasing remainder (in [0, 1), so it never
    # crosses into the next example's keys); the first `leftover` pairs of each get one more
    order = torch.argsort(pair_example.to(torch.float64) * 2 - (ideal - counts), stable=True)
    starts = torch.cumsum(pairs_per_example, 0) - pairs_per_example
    rank = torch.arange(len(order), device=order.device) - starts[pair_example[order]]
    bonus = torch.zeros_like(counts)
    bonus[order] = (rank < leftover[pair_example[order]]).to(counts.dtype)
    return (1 + counts + bonus).to(torch.long)


def predicted_variance_ratios(
    weights: Tensor, counts: Tensor, uniform_units: int, pair_example: Tensor, num_examples: int
) -> Tensor:
    """``(N,)``: each example's map variance under ``counts`` over uniform's, predicted.

    ``(sum_k w_k^2 / n_k) / (sum_k w_k^2 / n)`` over the example's pairs, ``n`` =
    ``uniform_units``: the variance ``sum_k w_k^2 sigma^2 / n_k`` with one score variance
    ``sigma^2`` for all its channels. With Neyman's ``n_k`` proportional to ``w_k`` it is
    ``(sum_k w_k)^2 / (K' sum_k w_k^2)`` up to the integer rounding. 1 where every weight
    is 0.
    """
    squares = weights.to(torch.float64).square()
    allocated = torch.zeros(num_examples, dtype=torch.float64, device=weights.device)
    allocated.index_add_(0, pair_example, squares / counts.to(torch.float64))
    uniform = torch.zeros_like(allocated).index_add_(0, pair_example, squares / uniform_units)
    return torch.where(uniform > 0, allocated / uniform.clamp(min=1e-300), 1.0)


def adaptive_counts(
    weights: Tensor, pair_example: Tensor, uniform_units: int, num_examples: int
) -> tuple[Tensor, Tensor]:
    """Units per pair ``(P,)`` of adaptive allocation, and the ``(N,)`` examples it spent
    uniformly.

    Neyman allocation (``neyman_counts``) of ``uniform_units`` per pair on average, except
    for examples where it predicts no clear gain over uniform
    (``predicted_variance_ratios`` above ``UNIFORM_ABOVE_PREDICTED_RATIO``): those get
    ``uniform_units`` per pair, exactly uniform allocation's plan.
    """
    pairs_per_example = torch.bincount(pair_example, minlength=num_examples)
    counts = neyman_counts(weights, pair_example, pairs_per_example * uniform_units, num_examples)
    ratios = predicted_variance_ratios(weights, counts, uniform_units, pair_example, num_examples)
    uniform = ratios > UNIFORM_ABOVE_PREDICTED_RATIO
    return torch.where(uniform[pair_example], uniform_units, counts), uniform
