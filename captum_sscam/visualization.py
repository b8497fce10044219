"""Overlays and method grids on top of `captum.attr.visualization`.

Captum's `visualize_image_attr` draws one
``(H, W, C)`` numpy attribution over an ``(H, W, 3)`` image. Score-CAM and the
other CAM methods return ``(N, 1, h, w)`` tensors at the layer's resolution, so
these helpers upsample them to the image (bilinear, as
`captum.attr.LayerAttribution.interpolate` does), convert tensors to HWC
arrays, and guard the all-zero map that Captum's normaliser rejects (it divides
by the map's largest value). Everything is drawn by Captum's own function on a
matplotlib `Figure` (no pyplot, so it works headless).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from captum.attr import visualization as viz
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from captum_sscam._core.resize import resize

ZERO_MAP_NOTE = "map is all zero"
COLORBAR_LABELS_INCHES = 0.2
"""Room left under a new figure's picture (half of it at each side) for the colour
bar's tick labels."""


def upsample_map(attribution: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, C, h, w)`` (or ``(h, w)``, ``(C, h, w)``) maps resized bilinearly to ``size``.

    Returns ``(N, C, H, W)``; a map already at ``size`` is returned unchanged.
    """
    maps = attribution.detach()
    while maps.dim() < 4:
        maps = maps.unsqueeze(0)
    if maps.dim() != 4:
        raise ValueError(
            f"expected a map of shape (N, C, h, w), (C, h, w) or (h, w); got {tuple(maps.shape)}."
        )
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return resize(maps.float(), size)


def image_to_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """An image as the ``(H, W, C)`` numpy array Captum's visualization expects.

    Accepts uint8 or float ``(H, W, C)`` arrays/tensors, and ``(C, H, W)`` or
    ``(1, C, H, W)`` tensors (channels first when ``C`` is 1 or 3). A float image
    with NaN or infinite values is refused.
    """
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected one image (H, W, C) or (C, H, W); got shape {array.shape}.")
    if array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
        raise ValueError(
            "the image contains NaN or inf; it cannot be drawn. Pass a uint8 or [0, 1] "
            "float image with finite values."
        )
    return array


def map_to_hwc(attribution: Tensor, size: tuple[int, int]) -> np.ndarray:
    """One example's map (``(1, C, h, w)``, ``(C, h, w)`` or ``(h, w)``) as an
    ``(H, W, C)`` float array at ``size``."""
    maps = upsample_map(attribution, size)
    if maps.shape[0] != 1:
        raise ValueError(
            f"expected the map of one example, got a batch of {maps.shape[0]}; "
            "index the batch first (attribution[i])."
        )
    if not torch.isfinite(maps).all():
        raise ValueError("the map contains NaN or inf; it cannot be drawn.")
    return maps[0].permute(1, 2, 0).cpu().numpy().astype(np.float64)


def as_image_attr(
    attribution: Tensor, index: int = 0, size: tuple[int, int] | None = None
) -> np.ndarray:
    """One example's map, as returned, in the form ``visualize_image_attr`` takes.

    Captum's `captum.attr.visualization.visualize_image_attr` wants an
    ``(H, W, C)`` numpy array and rejects the ``(N, 1, H, W)`` tensor that a
    layer method (or `captum.attr.LayerAttribution.interpolate`) returns.
    This is ``attribution[index].permute(1, 2, 0).detach().cpu().numpy()``, after
    upsampling to ``size`` when given.

    Args:
        attribution: ``(N, C, h, w)`` maps as returned (``(C, h, w)`` and
            ``(h, w)`` are taken as one example).
        index: which example of the batch.
        size: ``(H, W)`` to upsample to (bilinear); ``None``: the map's own size.

    Returns:
        A float64 ``(H, W, C)`` array.
    """
    maps = attribution.detach()
    while maps.dim() < 4:
        maps = maps.unsqueeze(0)
    if not 0 <= index < maps.shape[0]:
        raise IndexError(f"index {index} is out of range for a batch of {maps.shape[0]} maps.")
    return map_to_hwc(maps[index : index + 1], size or (maps.shape[-2], maps.shape[-1]))


def overlay(
    attribution: Tensor,
    image: Tensor | np.ndarray,
    *,
    method: str = "blended_heat_map",
    sign: str = "positive",
    cmap: str | None = "jet",
    alpha_overlay: float = 0.5,
    outlier_perc: float = 1,
    title: str | None = None,
    show_colorbar: bool = False,
    plt_fig_axis: tuple[Figure, Axes] | None = None,
    fig_size: tuple[float, float] = (4, 4),
) -> tuple[Figure, Axes]:
    """Draw one example's map over its image with Captum's ``visualize_image_attr``.

    Args:
        attribution: the map of one example at any resolution (``(1, 1, h, w)``
            from a CAM method, ``(1, 3, H, W)`` from IG, ...); it is upsampled to
            the image and channels are summed by Captum.
        image: uint8 or [0, 1] float image, HWC or CHW.
        method: Captum's visualization method (``"blended_heat_map"``, ``"heat_map"``, ...).
        sign: which sign of the map to draw (``"positive"`` suits CAM maps).
        cmap: the colormap of the heat map.
        alpha_overlay: the heat map's opacity over the image.
        outlier_perc: the top percentage of values clipped before normalising.
        title: the axes' title.
        show_colorbar: draw Captum's colour bar under the picture (0 to 1: the
            map's positive part divided by its top value after clipping); a new
            figure keeps room around it for the labels.
        plt_fig_axis: draw into this figure and axes; by default a new figure
            whose single axes fills it (so the saved PNG is the picture alone
            when there is no title).
        fig_size: the new figure's size in inches.

    Returns:
        ``(figure, axes)``. An all-zero map (e.g. Score-CAM when every channel's
        weight is negative), or one without values of the drawn ``sign`` (a
        Grad-CAM map without its ReLU, say), cannot be normalised, so the image is
        drawn alone and the title says why.
    """
    hwc_image = image_to_hwc(image)
    hwc_map = map_to_hwc(attribution, hwc_image.shape[:2])
    if plt_fig_axis is None:
        figure = Figure(figsize=fig_size)
        side = COLORBAR_LABELS_INCHES / 2 / fig_size[0] if show_colorbar else 0.0
        bottom = COLORBAR_LABELS_INCHES / fig_size[1] if show_colorbar else 0.0
        top = 0.9 if title else 1.0
        axes = figure.add_axes((side, bottom, 1.0 - 2 * side, top - bottom))
        axes.set_axis_off()
        plt_fig_axis = (figure, axes)
    note = _nothing_to_draw(hwc_map, sign)
    if note is not None:
        title = f"{title} ({note})" if title else note
        method, hwc_map = "original_image", np.ones_like(hwc_map)
    drawn = viz.visualize_image_attr(
        hwc_map,
        hwc_image,
        method=method,
        sign=sign,
        plt_fig_axis=plt_fig_axis,
        outlier_perc=outlier_perc,
        cmap=cmap,
        alpha_overlay=alpha_overlay,
        show_colorbar=show_colorbar,
        title=title,
        use_pyplot=False,
    )
    if show_colorbar:
        plt_fig_axis[0].axes[-1].tick_params(labelsize=7)
    return drawn


def method_grid(
    images: Sequence[Tensor | np.ndarray],
    attributions: Mapping[str, Tensor | Sequence[Tensor]],
    *,
    metrics: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    row_titles: Sequence[str] | None = None,
    cell_size: float = 2.5,
    **overlay_kwargs: Any,
) -> Figure:
    """A grid: one row per image, the image then one overlay per method.

    Args:
        images: the N images (uint8 or [0, 1] float, HWC or CHW).
        attributions: method name -> that method's N maps (a ``(N, C, h, w)``
            tensor or a sequence of per-example maps), in column order.
        metrics: optional method name -> metric name -> N values; each cell's
            title lists its values (e.g. ``"deletion 0.081"``).
        row_titles: optional N titles for the image column (e.g. the class).
        cell_size: inches per cell.
        overlay_kwargs: passed to [overlay][captum_sscam.visualization.overlay] (method, sign,
            cmap, ...).

    Returns:
        The matplotlib figure; save it with ``figure.savefig(path)``.
    """
    if not images:
        raise ValueError("method_grid needs at least one image.")
    for name, maps in attributions.items():
        if len(maps) != len(images):
            raise ValueError(f"{name!r} has {len(maps)} maps for {len(images)} images.")
    if row_titles is not None and len(row_titles) != len(images):
        raise ValueError(f"{len(row_titles)} row titles for {len(images)} images.")
    columns = 1 + len(attributions)
    figure = Figure(figsize=(cell_size * columns, cell_size * len(images) * 1.15))
    grid = figure.subplots(len(images), columns, squeeze=False)
    for row, image in enumerate(images):
        hwc_image = image_to_hwc(image)
        original = grid[row][0]
        original.imshow(_displayable(hwc_image))
        original.set_title(row_titles[row] if row_titles else "image", fontsize=9)
        original.set_axis_off()
        for column, (name, maps) in enumerate(attributions.items(), start=1):
            axes = grid[row][column]
            axes.set_axis_off()
            title = cell_title(name, metrics.get(name, {}) if metrics else {}, row)
            overlay(maps[row], hwc_image, plt_fig_axis=(figure, axes), **overlay_kwargs)
            note = axes.get_title() if axes.get_title().startswith("map ") else None
            axes.set_title(f"{title}\n({note})" if note else title, fontsize=8)
    figure.tight_layout()
    return figure


def _nothing_to_draw(hwc_map: np.ndarray, sign: str) -> str | None:
    """Why Captum could not normalise the part of the map that ``sign`` draws, or ``None``."""
    if not np.any(hwc_map):
        return ZERO_MAP_NOTE
    drawn = {"positive": hwc_map > 0, "negative": hwc_map < 0}.get(sign, hwc_map != 0)
    return None if np.any(drawn) else f"map has no {sign} values"


def _displayable(hwc_image: np.ndarray) -> np.ndarray:
    """What ``imshow`` draws: uint8 as is, floats read as Captum does (0-1, or 0-255
    when larger values occur) and clipped to [0, 1], one channel squeezed."""
    image = hwc_image
    if image.dtype != np.uint8:
        image = np.clip(image / 255.0 if image.max() > 1.0 else image, 0.0, 1.0)
    return image[:, :, 0] if image.shape[2] == 1 else image


def cell_title(method: str, metrics: Mapping[str, Sequence[float]], index: int) -> str:
    """A cell's title: the method and its values for one example, one line each."""
    values = "  ".join(f"{name} {float(values[index]):.3g}" for name, values in metrics.items())
    return f"{method}\n{values}" if values else method


__all__ = [
    "as_image_attr",
    "cell_title",
    "image_to_hwc",
    "map_to_hwc",
    "method_grid",
    "overlay",
    "upsample_map",
]
