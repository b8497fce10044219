"""How alike two saliency maps are: Spearman's rank correlation and SSIM, per example.

Both compare maps at their own resolution, as the method returned them (a layer
method's ``(N, 1, h, w)`` map at the layer's size, an input method's ``(N, C, H, W)``
attributions with their channels), so nothing is interpolated into the comparison.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_sscam._core.resize import min_max_scaled

# Wang et al. (2004): an 11 x 11 Gaussian window of standard deviation 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def is_constant(maps: Tensor) -> Tensor:
    """``(N,)`` bool: the map of an example ``(N, ...)`` takes a single value."""
    flat = maps.flatten(1)
    return flat.amax(dim=1) == flat.amin(dim=1)


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..M`` of each row of ``values`` ``(N, M)``; tied values share their mean rank."""
    ranks = torch.empty(values.shape, dtype=torch.float64, device=values.device)
    for row, row_values in enumerate(values):
        ordered, order = torch.sort(row_values, stable=True)
        starts_group = torch.ones_like(ordered, dtype=torch.bool)
        starts_group[1:] = ordered[1:] != ordered[:-1]
        group = torch.cumsum(starts_group, 0) - 1
        sizes = torch.bincount(group).to(torch.float64)
        last = torch.cumsum(sizes, 0)  # 1-based rank of each group's last member
        mean_rank = last - (sizes - 1) / 2
        ranks[row, order] = mean_rank[group]
    return ranks


def spearman(maps: Tensor, references: Tensor) -> Tensor:
    r"""``(N,)`` Spearman rank correlation of each example's map with its reference.

    $\rho = \mathrm{corr}(\mathrm{rank}(a), \mathrm{rank}(b))$ over all the values of the
    example's map (every channel and pixel), ties given their average rank, as
    ``scipy.stats.spearmanr``. NaN where either map is constant (its ranks have no
    variance: the correlation is undefined); the callers flag those examples.
    """
    a = average_ranks(maps.flatten(1).double())
    b = average_ranks(references.flatten(1).double())
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denominator = (a.square().sum(1) * b.square().sum(1)).sqrt()
    undefined = is_constant(maps) | is_constant(references)
    safe = torch.where(undefined, torch.ones_like(denominator), denominator)
    rho = (a * b).sum(1) / safe
    return torch.where(undefined, torch.full_like(rho, math.nan), rho.clamp(-1.0, 1.0))


def ssim(maps: Tensor, references: Tensor) -> Tensor:
    r"""``(N,)`` mean structural similarity of each example's map with its reference.

    Wang, Bovik, Sheikh and Simoncelli, "Image Quality Assessment: From Error Visibility
    to Structural Similarity", IEEE TIP 2004: with local means $\mu$, variances
    $\sigma^2$ and covariance $\sigma_{ab}$ under a Gaussian window,

    $$
    \mathrm{SSIM}(a, b) = \frac{(2 \mu_a \mu_b + C_1)(2 \sigma_{ab} + C_2)}
                              {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},
    \qquad C_1 = (0.01 L)^2,\ C_2 = (0.03 L)^2,
    $$

    averaged over the window positions that lie inside the map (no padding) and over
    the map's channels. Each example's map is first min-max scaled to [0, 1] over all
    its values (so $L = 1$; a constant map becomes all zeros). The window is the
    paper's 11 x 11 Gaussian of standard deviation 1.5 (weights normalised to sum 1,
    population statistics): ``skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``. A
    map smaller than 11 pixels on a side (a 7 x 7 layer map) gets the largest odd
    window that fits, its standard deviation scaled in proportion (7 x 7: one window,
    sigma 0.95).

    Maps are ``(N, ..., h, w)``; leading dimensions after the batch are channels.
    """
    if maps.dim() < 3:
        raise ValueError(
            f"SSIM compares (N, ..., h, w) maps, got shape {tuple(maps.shape)}; the maps "
            "need two spatial dimensions."
        )
    num_examples, (height, width) = maps.shape[0], maps.shape[-2:]
    a = min_max_scaled(maps.double().reshape(num_examples, -1)).reshape(-1, 1, height, width)
    b = min_max_scaled(references.double().reshape(num_examples, -1)).reshape(-1, 1, height, width)
    window = _gaussian_window(min(height, width), a.device)

    def local_mean(x: Tensor) -> Tensor:
        return F.conv2d(x, window)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a.square()
    var_b = local_mean(b * b) - mu_b.square()
    covariance = local_mean(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / (
        (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    )
    return index.reshape(num_examples, -1).mean(dim=1)


def _gaussian_window(smallest_side: int, device: torch.device) -> Tensor:
    """The ``(1, 1, k, k)`` normalised Gaussian window for maps of this smallest side."""
    size = min(SSIM_WINDOW, smallest_side if smallest_side % 2 else smallest_side - 1)
    sigma = SSIM_SIGMA * size / SSIM_WINDOW
    offsets = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    window = torch.outer(profile, profile)
    return (window / window.sum()).view(1, 1, size, size)
