"""Run several attribution methods on the same images and write a self-contained HTML report.

The report puts each method's overlay (drawn by `captum_sscam.visualization`,
with a colour bar) side by side for every image, with the model's predicted
class, the target that was explained, each method's time and its faithfulness
and localisation values (`captum_sscam.apps.scores`), each labelled with
what it is and whether higher or lower is better. Every picture is embedded as
a ``data:`` URI, so the single HTML file can be mailed or archived.

Memory is bounded per image: `compare` explains one image at a time, and
the metrics perturb at most ``batch_size`` images per forward pass (give the
methods the same bound through `captum_sscam.apps.methods.Options`).
"""

from __future__ import annotations

import base64
import html
import io
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import captum
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_sscam.apps.data import Photo, photo_tensor
from captum_sscam.apps.methods import DEFAULT_BATCH_SIZE, Explain
from captum_sscam.apps.scores import METRICS, metric_values
from captum_sscam.visualization import overlay

COLOUR_SCALE_NOTE = (
    "Colour bars: each map's positive part, scaled to its own top values (the top 1 % "
    "clipped) from 0 (no attribution) to 1; colours compare places within a map, not "
    "values across maps."
)


@dataclass(frozen=True)
class Prediction:
    """The model's top class for one image."""

    index: int
    name: str
    probability: float


@dataclass
class MethodRun:
    """One method's maps for all images, its wall time and its metric values
    (metric key of `captum_sscam.apps.scores.METRICS` -> one value per image)."""

    name: str
    maps: Tensor
    seconds: float
    metrics: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Comparison:
    """Everything the report shows."""

    photos: list[Photo]
    predictions: list[Prediction]
    targets: list[int]
    class_names: Sequence[str]
    runs: list[MethodRun]
    notes: list[str] = field(default_factory=list)


@torch.no_grad()
def top_prediction(model: nn.Module, inputs: Tensor, class_names: Sequence[str]) -> Prediction:
    """The most probable class of one example (softmax over the model's outputs)."""
    probability, index = model(inputs).softmax(dim=1)[0].max(dim=0)
    return Prediction(int(index), class_name(class_names, int(index)), float(probability))


def class_name(class_names: Sequence[str], index: int) -> str:
    """The name of class ``index``, or ``"class <index>"`` when there is none."""
    return class_names[index] if 0 <= index < len(class_names) else f"class {index}"


def compare(
    model: nn.Module,
    photos: Sequence[Photo],
    preprocess: Callable[[Tensor], Tensor],
    methods: Mapping[str, Explain],
    *,
    class_names: Sequence[str] = (),
    targets: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    with_metrics: bool = True,
    metric_step: float = 0.01,
    batch_size: int | None = None,
    progress: bool = True,
) -> Comparison:
    """Run every method on every photo, one photo at a time, and time it.

    Args:
        model: the classifier, in eval mode.
        photos: photos at the model's input size (see
            `captum_sscam.apps.data.center_crop_photo`).
        preprocess: uint8 ``(N, H, W, 3)`` tensor -> model input ``(N, C, H, W)``.
        methods: display name -> ``(inputs, targets) -> maps``, e.g. from
            `captum_sscam.apps.methods.explain_functions`.
        class_names: names of the model's classes, for the report.
        targets: the class to explain per photo; default the top class.
        device: where the model and inputs run.
        with_metrics: compute the metrics of `captum_sscam.apps.scores`.
        metric_step: the fraction of the pixels deleted or inserted per step of the
            deletion and insertion curves.
        batch_size: perturbed images per forward pass of the metrics
            (default `captum_sscam.apps.methods.DEFAULT_BATCH_SIZE`).
        progress: show a progress bar over the photos and methods.
    """
    if targets is not None and len(targets) != len(photos):
        raise ValueError(f"{len(targets)} targets for {len(photos)} photos; give one per photo.")
    model = model.to(device).eval()
    predictions, chosen = [], []
    maps: dict[str, list[Tensor]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    values: dict[str, dict[str, list[float]]] = {name: {} for name in methods}
    any_boxes = any(photo.boxes for photo in photos)
    keys = [key for key, metric in METRICS.items() if any_boxes or not metric.needs_boxes]
    bar = tqdm(total=len(photos) * len(methods), desc="maps", disable=not progress, unit="map")
    for index, photo in enumerate(photos):
        inputs = preprocess(photo_tensor(photo)[None]).to(device)
        prediction = top_prediction(model, inputs, class_names)
        predictions.append(prediction)
        chosen.append(prediction.index if targets is None else int(targets[index]))
        target = torch.tensor(chosen[-1:], device=inputs.device)
        for name, explain in methods.items():
            start = time.perf_counter()
            photo_maps = explain(inputs, target)
            if photo_maps.device.type == "cuda":
                torch.cuda.synchronize(photo_maps.device)
            seconds[name] += time.perf_counter() - start
            maps[name].append(photo_maps.detach().cpu())
            if with_metrics:
                scores = metric_values(
                    model, inputs, photo_maps, target, [photo.boxes], step=metric_step,
                    max_examples_per_batch=batch_size or DEFAULT_BATCH_SIZE,
                )  # fmt: skip
                for key in keys:  # NaN: a localisation metric on a photo without boxes
                    value = scores.values.get(key, [float("nan")])[0]
                    values[name].setdefault(key, []).append(value)
            bar.update()
    bar.close()
    runs = [MethodRun(name, torch.cat(maps[name]), seconds[name], values[name]) for name in methods]
    return Comparison(list(photos), predictions, chosen, class_names, runs)


def png_bytes(figure: object) -> bytes:
    """A matplotlib figure saved as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def overlay_png(maps: Tensor, photo: Photo, *, colorbar: bool = True) -> bytes:
    """One photo's overlay as PNG bytes, at 100 dpi: the photo's size (at least
    224 pixels wide), plus a colour bar under it when ``colorbar``."""
    height, width = photo.image.shape[:2]
    scale = max(1.0, 224 / width)
    size = (width * scale / 100, height * scale / 100 + (0.5 if colorbar else 0.0))
    figure, _ = overlay(maps, photo.image, fig_size=size, show_colorbar=colorbar)
    return png_bytes(figure)


def write_report(
    comparison: Comparison,
    out_dir: str | Path,
    *,
    title: str = "Attribution methods compared",
    model_name: str = "",
) -> Path:
    """Write ``report.html`` and one ``<photo>_<method>.png`` overlay per cell (names slugged).

    Returns the path of the HTML file; it does not need the PNG files (its
    pictures are embedded), they are there for other uses.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[int, str], str] = {}
    for run in comparison.runs:
        for index, photo in enumerate(comparison.photos):
            png = overlay_png(run.maps[index : index + 1], photo)
            (out / f"{slug(photo.name)}_{slug(run.name)}.png").write_bytes(png)
            cells[index, run.name] = data_uri(png)
    originals = [data_uri(photo_png(photo)) for photo in comparison.photos]
    page = render_html(comparison, cells, originals, title=title, model_name=model_name)
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def photo_png(photo: Photo) -> bytes:
    """The photo itself as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo.image).save(buffer, format="PNG")
    return buffer.getvalue()


def slug(name: str) -> str:
    """``"SS-CAM"`` -> ``"ss-cam"``; ``"Integrated Gradients"`` -> ``"integrated-gradients"``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 6px; text-align: center; vertical-align: top; }
td img { display: block; width: 224px; height: auto; margin: 0 auto; }
.metrics { font-size: 0.8em; color: #444; margin-top: 4px; text-align: left; }
.note { color: #555; font-size: 0.9em; }
"""


def render_html(
    comparison: Comparison,
    cells: Mapping[tuple[int, str], str],
    originals: Sequence[str],
    *,
    title: str,
    model_name: str,
) -> str:
    """The report's HTML, pictures given as data URIs."""
    esc = html.escape
    count = len(comparison.photos)
    header = "".join(
        f"<th>{esc(run.name)}<br><span class='note'>{run.seconds:.2f} s "
        f"({run.seconds / count:.2f} s/image)</span></th>"
        for run in comparison.runs
    )
    rows = []
    for index, photo in enumerate(comparison.photos):
        prediction = comparison.predictions[index]
        target = comparison.targets[index]
        caption = (
            f"<b>{esc(photo.name)}</b><br>predicted: {esc(prediction.name)} "
            f"({prediction.probability:.1%})<br>explained: "
            f"{esc(class_name(comparison.class_names, target))} [{target}]"
        )
        cells_html = "".join(
            f"<td><img src='{cells[index, run.name]}' alt='{esc(run.name)} on {esc(photo.name)}'>"
            f"{metrics_html(run.metrics, index)}</td>"
            for run in comparison.runs
        )
        rows.append(
            f"<tr><td><img src='{originals[index]}' alt='{esc(photo.name)}'>{caption}</td>"
            f"{cells_html}</tr>"
        )
    notes = [*comparison.notes, COLOUR_SCALE_NOTE]
    notes_html = "".join(f"<p class='note'>{esc(note)}</p>" for note in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="note">{esc(environment_line(model_name))}</p>
{summary_html(comparison)}
<p class="note">Each image is shown as the model saw it: its short side resized to the
model's input size and the centre square cropped.</p>
<table>
<thead><tr><th>image</th>{header}</tr></thead>
<tbody>
{"".join(rows)}
</tbody></table>
{notes_html}
</body></html>
"""


def metric_heading(key: str) -> str:
    """What a metric is and its direction: ``"Deletion AUC (lower is better)"``."""
    return METRICS[key].heading if key in METRICS else key


def metrics_html(metrics: Mapping[str, Sequence[float]], index: int) -> str:
    """One cell's metric values, each with its label and direction, or nothing."""
    lines = [
        f"{html.escape(metric_heading(key))}: {format_value(values[index])}"
        for key, values in metrics.items()
    ]
    return f"<div class='metrics'>{'<br>'.join(lines)}</div>" if lines else ""


def summary_html(comparison: Comparison) -> str:
    """A table of each method's time and mean metric values."""
    keys = [key for key in METRICS if any(key in run.metrics for run in comparison.runs)]
    head = "".join(f"<th>mean {html.escape(metric_heading(key))}</th>" for key in keys)
    rows = "".join(
        f"<tr><td>{html.escape(run.name)}</td><td>{run.seconds:.2f}</td>"
        + "".join(f"<td>{format_value(mean(run.metrics.get(key, [])))}</td>" for key in keys)
        + "</tr>"
        for run in comparison.runs
    )
    return (
        f"<table class='summary'><thead><tr><th>method</th><th>time (s)</th>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table><br>"
    )


def mean(values: Sequence[float]) -> float:
    """The mean of the finite values (NaN when there are none)."""
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def format_value(value: float) -> str:
    """Three significant digits, or "n/a" for a missing value."""
    return f"{value:.3g}" if np.isfinite(value) else "n/a"


def environment_line(model_name: str) -> str:
    """Which model and which versions produced the report."""
    model = f"model: {model_name}; " if model_name else ""
    return (
        f"{model}torch {torch.__version__}, captum {captum.__version__}, "
        f"Python {platform.python_version()}"
    )


__all__ = [
    "Comparison",
    "MethodRun",
    "Prediction",
    "class_name",
    "compare",
    "mean",
    "overlay_png",
    "slug",
    "top_prediction",
    "write_report",
]
