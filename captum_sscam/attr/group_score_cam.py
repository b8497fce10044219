"""Group Score-CAM: Score-CAM over k-means groups of channels, as a Captum layer attribution."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from captum._utils.common import _format_tensor_into_tuples
from captum._utils.typing import BaselineType
from captum.log import log_usage
from torch import Tensor

from captum_sscam._core.checks import check_positive_int
from captum_sscam._core.resize import min_max_scaled
from captum_sscam._core.targets import AnyTarget
from captum_sscam.attr._channels import channel_ranking_scores
from captum_sscam.attr._masks import varying_channels
from captum_sscam.attr._options import ChannelCriterion, ScoreCAMOptions, ScoreMode
from captum_sscam.attr._perturbations import Perturbation
from captum_sscam.attr._sampling import Sampling
from captum_sscam.attr.score_cam import ScoreCAM

_LLOYD_ITERATIONS = 30  # at most; Lloyd's iterations stop once no assignment changes


class GroupScoreCAM(ScoreCAM):
    r"""Group Score-CAM: one masked forward per group of similar channels instead of per channel.

    The grouping of Cluster-CAM (Feng et al., "Cluster-CAM: Cluster-weighted visual
    interpretation of CNNs' decision in image classification", Neural Networks 178,
    2024): channels whose maps look alike are masked, scored and weighted together.
    Like Faster Score-CAM (github.com/tabayashi0117/Score-CAM, which keeps only the
    highest-variance channels, ``top_k_channels`` here) it trades exactness for
    fewer forwards, but every channel keeps a weight.

    For each example, the $K'$ non-constant channels of the layer's maps $A$ are
    partitioned into $G$ = ``n_groups`` groups $S_1, \dots, S_G$ by k-means on their
    flattened, min-max normalised maps $s(A_k)$ (at the layer's resolution). Then

    $$
    G_g = \sum_{k \in S_g} A_k, \qquad H_g = s(U(G_g)), \qquad
    a_g = \mathrm{score}_c(X \odot H_g) - \mathrm{score}_c(b),
    $$

    $$
    w_k = a_g \ \text{for}\ k \in S_g, \qquad
    L = \mathrm{ReLU}\Big(\sum_k w_k A_k\Big) = \mathrm{ReLU}\Big(\sum_g a_g G_g\Big),
    $$

    with $U$, $s$, the baseline $b$ and the score as in [ScoreCAM][captum_sscam.ScoreCAM]:
    $G$ forward passes per example instead of $K'$. Constant channels are in no
    group (weight 0, as in Score-CAM). With $G \ge K'$ every channel is its own group,
    in the channels' order, and the map is Score-CAM's (to float rounding). An
    example with fewer than $G$ non-constant channels has empty groups: their
    $G_g$ is all zeros, constant, so they get no mask and cost no forward (nor
    does a group whose sum happens to be constant). In ``"channel_softmax"`` mode the
    softmax runs over the groups, $w_k = \mathrm{softmax}_g(a_g)$ for $k \in S_g$, and
    ``top_k_channels`` keeps the $k$ groups of largest spatial variance (or energy) of
    $G_g$.

    The clustering is deterministic (no seed): a farthest-point initialisation
    that starts from the channel of largest spatial variance of $A_k$ (Faster
    Score-CAM's ranking) and adds, one at a time, the channel farthest (squared
    Euclidean distance of $s(A_k)$) from every centre chosen so far; then Lloyd's
    iterations (each channel to its nearest centre, each centre to its members'
    mean; a centre left without members stays where it was) until no assignment
    changes, at most 30. It runs in torch on the activations' device, batched over
    examples, in float64.
    """

    @classmethod
    def get_name(cls) -> str:
        return "Group Score-CAM"

    @log_usage()
    @torch.no_grad()
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: AnyTarget = None,
        additional_forward_args: Any = None,
        *,
        baselines: BaselineType = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = True,
        score_mode: ScoreMode = "probability",
        perturbations_per_eval: int | None = None,
        show_progress: bool | None = None,
        autocast_dtype: torch.dtype | str | None = None,
        channels_last: bool | None = None,
        top_k_channels: int | None = None,
        channel_criterion: ChannelCriterion = "variance",
        compile_forward: bool = False,
        n_groups: int = 32,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""Group Score-CAM maps of ``target`` for each example of ``inputs``.

        Takes every argument of [ScoreCAM.attribute][captum_sscam.ScoreCAM.attribute], in
        the same order (keyword-only past ``additional_forward_args``), plus:

        Args:
            n_groups: channel groups $G$ per example, i.e. masked forward passes per
                example (at most). Default 32: 16 to 64 times fewer passes than
                Score-CAM on the 512 to 2048 channels of common last layers
                (ResNet-18, EfficientNet-Lite0's 1280, ResNet-50), about a second of
                CPU per image on such models; ``n_groups >= K'`` is Score-CAM.

        Returns:
            ``(N, 1, h, w)`` maps at the layer's resolution (``(N, T, h, w)`` for an
            ``(N, T)`` target; a tuple for a layer with several output tensors),
            detached, on the inputs' device.
        """
        options = ScoreCAMOptions(
            attribute_to_layer_input=attribute_to_layer_input,
            relu_attributions=relu_attributions,
            score_mode=score_mode,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
            autocast_dtype=autocast_dtype,
            channels_last=channels_last,
            top_k_channels=top_k_channels,
            channel_criterion=channel_criterion,
            compile_forward=compile_forward,
        )
        options, perturbation, sampling = self._plan(options, None, n_groups=n_groups)
        return self._attribute(
            inputs,
            target,
            additional_forward_args,
            baselines,
            options,
            perturbation,
            sampling,
            channel_transform=partial(_grouping_transform, inputs=inputs, n_groups=int(n_groups)),
        )

    @classmethod
    def _plan(
        cls, options: ScoreCAMOptions, num_inputs: int | None, *, n_groups: int = 32
    ) -> tuple[ScoreCAMOptions, Perturbation, Sampling]:
        """Group Score-CAM's own argument, validated; every group is scored once, as in
        Score-CAM (no perturbation, one sample)."""
        check_positive_int("n_groups", n_groups)
        return options, Perturbation(), Sampling()


def _grouping_transform(maps: Tensor, inputs: Tensor | tuple[Tensor, ...], n_groups: int) -> Tensor:
    """The engine's ``channel_transform``: ``(N, K, *spatial)`` maps -> ``(N, G, *spatial)``
    group sums, the non-constant channels checked at the inputs' sizes as Score-CAM does
    (``inputs`` are validated by then)."""
    sizes = [tuple(x.shape[2:]) for x in _format_tensor_into_tuples(inputs)]
    return _group_sums(maps, varying_channels(maps, sizes), n_groups)


def _group_sums(maps: Tensor, active: Tensor, n_groups: int) -> Tensor:
    """``(N, G, *spatial)``: each group's sum of maps, over the groups of ``_channel_groups``.

    A product with one-hot memberships: a group of one channel is that channel's map exactly."""
    labels = _channel_groups(maps, active, n_groups)
    membership = torch.nn.functional.one_hot(labels, n_groups + 1)[..., :n_groups]
    return torch.einsum("nkg,nk...->ng...", membership.to(maps.dtype), maps)


def _channel_groups(maps: Tensor, active: Tensor, n_groups: int) -> Tensor:
    """``(N, K)`` group of each channel in ``[0, n_groups)``; ``n_groups`` for the channels
    that are not ``active`` (constant ones), which belong to no group.

    An example with at most ``n_groups`` active channels gives each its own group, in
    the channels' order; the others are clustered by k-means on ``s(A_k)``."""
    own = torch.where(active, active.cumsum(dim=1) - 1, n_groups)
    few = active.sum(dim=1) <= n_groups
    if bool(few.all()):  # one host sync per call: nothing to cluster
        return own
    features = min_max_scaled(maps.flatten(0, 1)).flatten(1).view(*maps.shape[:2], -1)
    first = channel_ranking_scores(maps, "variance").masked_fill(~active, float("-inf"))
    labels = _kmeans(features.to(torch.float64), active, first.argmax(dim=1), n_groups)
    clustered = torch.where(active, labels, n_groups)
    return torch.where(few.unsqueeze(1), own, clustered)


def _kmeans(features: Tensor, active: Tensor, first: Tensor, n_groups: int) -> Tensor:
    """``(N, K)`` nearest-centre labels of Lloyd's iterations on ``features`` ``(N, K, D)``,
    batched over examples, from ``_farthest_point_centres``; inactive channels take no part
    (their label is meaningless)."""
    centres, valid = _farthest_point_centres(features, active, first, n_groups)
    labels = None
    weights = active.to(features.dtype).unsqueeze(2)
    for _ in range(_LLOYD_ITERATIONS):
        distances = _squared_distances(features, centres)
        nearest = distances.masked_fill(~valid.unsqueeze(1), float("inf")).argmin(dim=2)
        if labels is not None and torch.equal(nearest, labels):
            break
        labels = nearest
        membership = torch.nn.functional.one_hot(labels, n_groups).to(features.dtype) * weights
        counts = membership.sum(dim=1).unsqueeze(2)
        means = membership.transpose(1, 2) @ features / counts.clamp(min=1)
        centres = torch.where(counts > 0, means, centres)
    assert labels is not None
    return labels


def _farthest_point_centres(
    features: Tensor, active: Tensor, first: Tensor, n_groups: int
) -> tuple[Tensor, Tensor]:
    """``(N, G, D)`` initial centres and ``(N, G)`` which of them exist: channel ``first``,
    then each time the active channel not yet chosen that is farthest from every chosen
    centre (the first such channel on ties). An example runs out of channels only when it
    has fewer than ``n_groups`` active ones; its remaining centres do not exist."""
    rows = torch.arange(features.shape[0], device=features.device)
    nearest = torch.full(active.shape, float("inf"), dtype=features.dtype, device=features.device)
    taken = ~active
    chosen, valid = [], []
    pick = first
    for _ in range(n_groups):
        valid.append(~taken[rows, pick])
        chosen.append(pick)
        taken[rows, pick] = True
        centre = features[rows, pick].unsqueeze(1)
        nearest = torch.minimum(nearest, (features - centre).square().sum(dim=2))
        pick = nearest.masked_fill(taken, float("-inf")).argmax(dim=1)
    centres = features[rows.unsqueeze(1), torch.stack(chosen, dim=1)]
    return centres, torch.stack(valid, dim=1)


def _squared_distances(features: Tensor, centres: Tensor) -> Tensor:
    """``(N, K, G)`` squared Euclidean distances of ``features`` ``(N, K, D)`` to ``centres``
    ``(N, G, D)``, by ``|x|^2 - 2 x.c + |c|^2`` (two matrix products, no ``(N, K, G, D)``)."""
    cross = features @ centres.transpose(1, 2)
    squares = features.square().sum(dim=2, keepdim=True)
    return (squares - 2 * cross + centres.square().sum(dim=2).unsqueeze(1)).clamp(min=0)
