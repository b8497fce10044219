"""Channel selection: score only the top-k channels by a cheap criterion.

Faster Score-CAM (the variant linked from the official Score-CAM repository,
github.com/tabayashi0117/Score-CAM) scores only the channels whose activation
maps vary most over space: most of a Score-CAM map comes from a few channels,
and ranking them needs no forward pass.
Unselected channels get weight 0, so the map is an approximation whose error
shrinks as ``k`` grows; at ``k >= K'`` it is exact.
"""

from __future__ import annotations

from torch import Tensor


def channel_ranking_scores(activation: Tensor, criterion: str) -> Tensor:
    """``(N, K)`` ranking scores: spatial variance of ``A_k``, or its energy ``sum A_k^2``."""
    flat = activation.flatten(2).float()
    if criterion == "variance":
        return flat.var(dim=2, unbiased=False)
    return flat.square().sum(dim=2)


def top_k_channels(active: Tensor, activation: Tensor, k: int, criterion: str) -> Tensor:
    """``active`` restricted to each example's ``k`` highest-ranked channels.

    Constant channels are never selected (they have no mask), so an example
    keeps ``min(k, K')`` channels.
    """
    if k >= activation.shape[1]:
        return active
    ranking = channel_ranking_scores(activation, criterion).masked_fill(~active, float("-inf"))
    chosen = ranking.topk(k, dim=1).indices
    selected = active.new_zeros(active.shape).scatter_(1, chosen, True)
    return selected & active
