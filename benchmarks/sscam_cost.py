"""What SS-CAM costs on the CPU, how its Monte-Carlo error falls with the budget, and noise levels.

All parts use the bundled pretrained EfficientNet-Lite0 (224 px, 1280 x 7 x 7 head
activation) on real photos, each resized to 224 x 224 as a whole, and explain the
model's top-1 class (``noise-level``: the class of the photo's boxes).

Part ``end-to-end`` (coffee): the exact SS-CAM default call (``nt_samples=35``,
fp32, uniform, seed 0), torchcam 0.5.0's SSCAM at ``--torchcam-samples`` (it scores
all 1280 channels per sample; its cost is linear in N, so N = 35 is extrapolated
from it unless ``--torchcam-samples 35``), and the fast path: ``autocast_dtype="auto"``
with ``sample_allocation="adaptive"`` at ``--fast-budget`` (also in fp32 with
``--rows ... adaptive-fp32``), and the call as it was before this package's CPU
defaults (``--rows old-default``: fp32 contiguous, glibc's own malloc settings, at
``--old-default-samples``, extrapolated to N = 35). Wall, user and system seconds,
minor page faults and forwards per row. Freed memory is kept
(``set_keep_freed_memory(True)``) before torchcam's row too, so that it is not slowed
by page faults; ``--rows torchcam-plain`` measures torchcam as it usually runs, with
glibc's own malloc settings. That row and ``old-default`` each run in a fresh process
with ``CAPTUM_SSCAM_MALLOC=default``: a process whose heap grew while freed memory was
kept does not fault like a fresh one, even after the setting is undone.

Part ``error``: uniform and adaptive allocation at equal budgets N, map spread over
``--seeds`` seeds on each photo: the root mean square deviation of the maps (before
the ReLU) from their mean over seeds (with S - 1 in the denominator), relative to the
norm of the mean uniform map at the largest budget. Both estimators are unbiased, so
spread is their error. Every call scores all channels (``--error-channels k``: the top
k) in bf16 autocast (``autocast_dtype="auto"`` on a CPU with bf16 units) with
``channels_last=True``. The maps at every budget of an allocation come from one call
per seed at its largest budget: with per-item seeding a call's first n samples of each
channel are the samples of the call with the smaller budget (uniform: n each; adaptive:
the engine's allocation at that budget, which never gives a channel more than at a
larger one), checked once per run against direct calls. ``--extrapolate-to 35``
compares the adaptive budgets with uniform N = 35 through the uniform spread at the
largest budget times ``sqrt(N_largest / 35)`` (a uniform map's variance is
``sigma^2 / N``). Also the standard error the allocation's formula gives on the same
samples (what ``return_error=True`` returns), relative to the same reference.

Part ``allocation``: for each photo and noise placement, ``--pool`` samples of every
channel's score (one uniform call) give each channel's score variance; from them the
expected map variance ``sum_k ||A_k||^2 sigma_k^2 / n_k`` of each allocation rule at
each budget, relative to uniform: the engine's adaptive rule, Neyman allocation with
the sampled sigma (a bound), and a 2-sample pilot with shrunk variances; with
``--antithetic`` also a second call with antithetic pairs.

Part ``shared-noise``: can shared noise or a control variate beat allocation? For each
photo and noise placement (``--stdev``), ``--pool`` noise draws shared by every channel
(each channel's score at each draw: common random numbers), and at the same draws the
score of two control masked inputs, whose mask is 0 or the mean of the channels' masks;
the controls' mean comes from ``--control-draws`` independent draws. From these: the map
variance per draw with shared noise against independent noise (the engine's), the
channels' correlation with each control, and the share of uniform N = 35's forwards that
each estimator needs for uniform N = 35's map variance: a per-item control (each item's
draw also scores the control, 2 forwards per item; weight ``mean(s_k - c) + mean(c)``,
the latter from independent draws; unbiased) at its best allocation, the engine's
adaptive allocation, and Neyman allocation with the sampled sigma (both optimistic bounds
where the sampled variances set the allocation).

Part ``noise-level``: SS-CAM at ``nt_samples=8`` for each ``stdevs`` and both noise
placements, against Score-CAM, on photos with boxes (``annotated_photos``):
deletion AUC (lower is better), insertion AUC (higher is better) and the energy
pointing game (higher is better), with paired differences against Score-CAM; every
map with ``top_k_channels=--channels`` and bf16 autocast, seed 0.

Measured through the public options (``sample_allocation``, ``noise_sampling``,
``top_k_channels``, ``return_error=True`` for the standard error, ``autocast_dtype``). The
per-sample scores of each channel, which a call averages away, come from the library's one
debugging hook, ``captum_sscam.attr._recording.recording_scores`` (``error``,
``allocation``). On those recorded scores, offline, the studies use private functions of
``captum_sscam.attr._sampling``: ``adaptive_counts`` (``error``: the engine's adaptive plan
at the smaller budgets, checked against the recorded call's own counts at its budget),
``neyman_counts`` (``allocation``: the rules compared), ``ChannelStats`` and
``mean_variances`` (``error``: the standard error of the prefix maps; the map and standard
error rebuilt from all samples are checked against the call's returned ones, and a direct
call at the smallest budget against its prefix) and ``shrunk_variances`` (``allocation``:
the former pilot rule). ``shared-noise`` scores its own masked inputs (the engine has no
shared noise), with the engine's masks: ``captum_sscam.attr._masks.varying_channels`` and
``upsampled_masks``. The layer's activation comes from Captum's ``LayerActivation``.

Run (hold the shared lock). With one torch thread (``OMP_NUM_THREADS=1``) on 2 shared
cores, ``end-to-end`` took about 11 minutes (torchcam at N = 2 1 minute, exact N = 35
7.6 minutes, the fast path 2 minutes); ``error`` (all channels, 3 photos, 4 seeds,
``--uniform-budgets 4 8 16``) about 90 minutes and ``allocation`` (2 photos,
``--antithetic``) 22 minutes, each beside another heavy job; ``noise-level`` makes about
8,300 bf16 and 1,800 fp32 forwards per photo (a few minutes each); ``shared-noise`` about
(pool + 2) x K' per photo and placement (3-4 minutes each at ``--pool 24``, two threads):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sscam_cost.py end-to-end --rows old-default fast --fast-budget 16
    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sscam_cost.py error --uniform-budgets 4 8 16 --extrapolate-to 35
    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sscam_cost.py allocation --photos coffee chelsea --antithetic
    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sscam_cost.py noise-level
    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sscam_cost.py shared-noise --pool 24
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from _common import (
    GLIBC_DEFAULTS,
    Usage,
    auto_dtype,
    counted_forwards,
    in_fresh_process,
    layer_activation,
    lite0,
    lite0_input,
    machine_header,
    measured,
    photos,
    seeded,
    top1,
)
from torch import Tensor, nn

from captum_sscam import ScoreCAM, SmoothedScoreCAM, set_keep_freed_memory
from captum_sscam.apps.annotated_photos import annotated_photos, choose_target
from captum_sscam.apps.models import imagenet_class_names
from captum_sscam.attr._masks import upsampled_masks, varying_channels
from captum_sscam.attr._recording import recording_scores
from captum_sscam.attr._sampling import (
    ChannelStats,
    adaptive_counts,
    mean_variances,
    neyman_counts,
    shrunk_variances,
)
from captum_sscam.metrics import deletion_auc, energy_pointing_game, insertion_auc

SIZE = 224


@dataclass(frozen=True)
class Cost:
    """What one row cost: its ``Usage`` and the images through the model."""

    usage: Usage
    forwards: int

    def __str__(self) -> str:
        return f"{self.usage}, {self.forwards:,} forwards"


def measured_cost(model: nn.Module, run: Callable[[], Any]) -> Cost:
    with counted_forwards(model) as forwards:
        usage, _ = measured(run)
    return Cost(usage, forwards.images)


# --------------------------------------------------------------- end to end


ROW_NAMES = ("torchcam", "torchcam-plain", "old-default", "exact", "adaptive-fp32", "fast")
# Rows of calls as they run without this package's memory setting: each in a process of its
# own with glibc's own malloc settings from its start (see ``_common.in_fresh_process``).
PLAIN_ROWS = ("torchcam-plain", "old-default")


def in_plain_process(args: argparse.Namespace, row: str) -> Cost:
    """``row`` measured in a fresh process with glibc's own malloc settings."""
    arguments = [__file__, "end-to-end", "--rows", row, "--child"]
    arguments += ["--torchcam-samples", str(args.torchcam_samples)]
    arguments += ["--old-default-samples", str(args.old_default_samples)]
    measured_row = in_fresh_process(arguments, GLIBC_DEFAULTS)
    return Cost(Usage(**measured_row["usage"]), measured_row["forwards"])


def end_to_end(args: argparse.Namespace, model: nn.Module, layer: nn.Module) -> None:
    from torchcam.methods import SSCAM

    x = lite0_input(photos()["coffee"], SIZE)
    target = top1(model, x)
    rows: list[tuple[str, Cost]] = []

    def torchcam() -> Tensor:
        shape = tuple(x.shape[1:])
        with SSCAM(
            model, layer, batch_size=32, num_samples=args.torchcam_samples, input_shape=shape
        ) as cam:
            with torch.no_grad():
                scores = model(x)
            return cam(target, scores)[0]

    old = args.old_default_samples
    budget = args.fast_budget
    torchcam_label = f"torchcam 0.5.0 SSCAM N={args.torchcam_samples} (freed memory kept)"
    plain_label = f"torchcam 0.5.0 SSCAM N={args.torchcam_samples} (glibc's own malloc settings)"
    old_label = f"old default call N={old} (fp32 contiguous, glibc's own malloc settings)"
    runs: dict[str, tuple[str, Callable[[], Any]]] = {
        "torchcam": (torchcam_label, torchcam),
        "torchcam-plain": (plain_label, torchcam),
        "old-default": (
            old_label,
            lambda: SmoothedScoreCAM(model, layer).attribute(
                x, target=target, nt_samples=old, channels_last=False, generator=seeded(0)
            ),
        ),
        "exact": (
            "exact SS-CAM N=35, default call (fp32, uniform)",
            lambda: SmoothedScoreCAM(model, layer).attribute(
                x, target=target, nt_samples=35, generator=seeded(0)
            ),
        ),
        "adaptive-fp32": (
            f'adaptive N={budget}, fp32 (sample_allocation="adaptive")',
            lambda: SmoothedScoreCAM(model, layer).attribute(
                x,
                target=target,
                nt_samples=budget,
                sample_allocation="adaptive",
                generator=seeded(0),
            ),
        ),
        "fast": (
            f'fast path: autocast_dtype="auto", adaptive N={budget}',
            lambda: SmoothedScoreCAM(model, layer).attribute(
                x,
                target=target,
                nt_samples=budget,
                sample_allocation="adaptive",
                autocast_dtype="auto",
                generator=seeded(0),
            ),
        ),
    }
    if args.child:  # one row, in a process with glibc's own malloc settings
        cost = measured_cost(model, runs[args.rows[0]][1])
        print(json.dumps({"usage": dataclasses.asdict(cost.usage), "forwards": cost.forwards}))
        return
    set_keep_freed_memory(True)  # for torchcam too: what this package's calls do
    for row in ROW_NAMES:
        if row in args.rows:
            label, run = runs[row]
            cost = in_plain_process(args, row) if row in PLAIN_ROWS else measured_cost(model, run)
            rows.append((label, cost))
            print(f"  {label}: {cost}", flush=True)
    print(f"\nSS-CAM end to end, EfficientNet-Lite0 (pretrained), coffee {SIZE} px, class {target}")
    print("| row | wall s | user s | system s | minor faults | forwards |")
    print("|---|---|---|---|---|---|")
    for label, cost in rows:
        usage = cost.usage
        print(
            f"| {label} | {usage.wall:.1f} | {usage.user:.1f} | {usage.system:.2f} "
            f"| {usage.faults:,} | {cost.forwards:,} |"
        )
    wall = {label: cost.usage.wall for label, cost in rows}
    if torchcam_label in wall and args.torchcam_samples != 35:
        per_sample = wall[torchcam_label] / args.torchcam_samples
        wall["torchcam SSCAM N=35 (extrapolated)"] = 35 * per_sample
        print(
            f"| torchcam 0.5.0 SSCAM N=35, extrapolated: 35 x {per_sample:.1f} s per sample "
            f"| {35 * per_sample:.0f} | | | | {35 * 1280 + 1:,} |"
        )
    if old_label in wall:
        wall["old default N=35 (extrapolated)"] = 35 * wall[old_label] / old
        print(
            f"| old default call N=35, extrapolated: 35 / {old} x {wall[old_label]:.1f} s "
            f"| {wall['old default N=35 (extrapolated)']:.0f} | | | | |"
        )
    fast = wall.get(f'fast path: autocast_dtype="auto", adaptive N={budget}')
    if plain_label in wall and args.torchcam_samples != 35:
        wall["torchcam plain N=35 (extrapolated)"] = 35 * wall[plain_label] / args.torchcam_samples
        print(
            f"| torchcam 0.5.0 SSCAM N=35, glibc's settings, extrapolated: 35 / "
            f"{args.torchcam_samples} x {wall[plain_label]:.1f} s "
            f"| {wall['torchcam plain N=35 (extrapolated)']:.0f} | | | | |"
        )
        if fast:
            print(
                f"fast path vs torchcam SSCAM N=35 with glibc's settings: "
                f"{wall['torchcam plain N=35 (extrapolated)'] / fast:.1f}x (goal >= 25x)"
            )
    if fast and "old default N=35 (extrapolated)" in wall:
        print(
            f"fast path vs the old default N=35 call: "
            f"{wall['old default N=35 (extrapolated)'] / fast:.1f}x (goal >= 10x)"
        )
    exact = wall.get("exact SS-CAM N=35, default call (fp32, uniform)")
    torchcam_35 = wall.get("torchcam SSCAM N=35 (extrapolated)", wall.get(torchcam_label))
    if fast and exact:
        print(f"fast path vs exact N=35 default call: {exact / fast:.1f}x (goal >= 10x)")
    if fast and torchcam_35 and args.torchcam_samples in (2, 35):
        print(f"fast path vs torchcam SSCAM N=35: {torchcam_35 / fast:.1f}x (goal >= 25x)")
    if exact and torchcam_35:
        print(f"exact N=35 default call vs torchcam SSCAM N=35: {torchcam_35 / exact:.1f}x")


# -------------------------------------------------------------------- error


@dataclass(frozen=True)
class RecordedCall:
    """One SS-CAM call on one example and one target, with every channel's sample scores.

    ``scores[k, j]`` is channel ``channels[k]``'s ``j``-th unit in sample order (an
    antithetic pair counts once; NaN past ``counts[k]``), recorded by the debugging hook;
    ``activation`` holds those channels' maps ``A_k`` (Captum's ``LayerActivation``), and
    ``saliency`` / ``error`` are what the call returned (``return_error=True``).
    """

    channels: Tensor  # (K',)
    scores: Tensor  # (K', units) float64
    counts: Tensor  # (K',)
    activation: Tensor  # (K', h, w)
    saliency: Tensor  # (h, w)
    error: Tensor  # (h, w)

    @property
    def norms(self) -> Tensor:
        """``||A_k||``, the engine's adaptive weights (probability mode), in float64."""
        return self.activation.flatten(1).norm(dim=1).to(torch.float64)


def recorded_call(
    model: nn.Module, layer: nn.Module, x: Tensor, target: int, **options: Any
) -> RecordedCall:
    """``SmoothedScoreCAM(model, layer).attribute(x, target=target, **options)``, recorded."""
    with recording_scores() as record:
        saliency, error = SmoothedScoreCAM(model, layer).attribute(
            x, target=target, return_error=True, **options
        )
    scored = record.joined()
    if bool((scored.example != 0).any()) or scored.scores.shape[1] != 1:
        raise RuntimeError("a recorded call explains one example and one target.")
    channels, pair = scored.channel.unique(return_inverse=True)
    order = torch.argsort(pair * (int(scored.sample.max()) + 1) + scored.sample)
    pair, values = pair[order], scored.scores[order, 0]
    counts = torch.bincount(pair, minlength=len(channels))
    within = torch.arange(len(pair)) - (torch.cumsum(counts, 0) - counts)[pair]
    scores = torch.full((len(channels), int(counts.max())), math.nan, dtype=torch.float64)
    scores[pair, within] = values
    activation = layer_activation(model, layer, x)[0, channels]
    return RecordedCall(channels, scores, counts, activation, saliency[0, 0], error[0, 0])


def budget_plans(call: RecordedCall, allocation: str, budgets: list[int]) -> dict[int, Tensor]:
    """Units per channel at each budget: ``n`` each (uniform) or the engine's adaptive plan,
    Neyman allocation on ``||A_k||`` or uniform where that predicts no clear gain
    (``adaptive_counts``; no pilot in probability mode), which must give the recorded call's
    own counts at its budget."""
    pairs = len(call.channels)
    if allocation == "uniform":
        plans = {n: torch.full((pairs,), n, dtype=torch.long) for n in budgets}
    else:
        example = torch.zeros(pairs, dtype=torch.long)
        plans = {n: adaptive_counts(call.norms, example, n, 1)[0] for n in budgets}
    if not torch.equal(plans[max(budgets)], call.counts):
        raise RuntimeError(
            f"the recorded {allocation} call's samples per channel are not this study's plan at "
            "its budget: the engine's allocation changed, so the smaller budgets' plans are wrong."
        )
    return plans


def prefix_map(call: RecordedCall, plan: Tensor, allocation: str) -> tuple[Tensor, Tensor]:
    """Map and standard error (before the ReLU) from each channel's first ``plan[k]`` units.

    ``L = sum_k a_k A_k`` and ``SE^2 = sum_k Var(a_k) A_k^2`` (probability mode, the
    formula of ``captum_sscam.attr._run``), with ``Var(a_k)`` as the engine estimates it
    (``mean_variances``). With per-item seeding, those first samples are the samples a call
    with the smaller budget draws (``check_prefix``).
    """
    if bool((plan > call.counts).any()):
        raise RuntimeError("the recorded call has too few samples for this budget.")
    pair, unit = (torch.arange(call.scores.shape[1]) < plan[:, None]).nonzero(as_tuple=True)
    stats = ChannelStats.empty(len(plan), 1, torch.device("cpu"))
    stats.add(pair, call.scores[pair, unit][:, None])
    variances = mean_variances(stats, allocation, torch.zeros_like(plan), 1)[:, 0]
    activation = call.activation.to(torch.float64)
    maps = torch.einsum("k,k...->...", stats.means[:, 0], activation)
    errors = torch.einsum("k,k...->...", variances, activation.square()).clamp(min=0).sqrt()
    return maps.float(), errors.float()


def check_rebuilt(call: RecordedCall, allocation: str) -> None:
    """The map and standard error rebuilt from all recorded samples are the call's own."""
    saliency, error = prefix_map(call, call.counts, allocation)
    for name, rebuilt, returned in (("map", saliency, call.saliency), ("error", error, call.error)):
        difference = float((rebuilt - returned).abs().max() / returned.abs().max())
        if difference > 1e-4:
            raise RuntimeError(
                f"the {name} rebuilt from the recorded scores differs from the call's by "
                f"{difference:.1e} of its maximum: the recording or the formula changed."
            )


def error_study(args: argparse.Namespace, model: nn.Module, layer: nn.Module) -> None:
    named = photos()
    budgets = {"uniform": args.uniform_budgets, "adaptive": args.adaptive_budgets}
    largest = max(args.uniform_budgets)
    common = {
        "top_k_channels": args.error_channels,
        "autocast_dtype": "auto",
        "channels_last": True,
        "relu_attributions": False,
        "show_progress": False,
        "noise_on": args.noise_on,
    }
    table: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for photo_index, name in enumerate(args.photos):
        x = lite0_input(named[name], SIZE)
        target = top1(model, x)
        maps: dict[str, dict[int, list[Tensor]]] = {"uniform": {}, "adaptive": {}}
        errors: dict[str, dict[int, list[Tensor]]] = {"uniform": {}, "adaptive": {}}
        forwards: dict[str, dict[int, int]] = {"uniform": {}, "adaptive": {}}
        for seed in range(args.seeds):
            for allocation, allocation_budgets in budgets.items():
                call = recorded_call(
                    model,
                    layer,
                    x,
                    target,
                    nt_samples=max(allocation_budgets),
                    sample_allocation=allocation,
                    generator=seeded(seed),
                    **common,
                )
                check_rebuilt(call, allocation)
                plans = budget_plans(call, allocation, allocation_budgets)
                for n, plan in plans.items():
                    saliency, error = prefix_map(call, plan, allocation)
                    maps[allocation].setdefault(n, []).append(saliency)
                    errors[allocation].setdefault(n, []).append(error)
                    forwards[allocation][n] = int(plan.sum())
                if photo_index == 0 and seed == 0:
                    n = min(allocation_budgets)
                    check_prefix(model, layer, x, target, common, allocation, n, plans[n], call)
            print(f"  {name} (class {target}), seed {seed} done", flush=True)
        reference = torch.stack(maps["uniform"][largest]).mean(0).norm()
        table[name] = {
            allocation: {
                n: {
                    "spread": spread(maps[allocation][n]) / float(reference),
                    "error": statistics.mean(float(e.norm()) for e in errors[allocation][n])
                    / float(reference),
                    "forwards": forwards[allocation][n],
                }
                for n in maps[allocation]
            }
            for allocation in maps
        }
        print(f"  {name}: {table[name]}", flush=True)  # each photo's numbers as they come
    print_error_table(args, table)


def check_prefix(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    target: int,
    common: dict[str, Any],
    allocation: str,
    n: int,
    plan: Tensor,
    call: RecordedCall,
) -> None:
    """A direct seed-0 call at budget ``n``: its samples per channel are ``plan`` and its map
    and standard error are the recorded seed-0 call's prefix."""
    direct = recorded_call(
        model, layer, x, target, nt_samples=n, sample_allocation=allocation, generator=seeded(0),
        **common,
    )  # fmt: skip
    if not torch.equal(direct.counts, plan):
        raise RuntimeError(f"a direct {allocation} call at N={n} does not follow the plan.")
    rebuilt_map, rebuilt_error = prefix_map(call, plan, allocation)
    for name, returned, rebuilt in (
        ("map", direct.saliency, rebuilt_map),
        ("error", direct.error, rebuilt_error),
    ):
        difference = float((returned - rebuilt).abs().max() / rebuilt.abs().max())
        print(
            f"  check: {allocation} nt_samples={n} call vs the first samples of the large call: "
            f"{name}'s max difference {difference:.1e} of its maximum"
        )
        if difference > 1e-4:
            raise RuntimeError("prefix maps differ from direct calls: seeding is not per item.")


def spread(maps: list[Tensor]) -> float:
    """Root mean square deviation from the mean over runs (S - 1 in the denominator)."""
    stacked = torch.stack([m.flatten().double() for m in maps])
    deviations = stacked - stacked.mean(0)
    return math.sqrt(float(deviations.square().sum()) / (len(maps) - 1))


def print_error_table(
    args: argparse.Namespace, table: dict[str, dict[str, dict[int, dict[str, float]]]]
) -> None:
    largest = max(args.uniform_budgets)
    print(
        f"\nSpread of SS-CAM maps over {args.seeds} seeds, relative to the norm of the mean "
        f"uniform N={largest} map; EfficientNet-Lite0, top_k_channels={args.error_channels}, "
        f"noise on the {args.noise_on}, bf16 "
        "autocast, channels-last, before the ReLU. SE: mean norm of the returned standard error "
        "(same reference)."
    )
    print(
        "| photo | N | forwards uniform / adaptive | spread uniform | spread adaptive "
        "| adaptive / uniform | SE uniform | SE adaptive |"
    )
    print("|---|---|---|---|---|---|---|---|")
    budgets = sorted(set(args.uniform_budgets) | set(args.adaptive_budgets))
    ratios: dict[int, list[float]] = {}
    for name, rows in table.items():
        for n in budgets:
            uniform, adaptive = rows["uniform"].get(n), rows["adaptive"].get(n)
            ratio = adaptive["spread"] / uniform["spread"] if uniform and adaptive else None
            if ratio is not None:
                ratios.setdefault(n, []).append(ratio)
            print(
                f"| {name} | {n} | {cell(uniform, 'forwards', '.0f')} / "
                f"{cell(adaptive, 'forwards', '.0f')} | {cell(uniform, 'spread')} "
                f"| {cell(adaptive, 'spread')} | {'-' if ratio is None else f'{ratio:.2f}'} "
                f"| {cell(uniform, 'error')} | {cell(adaptive, 'error')} |"
            )
    print("\nadaptive / uniform spread at equal budget, geometric mean over photos (goal <= 0.75):")
    for n, values in ratios.items():
        mean = math.exp(statistics.mean(math.log(v) for v in values))
        print(f"  N={n}: {mean:.2f} (per photo {', '.join(f'{v:.2f}' for v in values)})")
    goal = args.extrapolate_to or largest
    scale = math.sqrt(largest / goal)  # uniform variance is sigma^2 / N exactly
    label = f"N={goal}" + (f" (extrapolated from N={largest})" if goal != largest else "")
    for name, rows in table.items():
        target = rows["uniform"][largest]["spread"] * scale
        enough = [n for n in sorted(rows["adaptive"]) if rows["adaptive"][n]["spread"] <= target]
        found = (
            f"N={enough[0]} ({100 * enough[0] / goal:.0f} % of the forwards)"
            if enough
            else (f"none up to N={max(rows['adaptive'])}")
        )
        print(f"  {name}: smallest adaptive budget with spread <= uniform {label}: {found}")


def cell(row: dict[str, float] | None, key: str, spec: str = ".4f") -> str:
    return "-" if row is None else format(row[key], spec)


# -------------------------------------------------------------- allocation


def sampled_scores(
    model: nn.Module, layer: nn.Module, x: Tensor, target: int, samples: int, **options: Any
) -> tuple[Tensor, Tensor]:
    """``(K', units)`` recorded scores of a uniform call with ``samples`` per channel (an
    antithetic pair is one unit) and the channels' activation norms ``(K',)``."""
    call = recorded_call(
        model, layer, x, target, nt_samples=samples, generator=seeded(123), **options
    )
    return call.scores, call.norms


def map_variance(norms: Tensor, variances: Tensor, counts: Tensor) -> float:
    """``sum_k ||A_k||^2 sigma_k^2 / n_k``: the map's Monte-Carlo variance."""
    return float((norms.square() * variances / counts).sum())


def neyman(weights: Tensor, units: int) -> Tensor:
    """The engine's allocation of ``units`` over one example's pairs, by ``weights``."""
    example = torch.zeros(len(weights), dtype=torch.long)
    return neyman_counts(weights, example, torch.tensor([units]), 1).double()


def piloted_variance(
    scores: Tensor, norms: Tensor, budget: int, draws: int, rng: torch.Generator
) -> float:
    """Mean map variance (relative to uniform) of a 2-sample pilot drawn from ``scores``,
    shrunk variances and Neyman allocation of the rest, the pilot left out."""
    pairs = len(norms)
    variances = scores.var(dim=1)
    uniform = map_variance(norms, variances, torch.full((pairs,), float(budget)))
    ratios = []
    for _ in range(draws):
        chosen = torch.rand(scores.shape, generator=rng).argsort(dim=1)[:, :2]
        stats = ChannelStats.empty(pairs, 1, torch.device("cpu"))
        stats.add(torch.arange(pairs).repeat_interleave(2), scores.gather(1, chosen).reshape(-1, 1))
        shrunk = shrunk_variances(stats, torch.zeros(pairs, dtype=torch.long), 1)[:, 0]
        counts = neyman(norms * shrunk.sqrt(), max(budget - 2, 1) * pairs)
        ratios.append(map_variance(norms, variances, counts) / uniform)
    return statistics.mean(ratios)


def allocation_study(args: argparse.Namespace, model: nn.Module, layer: nn.Module) -> None:
    """Expected map variance of each allocation rule, from per-channel score variances.

    For any allocation ``n_k`` decided without the samples it averages, the map's
    Monte-Carlo variance (before the ReLU, probability mode) is
    ``sum_k ||A_k||^2 sigma_k^2 / n_k``; ``sigma_k^2`` is estimated from ``--pool``
    samples of every channel. Rules, at budgets N (``N K'`` samples): uniform; the
    engine's adaptive (``n_k`` proportional to ``||A_k||``); Neyman allocation on
    ``||A_k|| sigma_k`` with the pooled sample's sigma (a bound no pilot reaches); and a
    2-sample pilot with shrunk variances then Neyman on the rest (the pilot left out of
    the means), averaged over ``--pilot-draws`` random pilots drawn from the pool.
    """
    named = photos()
    common = {
        "autocast_dtype": "auto",
        "channels_last": True,
        "show_progress": False,
        "stdevs": args.stdev,
    }
    draws = torch.Generator().manual_seed(0)
    print(
        f"\nExpected map variance relative to uniform allocation at the same budget "
        f"(sigma_k from {args.pool} samples per channel, all channels, bf16 autocast, "
        f"stdevs {args.stdev:g}); lower is better."
    )
    print(
        "| photo | noise on | K' | score CV median (IQR) | channels with 50 % / 90 % of "
        "the variance | N | adaptive | Neyman, sampled sigma (bound) | pilot 2 + shrunk "
        "sigma | antithetic / iid, equal forwards |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.photos:
        x = lite0_input(named[name], SIZE)
        target = top1(model, x)
        for noise_on in ("mask", "input"):
            scores, norms = sampled_scores(
                model, layer, x, target, args.pool, noise_on=noise_on, **common
            )
            pairs = len(norms)
            variances = scores.var(dim=1)
            antithetic = "-"
            if args.antithetic:
                pair_means, _ = sampled_scores(
                    model, layer, x, target, args.pool, noise_on=noise_on,
                    noise_sampling="antithetic", **common,
                )  # fmt: skip
                ratio = (norms.square() * pair_means.var(dim=1)).sum() / (
                    norms.square() * variances / 2
                ).sum()
                antithetic = f"{float(ratio):.2f}"
            cv = (variances.sqrt() / scores.mean(dim=1).abs().clamp(min=1e-30)).quantile(
                torch.tensor([0.25, 0.5, 0.75], dtype=variances.dtype)
            )
            contributions = (norms.square() * variances).sort(descending=True).values
            shares = contributions.cumsum(0) / contributions.sum()
            half, most = (int(torch.searchsorted(shares, q)) + 1 for q in (0.5, 0.9))
            for n in args.budgets:
                uniform = map_variance(norms, variances, torch.full((pairs,), float(n)))
                adaptive = map_variance(norms, variances, neyman(norms, n * pairs)) / uniform
                bound = neyman(norms * variances.sqrt(), n * pairs)
                bound_ratio = map_variance(norms, variances, bound) / uniform
                piloted = piloted_variance(scores, norms, n, args.pilot_draws, draws)
                print(
                    f"| {name} | {noise_on} | {pairs} | {float(cv[1]):.2f} ({float(cv[0]):.2f}"
                    f"-{float(cv[2]):.2f}) | {half} / {most} | {n} | {adaptive:.2f} "
                    f"| {bound_ratio:.2f} | {piloted:.2f} | {antithetic} |",
                    flush=True,
                )


# ------------------------------------------------------------- shared noise


CONTROL_MASKS = ("zero", "mean")


def shared_noise(args: argparse.Namespace, model: nn.Module, layer: nn.Module) -> None:
    """Shared noise and per-item control variates against independent noise (see the top)."""
    named = photos()
    dtype = auto_dtype("cpu")
    model = model.to(memory_format=torch.channels_last)
    print(
        f"\nShared noise and control variates, stdevs {args.stdev:g}, {args.pool} shared draws, "
        f"controls' mean from {args.control_draws} draws, all channels, {dtype or 'fp32'}. "
        "Shares: forwards needed for uniform N=35's map variance, over uniform N=35's."
    )
    print(
        "| photo | noise on | K' | shared / independent variance | control | correlation "
        "with the control, median (IQR) | per-item control | adaptive | Neyman, sampled sigma |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.photos:
        x = lite0_input(named[name], SIZE)
        target = top1(model, x)
        activation = layer_activation(model, layer, x)
        active = varying_channels(activation)[0]
        maps = activation[0, active].double().flatten(1)  # (K', S)
        masks = upsampled_masks(activation[0, active].float(), x.shape[2:])
        controls = torch.stack([torch.zeros_like(masks[0]), masks.mean(0)])
        for noise_on in ("mask", "input"):
            score = masked_scorer(model, x, target, noise_on, args.stdev, dtype)
            draws = range(args.pool)
            scores = torch.stack([score(masks, seed) for seed in draws], 1)  # (K', D)
            paired = torch.stack([score(controls, seed) for seed in draws], 1)  # (2, D)
            alone = torch.stack(
                [score(controls, 10**6 + seed) for seed in range(args.control_draws)], 1
            )
            independent = float((maps.square().sum(1) * scores.var(1)).sum())
            shared = float((maps.T @ scores).var(1).sum())
            for index, control in enumerate(CONTROL_MASKS):
                shares = control_shares(maps, scores, paired[index], alone[index])
                correlation = torch.corrcoef(torch.cat([paired[index : index + 1], scores]))[
                    0, 1:
                ].quantile(torch.tensor([0.25, 0.5, 0.75], dtype=scores.dtype))
                print(
                    f"| {name} | {noise_on} | {len(maps)} | {shared / independent:.1f} "
                    f"| mask {control} | {float(correlation[1]):.2f} ({float(correlation[0]):.2f}"
                    f"-{float(correlation[2]):.2f}) | {shares['control']:.2f} "
                    f"| {shares['adaptive']:.2f} | {shares['neyman']:.2f} |",
                    flush=True,
                )


def masked_scorer(
    model: nn.Module, x: Tensor, target: int, noise_on: str, stdev: float, dtype: Any
) -> Callable[[Tensor, int], Tensor]:
    """``score(masks, seed)``: the target's probability for every mask, all under one noise
    draw (seeded by ``seed``): ``X * (H + e)`` (mask) or ``X * H + e`` (input)."""

    def score(masks: Tensor, seed: int) -> Tensor:
        shape = (1, *x.shape[2:]) if noise_on == "mask" else tuple(x.shape[1:])
        noise = torch.randn(shape, generator=seeded(seed)) * stdev
        out = []
        for start in range(0, len(masks), 64):
            mask = masks[start : start + 64].unsqueeze(1)
            masked = x * (mask + noise) if noise_on == "mask" else x * mask + noise
            masked = masked.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16,
                                                 enabled=dtype is not None):  # fmt: skip
                out.append(model(masked).float().softmax(1)[:, target])
        return torch.cat(out).double()

    return score


def control_shares(maps: Tensor, scores: Tensor, paired: Tensor, alone: Tensor) -> dict[str, float]:
    """Forwards for uniform N = 35's map variance, as a share of its ``35 K'``.

    Uniform N = 35: ``V = sum_k ||A_k||^2 sigma_k^2 / 35``. Per-item control (2 forwards
    per item, ``M`` independent control draws): ``V = sum_k a_k / n_k + b / M`` with
    ``a_k = ||A_k||^2 Var(s_k - c)`` and ``b = Var(c) ||sum_k A_k||^2``; at its best
    allocation ``V = (sum_k sqrt(2 a_k) + sqrt(b))^2 / F`` for ``F`` forwards. Adaptive
    (``n_k`` proportional to ``||A_k||``) and Neyman (to ``||A_k|| sigma_k``) likewise.
    """
    norms = maps.norm(dim=1)
    variances = scores.var(1)
    independent = float((norms.square() * variances).sum()) * len(norms)
    residual = norms.square() * (scores - paired).var(1)
    coherent = float(alone.var()) * float(maps.sum(0).square().sum())
    return {
        "control": (float((2 * residual).sqrt().sum()) + coherent**0.5) ** 2 / independent,
        "adaptive": float(norms.sum() * (norms * variances).sum()) / independent,
        "neyman": float((norms * variances.sqrt()).sum()) ** 2 / independent,
    }


# -------------------------------------------------------------- noise level


def noise_level(args: argparse.Namespace, model: nn.Module, layer: nn.Module) -> None:
    names = imagenet_class_names()
    photos = {photo.name: (photo, objects) for photo, objects in annotated_photos()}
    score_cam, sscam = ScoreCAM(model, layer), SmoothedScoreCAM(model, layer)
    common = {"top_k_channels": args.channels, "autocast_dtype": "auto"}
    configurations: dict[str, Callable[[Tensor, int], Tensor]] = {
        "Score-CAM": lambda x, target: score_cam.attribute(x, target=target, **common)
    }
    for noise_on in ("mask", "input"):
        for stdev in args.stdevs:
            configurations[f"SS-CAM {noise_on} sigma={stdev:g}"] = (
                lambda x, target, noise_on=noise_on, stdev=stdev: sscam.attribute(
                    x,
                    target=target,
                    nt_samples=args.noise_samples,
                    stdevs=stdev,
                    noise_on=noise_on,
                    generator=seeded(0),
                    **common,
                )
            )
    scores: dict[str, list[tuple[float, float, float]]] = {label: [] for label in configurations}
    for name in args.box_photos:
        photo, objects = photos[name]
        x = lite0_input(photo, SIZE)
        with torch.no_grad():
            probabilities = model(x).softmax(1)[0]
        target, boxes = choose_target(probabilities, objects, names)
        scale_x = SIZE / photo.image.shape[1]
        scale_y = SIZE / photo.image.shape[0]
        boxes = tuple((a * scale_x, b * scale_y, c * scale_x, d * scale_y) for a, b, c, d in boxes)
        for label, explain in configurations.items():
            saliency = explain(x, target)
            scores[label].append(
                (
                    float(deletion_auc(model, x, saliency, target=target)[0]),
                    float(insertion_auc(model, x, saliency, target=target)[0]),
                    float(energy_pointing_game(saliency, [boxes], input_size=(SIZE, SIZE))[0]),
                )
            )
        print(f"  {name}: class {names[target]}, {len(boxes)} box(es) done", flush=True)
    count = len(args.box_photos)
    print(
        f"\nNoise level at nt_samples={args.noise_samples}: mean over {count} photos "
        f"({', '.join(args.box_photos)}); d = paired difference against Score-CAM, mean "
        f"+- standard error over the photos; top_k_channels={args.channels}, bf16 autocast, seed 0"
    )
    print(
        "| method | deletion (lower better) | d deletion | insertion (higher better) "
        "| d insertion | energy pointing (higher better) | d energy |"
    )
    print("|---|---|---|---|---|---|---|")
    base = scores["Score-CAM"]
    for label, values in scores.items():
        cells = []
        for metric in range(3):
            own = [v[metric] for v in values]
            diffs = [v[metric] - b[metric] for v, b in zip(values, base, strict=True)]
            cells.append(f"{statistics.mean(own):.4f}")
            cells.append("-" if label == "Score-CAM" else mean_and_error(diffs))
        print(f"| {label} | {' | '.join(cells)} |")


def mean_and_error(values: list[float]) -> str:
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.4f} +- {error:.4f}"


def build_parser() -> argparse.ArgumentParser:
    """The command line (the docs' commands are checked against it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "part", choices=["end-to-end", "error", "allocation", "noise-level", "shared-noise"]
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=["torchcam", "exact", "fast"],
        choices=ROW_NAMES,
        help="end-to-end: the rows",
    )
    parser.add_argument("--fast-budget", type=int, default=14, help="end-to-end: adaptive N")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torchcam-samples", type=int, default=2, help="end-to-end: its N")
    parser.add_argument(
        "--old-default-samples", type=int, default=2, help="end-to-end: old-default row's N"
    )
    parser.add_argument("--photos", nargs="+", default=["coffee", "chelsea", "astronaut"])
    parser.add_argument("--seeds", type=int, default=4, help="error: seeds per estimator")
    parser.add_argument("--channels", type=int, default=128, help="noise-level: top-k")
    parser.add_argument(
        "--error-channels", type=int, default=None, help="error: top-k (default: all channels)"
    )
    parser.add_argument("--noise-on", default="mask", choices=["mask", "input"], help="error")
    parser.add_argument("--uniform-budgets", type=int, nargs="+", default=[4, 8, 16, 35])
    parser.add_argument(
        "--extrapolate-to",
        type=int,
        default=None,
        help="error: compare adaptive with uniform at this N, extrapolated from the largest "
        "uniform budget (a uniform map's variance is sigma^2 / N)",
    )
    parser.add_argument("--adaptive-budgets", type=int, nargs="+", default=[4, 8, 12, 14, 16])
    parser.add_argument("--box-photos", nargs="+", default=["coffee", "chelsea", "astronaut"])
    parser.add_argument("--stdevs", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--noise-samples", type=int, default=8, help="noise-level: N")
    parser.add_argument(
        "--pool", type=int, default=16, help="allocation, shared-noise: samples per channel"
    )
    parser.add_argument(
        "--stdev", type=float, default=2.0, help="allocation, shared-noise: noise level"
    )
    parser.add_argument(
        "--control-draws", type=int, default=256, help="shared-noise: draws for the controls' mean"
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16, 35])
    parser.add_argument("--pilot-draws", type=int, default=50, help="allocation: pilots")
    parser.add_argument(
        "--antithetic", action="store_true", help="allocation: also antithetic pairs"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    print(machine_header())
    model, layer = lite0()
    parts = {
        "end-to-end": end_to_end,
        "error": error_study,
        "allocation": allocation_study,
        "noise-level": noise_level,
        "shared-noise": shared_noise,
    }
    parts[args.part](args, model, layer)
    print(f"\nload average at the end {os.getloadavg()}, {time.strftime('%F %R %Z')}")


if __name__ == "__main__":
    main()
