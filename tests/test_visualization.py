"""Overlays and grids: render to PNG (Agg, no pyplot) and check where the heat was drawn."""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from captum_sscam.visualization import (
    ZERO_MAP_NOTE,
    as_image_attr,
    image_to_hwc,
    map_to_hwc,
    method_grid,
    overlay,
    upsample_map,
)


def render(figure: matplotlib.figure.Figure) -> np.ndarray:
    """The figure as an (H, W, 3) float RGB array, as a PNG reader sees it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return mpimg.imread(buffer)[:, :, :3]


def redness(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, :, 0] - pixels[:, :, 2]


def hot_cell_map(row: int, column: int, size: int = 7) -> torch.Tensor:
    cam = torch.zeros(1, 1, size, size)
    cam[0, 0, row, column] = 1.0
    return cam


def gray_image(size: int = 112) -> np.ndarray:
    return np.full((size, size, 3), 128, dtype=np.uint8)


def test_upsample_map_matches_captum_interpolate_and_keeps_full_size() -> None:
    cam = torch.rand(2, 1, 7, 7)
    up = upsample_map(cam, (28, 28))
    assert up.shape == (2, 1, 28, 28)
    expected = torch.nn.functional.interpolate(cam, (28, 28), mode="bilinear")
    torch.testing.assert_close(up, expected)
    assert upsample_map(up, (28, 28)) is not None
    torch.testing.assert_close(upsample_map(up, (28, 28)), up)
    assert upsample_map(torch.rand(5, 5), (10, 10)).shape == (1, 1, 10, 10)


def test_image_to_hwc_accepts_chw_tensor_and_hwc_array() -> None:
    chw = torch.arange(2 * 3 * 4, dtype=torch.float32).view(3, 2, 4)
    assert image_to_hwc(chw).shape == (2, 4, 3)
    np.testing.assert_array_equal(image_to_hwc(chw)[1, 2], chw[:, 1, 2].numpy())
    assert image_to_hwc(chw[None]).shape == (2, 4, 3)
    assert image_to_hwc(gray_image(5)).shape == (5, 5, 3)
    with pytest.raises(ValueError, match="one image"):
        image_to_hwc(np.zeros((2, 2, 3, 3, 1)))


def test_map_to_hwc_rejects_batches_and_nan() -> None:
    assert map_to_hwc(torch.rand(1, 1, 7, 7), (14, 14)).shape == (14, 14, 1)
    with pytest.raises(ValueError, match="index the batch"):
        map_to_hwc(torch.rand(2, 1, 7, 7), (14, 14))
    with pytest.raises(ValueError, match="NaN"):
        map_to_hwc(torch.full((1, 1, 2, 2), float("nan")), (4, 4))


@pytest.mark.parametrize(("row", "column"), [(1, 1), (5, 2), (3, 6)])
def test_overlay_puts_the_heat_where_the_map_is_hot(row: int, column: int) -> None:
    figure, _ = overlay(hot_cell_map(row, column), gray_image(), fig_size=(2.24, 2.24))
    figure.set_dpi(100)
    pixels = render(figure)
    assert pixels.shape == (224, 224, 3)
    hot_y, hot_x = np.unravel_index(np.argmax(redness(pixels)), pixels.shape[:2])
    cell = 224 / 7
    assert int(hot_y // cell) == row
    assert int(hot_x // cell) == column
    # far from the hot cell the jet colormap is blue: the map was really drawn there too
    far_y, far_x = (6 - row) * cell + cell / 2, (6 - column) * cell + cell / 2
    if abs(far_y - hot_y) > 2 * cell or abs(far_x - hot_x) > 2 * cell:
        assert redness(pixels)[int(far_y), int(far_x)] < 0


def test_overlay_of_input_shaped_ig_map_sums_channels() -> None:
    attribution = torch.zeros(1, 3, 64, 64)
    attribution[0, :, 40:56, 8:24] = 1.0  # bottom-left block, on all channels
    figure, _ = overlay(attribution, torch.rand(3, 64, 64), fig_size=(0.64, 0.64))
    figure.set_dpi(100)
    pixels = render(figure)
    assert pixels.shape == (64, 64, 3)
    hot_y, hot_x = np.unravel_index(np.argmax(redness(pixels)), pixels.shape[:2])
    assert 40 <= hot_y < 56 and 8 <= hot_x < 24


def test_a_map_without_positive_values_draws_the_image_and_says_so() -> None:
    # Captum's normaliser divides by the drawn sign's top value: zero for such a map.
    image = np.full((32, 32, 3), 120, dtype=np.uint8)
    negative = -torch.rand(1, 1, 4, 4) - 0.1
    _, axes = overlay(negative, image, title="Grad-CAM", fig_size=(1, 1))
    assert axes.get_title() == "Grad-CAM (map has no positive values)"
    _, axes = overlay(negative, image, sign="negative", fig_size=(1, 1))
    assert axes.get_title() == ""  # drawn normally


def test_all_zero_map_draws_the_image_and_says_so() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, 16:] = (0, 200, 0)
    figure, axes = overlay(torch.zeros(1, 1, 4, 4), image, title="Score-CAM", fig_size=(1, 1))
    assert axes.get_title() == f"Score-CAM ({ZERO_MAP_NOTE})"
    pixels = render(figure)
    left, right = pixels[40:95, 10:45], pixels[40:95, 55:90]  # inside the 90 px picture
    assert left.max() < 0.05  # black half, no heat drawn over it
    assert right[:, :, 1].mean() > 0.7 and right[:, :, 0].max() < 0.05


def test_method_grid_draws_each_method_in_its_cell_with_metric_titles() -> None:
    images = [gray_image(), gray_image()]
    attributions = {
        "Score-CAM": torch.cat([hot_cell_map(1, 1), hot_cell_map(5, 5)]),
        "SS-CAM": [hot_cell_map(1, 5)[0], hot_cell_map(5, 1)[0]],
        "Zero": torch.zeros(2, 1, 7, 7),
    }
    metrics = {"Score-CAM": {"deletion": [0.0812, 0.2], "insertion": [0.5, 0.61]}}
    figure = method_grid(images, attributions, metrics=metrics, row_titles=["espresso", "cat"])
    figure.set_dpi(100)
    pixels = render(figure)
    height, width = pixels.shape[:2]
    assert (width, height) == (int(2.5 * 4 * 100), int(2.5 * 2 * 1.15 * 100))
    axes = np.array(figure.axes).reshape(2, 4)
    assert axes[0, 0].get_title() == "espresso"
    assert axes[0, 1].get_title() == "Score-CAM\ndeletion 0.0812  insertion 0.5"
    assert axes[1, 1].get_title() == "Score-CAM\ndeletion 0.2  insertion 0.61"
    assert axes[0, 2].get_title() == "SS-CAM"
    assert axes[1, 3].get_title() == f"Zero\n({ZERO_MAP_NOTE})"
    expected_cells = {(0, 1): (1, 1), (1, 1): (5, 5), (0, 2): (1, 5), (1, 2): (5, 1)}
    for (row, column), (cell_row, cell_column) in expected_cells.items():
        box = axes[row, column].get_window_extent()
        top = height - int(box.y1)
        panel = pixels[top : top + int(box.height), int(box.x0) : int(box.x0) + int(box.width)]
        hot_y, hot_x = np.unravel_index(np.argmax(redness(panel)), panel.shape[:2])
        assert int(hot_y / panel.shape[0] * 7) == cell_row
        assert int(hot_x / panel.shape[1] * 7) == cell_column
    for row in range(2):  # the zero map's cell shows the gray image, no heat
        box = axes[row, 3].get_window_extent()
        top = height - int(box.y1)
        panel = pixels[top + 2 : top + int(box.height) - 2, int(box.x0) + 2 : int(box.x1) - 2]
        assert np.abs(redness(panel)).max() < 0.02


def test_method_grid_checks_lengths() -> None:
    with pytest.raises(ValueError, match="2 maps for 1 images"):
        method_grid([gray_image()], {"Score-CAM": torch.zeros(2, 1, 7, 7)})
    with pytest.raises(ValueError, match="at least one image"):
        method_grid([], {})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy on the rejected tensor
def test_as_image_attr_takes_the_map_as_returned() -> None:
    from captum.attr import LayerAttribution
    from captum.attr import visualization as viz

    maps = torch.rand(2, 1, 7, 7)
    heatmap = LayerAttribution.interpolate(maps, (28, 28), interpolate_mode="bilinear")
    image = np.zeros((28, 28, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="Invalid shape"):  # what users hit without it
        viz.visualize_image_attr(heatmap, image, method="heat_map", use_pyplot=False)
    attr = as_image_attr(heatmap, index=1)
    assert attr.shape == (28, 28, 1) and attr.dtype == np.float64
    np.testing.assert_allclose(attr, heatmap[1].permute(1, 2, 0).numpy(), rtol=1e-6)
    viz.visualize_image_attr(attr, image, method="heat_map", sign="positive", use_pyplot=False)
    np.testing.assert_allclose(  # a layer map, upsampled on the way
        as_image_attr(maps, size=(28, 28)), heatmap[0].permute(1, 2, 0).numpy(), rtol=1e-6
    )
    with pytest.raises(IndexError, match="index 2 is out of range for a batch of 2 maps"):
        as_image_attr(maps, index=2)


def test_the_documented_conversion_runs() -> None:
    recipes = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text()
    (snippet,) = [
        block for block in re.findall(r"```python\n(.*?)```", recipes, re.DOTALL)
        if "as_image_attr" in block
    ]  # fmt: skip
    namespace: dict = {}
    exec(snippet, namespace)
    np.testing.assert_allclose(namespace["attr"], namespace["same"], rtol=1e-6)
    assert len(namespace["figure"].axes) == 2  # the picture and its colour bar


def test_overlay_draws_a_colour_bar_from_zero_to_one() -> None:
    figure, _ = overlay(hot_cell_map(3, 3), np.zeros((28, 28, 3)), show_colorbar=True)
    _, bar = figure.axes
    assert bar.get_xlim() == pytest.approx((0.0, 1.0))
    pixels = render(figure)
    bar_rows = [  # under the picture: blue (0) on the left, red (1) on the right
        row for row in pixels[300:]
        if row[30, 2] > row[30, 0] + 0.2 and row[-30, 0] > row[-30, 2] + 0.2
    ]  # fmt: skip
    assert bar_rows
