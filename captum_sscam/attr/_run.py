"""One call's work on one layer tensor: pairs -> samples -> channel weights -> map (and error).

For every (example, channel) pair that has a mask, the engine scores perturbed
masked inputs; their mean is the channel's score ``a_k``. How many samples each
pair gets is the ``Sampling``'s business. The
map is ``L = ReLU(sum_k w_k A_k)`` with ``w = a`` (the probability, sigmoid and logit
modes) or ``w = softmax_k(a)`` (channel-softmax mode; ``options.softmax_weights``).
Its Monte-Carlo standard error,
before the ReLU, follows from the independent channel estimates:

    Var L(x) = sum_k (dL/da_k)(x)^2 Var(a_k),  dL/da_k = A_k  or  w_k (A_k - L).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from captum_sscam._core.caller_warnings import warn
from captum_sscam._core.scorer import BatchScorer, progress_bar
from captum_sscam._core.targets import Targets, check_finite_scores
from captum_sscam.attr._channels import top_k_channels
from captum_sscam.attr._masked_inputs import MaskedInputs
from captum_sscam.attr._masks import varying_channels
from captum_sscam.attr._options import ScoreCAMOptions
from captum_sscam.attr._perturbations import Perturbation
from captum_sscam.attr._recording import report_round
from captum_sscam.attr._sampling import (
    ROUND_FRACTIONS,
    UNIFORM_ABOVE_PREDICTED_RATIO,
    ChannelStats,
    Sampling,
    adaptive_counts,
    check_planned_work,
    mean_variances,
    shrunk_variances,
)
from captum_sscam.attr._work_items import Pairs, WorkItems

_LOG = logging.getLogger("captum_sscam")


@dataclass(frozen=True)
class LayerRun:
    """The scoring of one call: inputs, targets, options, perturbation and sampling."""

    scorer: BatchScorer
    inputs: tuple[Tensor, ...]
    baselines: tuple[Tensor, ...] | None
    targets: Targets
    options: ScoreCAMOptions
    perturbation: Perturbation
    sampling: Sampling
    method_name: str
    return_error: bool = False

    def maps(self, activation: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(N, T, *spatial)`` maps of one layer tensor and (if asked) their standard errors."""
        sizes = [tuple(x.shape[2:]) for x in self.inputs]
        active = varying_channels(activation, sizes)
        if not bool(active.any(dim=1).all()):
            warn(
                "every channel of the layer is constant for some examples, so they have no "
                "mask and their map is all zeros; choose a layer that varies over space.",
            )
        if self.options.top_k_channels is not None:
            active = top_k_channels(
                active, activation, self.options.top_k_channels, self.options.channel_criterion
            )
        pairs = Pairs.of(active)
        check_planned_work(len(pairs), self.sampling.samples, self.method_name)
        work = _PairWork(self, activation, active, pairs, self._baseline_scores())
        with progress_bar(
            len(pairs) * self.sampling.samples, self.options.show_progress, self.method_name
        ) as progress:
            if self.sampling.allocation == "adaptive":
                estimates, variances = work.adaptive(progress)
            else:
                estimates, variances = work.uniform(progress)
        if self.targets.function is not None:  # a callable's NaN would spread into the maps
            check_finite_scores(estimates.means, "some masked inputs")
        maps, errors = work.map_and_error(estimates.means, variances, self.return_error)
        if self.options.relu_attributions:
            maps = torch.relu(maps)
        return maps, errors

    def _baseline_scores(self) -> Tensor | None:
        """``score(b)`` ``(N, T)``, subtracted from every channel's score, or ``None``
        (a callable target scores the baselines too, and must give finite scores)."""
        if self.baselines is None:
            return None
        examples = torch.arange(self.targets.num_examples, device=self.targets.device)
        scores = self.scorer.score_batch(self.baselines, examples, self.targets)
        if self.targets.function is not None:
            check_finite_scores(scores, "the baselines")
        return scores


@dataclass(frozen=True)
class _PairWork:
    run: LayerRun
    activation: Tensor
    active: Tensor
    pairs: Pairs
    baseline_scores: Tensor | None

    @property
    def num_examples(self) -> int:
        return self.activation.shape[0]

    def uniform(self, progress: Any) -> tuple[ChannelStats, Tensor]:
        """Every pair gets the same samples; with a target error, in rounds."""
        sampling = self.run.sampling
        stats = self._empty_stats()
        done = 0
        for fraction in self._rounds():
            # samples per pair after this round: whole units, never fewer than before, and at
            # least two units (a variance needs two) unless the budget is smaller
            upto = _whole_units(sampling.samples * fraction, sampling.unit, minimum=done)
            upto = max(upto, min(2 * sampling.unit, sampling.samples))
            if upto > done:
                count = np.full(len(self.pairs), upto - done, dtype=np.int64)
                self._score_into(stats, self._items(count, first=done), progress)
                done = upto
            variances = self._mean_variances(stats)
            if self._error_reached(stats.means, variances):
                break
        return stats, variances

    def adaptive(self, progress: Any) -> tuple[ChannelStats, Tensor]:
        """Neyman allocation of the budget on each pair's gain, then the rounds.

        An example where Neyman allocation predicts no clear gain
        (``_sampling.adaptive_counts``) is given uniform allocation's plan instead (logged
        at debug level on the ``captum_sscam`` logger).

        Units per pair ``n_k`` proportional to the gain ``||dL/da_k||``: the
        allocation minimising the map's variance ``sum_k ||dL/da_k||^2 sigma_k^2 / n_k``
        when the channels' score variances ``sigma_k^2`` are equal. With ``w = a``
        (every mode but channel-softmax) the gain is ``||A_k||``, known before any
        sample: the allocation
        depends on no score, so every sample counts in its channel's mean and the
        estimate is unbiased. In channel-softmax mode the gains depend on the
        weights, so a pilot estimates them (and ``sigma_k``); its samples decide
        the allocation only and are left out of the means, which keeps them unbiased.
        """
        sampling = self.run.sampling
        main_units = (sampling.samples - sampling.pilot) // sampling.unit
        counts, uniform = adaptive_counts(
            self._allocation_weights(progress), self.pairs.example, main_units, self.num_examples
        )
        if bool(uniform.any()):
            _LOG.debug(
                "adaptive allocation spent the budget uniformly for examples %s: Neyman "
                "allocation predicted a map variance above %.2f of uniform's there",
                uniform.nonzero()[:, 0].tolist(),
                UNIFORM_ABOVE_PREDICTED_RATIO,
            )
        plan = counts.cpu().numpy()  # units per pair
        estimates = self._empty_stats()
        done = np.zeros(len(self.pairs), dtype=np.int64)
        for fraction in self._rounds():
            # each round tops every pair up to its share of the plan (at least one unit), so
            # the last round (fraction 1) completes the plan exactly
            target = np.maximum(1, np.ceil(plan * fraction)).astype(np.int64) * sampling.unit
            if (target > done).any():
                items = self._items(target - done, first=sampling.pilot + done)
                self._score_into(estimates, items, progress)
                done = target
            error_variances = self._mean_variances(estimates)
            if self._error_reached(estimates.means, error_variances):
                break
        return estimates, error_variances

    def _allocation_weights(self, progress: Any) -> Tensor:
        """``(P,)``: the Neyman weights, ``sqrt(sum_t gain_t^2 sigma_t^2)`` per pair."""
        sampling = self.run.sampling
        if not sampling.pilot:
            return self._activation_norms()  # w = a; sigma_k equal in an example
        pilot = self._empty_stats()
        self._score_into(pilot, self._items(np.full(len(self.pairs), sampling.pilot)), progress)
        variances = shrunk_variances(pilot, self.pairs.example, self.num_examples)
        return (self._gains(pilot.means).square() * variances).sum(dim=1).sqrt()

    def map_and_error(
        self, means: Tensor, variances: Tensor, with_error: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Maps before the ReLU ``(N, T, *spatial)`` and (``with_error``) their standard errors."""
        scores = self._dense(means)
        activation = self.activation.to(torch.float64)
        dtype = self.activation.dtype
        if self.run.options.softmax_weights:
            weights = scores.masked_fill(~self.active.unsqueeze(2), float("-inf")).softmax(1)
            weights = weights.nan_to_num(0.0)
            maps = torch.einsum("nkt,nk...->nt...", weights, activation)
            if not with_error:
                return maps.to(dtype), None
            variance = self._dense(variances)
            slopes = weights.view(*weights.shape, *([1] * (activation.dim() - 2))) * (
                activation.unsqueeze(2) - maps.unsqueeze(1)
            )  # (N, K, T, *spatial): dL_t / da_k
            error = torch.einsum("nkt,nkt...->nt...", variance, slopes.square())
        else:
            maps = torch.einsum("nkt,nk...->nt...", scores, activation)
            if not with_error:
                return maps.to(dtype), None
            error = torch.einsum("nkt,nk...->nt...", self._dense(variances), activation.square())
        return maps.to(dtype), error.clamp(min=0).sqrt().to(dtype)

    def _mean_variances(self, stats: ChannelStats) -> Tensor:
        """``(P, T)``: the Monte-Carlo variance of each pair's mean, for the standard error."""
        return mean_variances(
            stats, self.run.sampling.allocation, self.pairs.example, self.num_examples
        )

    def _activation_norms(self) -> Tensor:
        """``(P,)``: ``||A_k||``, the gain of every pair when ``w = a``."""
        norms = self.activation.flatten(2).norm(dim=2)[self.pairs.example, self.pairs.channel]
        return norms.to(torch.float64)

    def _gains(self, means: Tensor) -> Tensor:
        """``(P, T)``: the norm of ``dL_t / da_k`` over the map in channel-softmax mode, from
        the pilot's means (with ``w = a`` it is ``_activation_norms``, needing no pilot)."""
        scores = self._dense(means)
        weights = scores.masked_fill(~self.active.unsqueeze(2), float("-inf")).softmax(1)
        weights = weights.nan_to_num(0.0)
        flat = self.activation.flatten(2).to(torch.float64)  # (N, K, S)
        maps = torch.einsum("nkt,nks->nts", weights, flat)
        gains = weights * (flat.unsqueeze(2) - maps.unsqueeze(1)).norm(dim=3)  # (N, K, T)
        return gains[self.pairs.example, self.pairs.channel]

    def _error_reached(self, means: Tensor, variances: Tensor) -> bool:
        """Whether every map's relative standard error ``||SE|| / ||L||`` is below target."""
        target_error = self.run.sampling.target_error
        if target_error is None:
            return False
        maps, errors = self.map_and_error(means, variances)
        error_norms = cast(Tensor, errors).flatten(2).norm(dim=2)
        ratio = error_norms / maps.flatten(2).norm(dim=2).clamp(min=1e-30)
        return bool((ratio <= target_error).all())  # one host sync per round

    def _rounds(self) -> tuple[float, ...]:
        return (1.0,) if self.run.sampling.target_error is None else ROUND_FRACTIONS

    def _items(self, counts: np.ndarray, first: np.ndarray | int = 0) -> WorkItems:
        """``counts[p]`` items for pair ``p``, numbered from ``first[p]``, pair-major."""
        # pair p's items sit at positions cumsum(counts)[p] - counts[p] (its first) onwards:
        # e.g. counts [2, 3] -> pair [0, 0, 1, 1, 1], firsts [0, 0, 2, 2, 2], offsets
        # [0, 1, 0, 1, 2]; the item's sample number is its pair's first sample plus its offset
        pair = np.repeat(np.arange(len(self.pairs), dtype=np.int64), counts)
        firsts_of_pairs = np.repeat(np.cumsum(counts) - counts, counts)
        offsets = np.arange(len(pair), dtype=np.int64) - firsts_of_pairs
        starts = np.broadcast_to(np.asarray(first, dtype=np.int64), (len(self.pairs),))
        return self.pairs.items(pair, np.repeat(starts, counts) + offsets)

    @cached_property
    def masked_inputs(self) -> MaskedInputs:
        """The pairs' masked-input builder, made once for all sampling rounds."""
        run = self.run
        return MaskedInputs(
            run.inputs,
            run.baselines,
            self.activation[self.pairs.example, self.pairs.channel],
            self.pairs.example,
            run.perturbation,
        )

    def _score_into(self, stats: ChannelStats, items: WorkItems, progress: Any) -> None:
        run = self.run
        masked = self.masked_inputs
        examples = self.pairs.example[items.pair]
        scores = run.scorer.scores(
            len(items),
            examples,
            lambda start, stop: masked.build(items.slice(start, stop)),
            run.targets,
            progress,
        )
        if self.baseline_scores is not None:
            scores = scores - self.baseline_scores[examples]
        pair = items.pair
        if run.sampling.antithetic:
            # Items are pair-major and every pair's count is even (whole units of 2), starting
            # at an even sample: rows 2j and 2j + 1 are one draw with both signs, of one pair.
            # Their mean is one statistical unit (the variance is estimated over units).
            scores = scores.view(-1, 2, scores.shape[1]).mean(dim=1)
            pair = pair[::2]
        report_round(items, scores, run.sampling.unit)  # the debugging hook (attr._recording)
        stats.add(pair, scores)

    def _empty_stats(self) -> ChannelStats:
        targets = self.run.targets
        return ChannelStats.empty(len(self.pairs), targets.num_targets, targets.device)

    def _dense(self, per_pair: Tensor) -> Tensor:
        dense = per_pair.new_zeros(*self.active.shape, per_pair.shape[1])
        dense[self.pairs.example, self.pairs.channel] = per_pair
        return dense


def _whole_units(samples: float, unit: int, minimum: int) -> int:
    return max(minimum, int(samples) // unit * unit)
