"""Run several attribution methods on the same images and write a self-contained HTML report.

The report puts each method's overlay (drawn by :mod:`captum_sscam.visualization`)
side by side for every image, with the model's predicted class, the target that
was explained, each method's time and, when :mod:`captum_sscam.metrics` is
installed, its faithfulness and localisation values. Every picture is embedded
as a ``data:`` URI, so the single HTML file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import importlib
import importlib.util
import io
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import captum
import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerGradCam
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_sscam.attr import ScoreCAM, SmoothedScoreCAM
from captum_sscam.data import Photo
from captum_sscam.visualization import overlay, upsample_map

AttributionFn = Callable[[Tensor, Tensor], Tensor]
"""``(inputs, targets) -> (N, 1, h, w)`` maps, at any resolution."""

PER_EXAMPLE_METRICS = ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence")
"""Functions of :mod:`captum_sscam.metrics` called as ``f(model, inputs, maps, target=...)``."""

BOX_METRICS = ("energy_pointing_game", "pointing_game")
"""Functions of :mod:`captum_sscam.metrics` called as ``f(maps, boxes)`` on photos with boxes."""


@dataclass(frozen=True)
class Prediction:
    """The model's top class for one image."""

    index: int
    name: str
    probability: float


@dataclass
class MethodRun:
    """One method's maps for all images, its wall time and its metric values."""

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


def attribution_methods(
    model: nn.Module,
    layer: nn.Module,
    *,
    nt_samples: int = 35,
    stdevs: float = 2.0,
    noise_on: str = "mask",
    score_mode: str = "probability",
    ig_steps: int = 32,
    perturbations_per_eval: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[str, AttributionFn]:
    """The four methods the report compares, by display name.

    Integrated Gradients (Captum, zero baseline, ``ig_steps`` steps; its
    ``(N, C, H, W)`` result is summed over channels), Grad-CAM (Captum's
    ``LayerGradCam`` on ``layer``), Score-CAM and SS-CAM (``nt_samples`` noise
    samples of standard deviation ``stdevs`` on ``noise_on``, seeded by ``seed``),
    both in ``score_mode``.
    """

    def integrated_gradients(inputs: Tensor, targets: Tensor) -> Tensor:
        attribution = IntegratedGradients(model).attribute(inputs, target=targets, n_steps=ig_steps)
        return attribution.sum(dim=1, keepdim=True).detach()

    def grad_cam(inputs: Tensor, targets: Tensor) -> Tensor:
        return LayerGradCam(model, layer).attribute(inputs, target=targets).detach()

    def score_cam(inputs: Tensor, targets: Tensor) -> Tensor:
        return ScoreCAM(model, layer).attribute(
            inputs,
            target=targets,
            score_mode=score_mode,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
        )

    def ss_cam(inputs: Tensor, targets: Tensor) -> Tensor:
        generator = torch.Generator(inputs.device).manual_seed(seed)
        return SmoothedScoreCAM(model, layer).attribute(
            inputs,
            target=targets,
            nt_samples=nt_samples,
            stdevs=stdevs,
            noise_on=noise_on,
            score_mode=score_mode,
            perturbations_per_eval=perturbations_per_eval,
            generator=generator,
            show_progress=show_progress,
        )

    return {
        IntegratedGradients.get_name(): integrated_gradients,
        "Grad-CAM": grad_cam,
        ScoreCAM.get_name(): score_cam,
        SmoothedScoreCAM.get_name(): ss_cam,
    }


@torch.no_grad()
def top_predictions(
    model: nn.Module, inputs: Tensor, class_names: Sequence[str]
) -> list[Prediction]:
    """Each example's most probable class (softmax over the model's outputs)."""
    probabilities = model(inputs).softmax(dim=1)
    best, indices = probabilities.max(dim=1)
    return [
        Prediction(int(index), class_name(class_names, int(index)), float(probability))
        for probability, index in zip(best.tolist(), indices.tolist(), strict=True)
    ]


def class_name(class_names: Sequence[str], index: int) -> str:
    """The name of class ``index``, or ``"class <index>"`` when there is none."""
    return class_names[index] if 0 <= index < len(class_names) else f"class {index}"


def metrics_module() -> object | None:
    """:mod:`captum_sscam.metrics` when it is installed, else None.

    Only a missing module is tolerated: an error inside an installed metrics
    module is raised, not hidden.
    """
    if importlib.util.find_spec("captum_sscam.metrics") is None:
        return None
    return importlib.import_module("captum_sscam.metrics")


def metric_values(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: Tensor,
    boxes: Sequence[Sequence[tuple[float, float, float, float]]],
    metrics: object,
) -> dict[str, list[float]]:
    """The metrics of :mod:`captum_sscam.metrics` for one method's maps.

    Per-example metrics get the maps as they are; box metrics get them
    upsampled to the input and only for photos with boxes (NaN elsewhere).
    """
    values: dict[str, list[float]] = {}
    for name in PER_EXAMPLE_METRICS:
        function = getattr(metrics, name, None)
        if function is not None:
            values[name] = function(model, inputs, maps, target=targets).tolist()
    with_boxes = [index for index, photo_boxes in enumerate(boxes) if photo_boxes]
    if with_boxes:
        upsampled = upsample_map(maps, tuple(inputs.shape[-2:]))[with_boxes]
        for name in BOX_METRICS:
            function = getattr(metrics, name, None)
            if function is None:
                continue
            scores = function(upsampled, [boxes[index] for index in with_boxes]).tolist()
            column = [float("nan")] * len(boxes)
            for index, score in zip(with_boxes, scores, strict=True):
                column[index] = score
            values[name] = column
    return values


def compare(
    model: nn.Module,
    photos: Sequence[Photo],
    preprocess: Callable[[Tensor], Tensor],
    methods: Mapping[str, AttributionFn],
    *,
    class_names: Sequence[str] = (),
    targets: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    with_metrics: bool = True,
    progress: bool = True,
) -> Comparison:
    """Run every method on all photos (one batch) and time it.

    Args:
        model: the classifier, in eval mode.
        photos: photos already at the model's input size (see
            :func:`captum_sscam.data.resize_photo`).
        preprocess: uint8 ``(N, H, W, 3)`` tensor -> model input ``(N, C, H, W)``.
        methods: display name -> ``(inputs, targets) -> maps``, e.g. from
            :func:`attribution_methods`.
        class_names: names of the model's classes, for the report.
        targets: the class to explain per photo; default the top class.
        device: where the model and inputs run.
        with_metrics: compute :mod:`captum_sscam.metrics` values when installed.
        progress: show a progress bar over the methods.
    """
    model = model.to(device).eval()
    pixels = torch.stack([torch.from_numpy(np.array(photo.image, copy=True)) for photo in photos])
    inputs = preprocess(pixels).to(device)
    predictions = top_predictions(model, inputs, class_names)
    chosen = [p.index for p in predictions] if targets is None else [int(t) for t in targets]
    if len(chosen) != len(photos):
        raise ValueError(f"{len(chosen)} targets for {len(photos)} photos; give one per photo.")
    target_tensor = torch.tensor(chosen, device=inputs.device)
    metrics = metrics_module() if with_metrics else None
    notes = [] if metrics is not None or not with_metrics else [NO_METRICS_NOTE]
    runs = []
    for name, method in tqdm(methods.items(), desc="methods", disable=not progress, unit="method"):
        start = time.perf_counter()
        maps = method(inputs, target_tensor)
        if maps.device.type == "cuda":
            torch.cuda.synchronize(maps.device)
        run = MethodRun(name, maps.detach().cpu(), time.perf_counter() - start)
        if metrics is not None:
            boxes = [photo.boxes for photo in photos]
            run.metrics = metric_values(model, inputs, maps, target_tensor, boxes, metrics)
        runs.append(run)
    return Comparison(list(photos), predictions, chosen, class_names, runs, notes)


NO_METRICS_NOTE = (
    "Metric values are not shown: captum_sscam.metrics is not installed in this environment."
)


def png_bytes(figure: object) -> bytes:
    """A matplotlib figure saved as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def overlay_png(maps: Tensor, photo: Photo) -> bytes:
    """One photo's overlay as PNG bytes, the size of the photo (at 100 dpi)."""
    height, width = photo.image.shape[:2]
    figure, _ = overlay(maps, photo.image, fig_size=(width / 100, height / 100))
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
.metrics { font-size: 0.8em; color: #444; margin-top: 4px; }
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
    notes = "".join(f"<p class='note'>{esc(note)}</p>" for note in comparison.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="note">{esc(environment_line(model_name))}</p>
{summary_html(comparison)}
<table>
<thead><tr><th>image</th>{header}</tr></thead>
<tbody>
{"".join(rows)}
</tbody></table>
{notes}
</body></html>
"""


def metrics_html(metrics: Mapping[str, Sequence[float]], index: int) -> str:
    """One cell's metric values, or nothing."""
    lines = [
        f"{html.escape(name)}: {format_value(values[index])}" for name, values in metrics.items()
    ]
    return f"<div class='metrics'>{'<br>'.join(lines)}</div>" if lines else ""


def summary_html(comparison: Comparison) -> str:
    """A table of each method's time and mean metric values."""
    names = sorted({name for run in comparison.runs for name in run.metrics})
    head = "".join(f"<th>mean {html.escape(name)}</th>" for name in names)
    rows = "".join(
        f"<tr><td>{html.escape(run.name)}</td><td>{run.seconds:.2f}</td>"
        + "".join(f"<td>{format_value(mean(run.metrics.get(name, [])))}</td>" for name in names)
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
    "attribution_methods",
    "compare",
    "top_predictions",
    "write_report",
]
