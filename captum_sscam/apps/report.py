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

With a `SanityCheck` (``captum-sscam compare --sanity``) the report also shows, per
image, each method's cascading model randomisation (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018; `captum_sscam.metrics.model_randomisation`): the map on the
model, then after re-initialising its modules from the output side down, and the curve of
each map's rank correlation with the original.
"""

from __future__ import annotations

import base64
import html
import io
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import captum
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_sscam.apps.data import Photo, photo_tensor
from captum_sscam.apps.methods import DEFAULT_BATCH_SIZE, Explain, Options, get_method
from captum_sscam.apps.scores import METRICS, metric_values
from captum_sscam.metrics import Randomisation, model_randomisation, randomisation_layers
from captum_sscam.visualization import method_grid, overlay

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
    (metric key of `captum_sscam.apps.scores.METRICS` -> one value per image); with a
    sanity check, its randomisation per image (maps on the CPU) and the time it took."""

    name: str
    maps: Tensor
    seconds: float
    metrics: dict[str, list[float]] = field(default_factory=dict)
    sanity: list[Randomisation] = field(default_factory=list)
    sanity_seconds: float = 0.0


@dataclass(frozen=True)
class SanityCheck:
    """What `compare` randomises: per method (display name) a function that builds its
    explain function for a copy of the model, and the modules to re-initialise (names in
    the model, output side first), cumulatively."""

    explainers: Mapping[str, Callable[[nn.Module], Explain]]
    layers: Sequence[str]
    total_layers: int  # how many parameterised blocks the model has (the report says so)


def sanity_check(
    keys: Sequence[str],
    model: nn.Module,
    layer: nn.Module | None,
    options: Options | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    steps: int | None = None,
) -> SanityCheck:
    """The `SanityCheck` of the registry's methods ``keys``: each builds its explain function
    on a model copy with the copy's module of ``layer``'s name; the first ``steps`` of the
    model's parameterised blocks (`captum_sscam.metrics.randomisation_layers`; all when
    ``None``) are randomised."""
    layer_name = None
    if layer is not None:
        layer_name = next(name for name, module in model.named_modules() if module is layer)

    def explainer(key: str) -> Callable[[nn.Module], Explain]:
        method = get_method(key)

        def build(copy: nn.Module) -> Explain:
            copy_layer = copy.get_submodule(layer_name) if layer_name is not None else None
            return method.explain(copy, copy_layer, options, reshape_transform)

        return build

    blocks = randomisation_layers(model)
    return SanityCheck(
        {get_method(key).name: explainer(key) for key in keys},
        blocks if steps is None else blocks[:steps],
        len(blocks),
    )


class _Explained:
    """An explain function as an attribution (``attribute``), for `model_randomisation`."""

    def __init__(self, explain: Explain) -> None:
        self.explain = explain

    def attribute(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.explain(inputs, target)


@dataclass
class Comparison:
    """Everything the report shows."""

    photos: list[Photo]
    predictions: list[Prediction]
    targets: list[int]
    class_names: Sequence[str]
    runs: list[MethodRun]
    notes: list[str] = field(default_factory=list)
    sanity: SanityCheck | None = None


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
    sanity: SanityCheck | None = None,
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
        sanity: also run the cascading model randomisation of the methods it names on
            every photo (`captum_sscam.metrics.model_randomisation`, from the map just
            drawn: one attribution per randomised module; the model is not touched).
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
    sanity_seconds = dict.fromkeys(methods, 0.0)
    randomisations: dict[str, list[Randomisation]] = {name: [] for name in methods}
    checked = [name for name in methods if sanity is not None and name in sanity.explainers]
    steps = len(sanity.layers) if sanity is not None else 0
    total = len(photos) * (len(methods) + len(checked) * steps)
    bar = tqdm(total=total, desc="maps", disable=not progress, unit="map")
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
            if sanity is not None and name in checked:
                start = time.perf_counter()
                randomisations[name].append(
                    _randomised(model, sanity, name, inputs, target, photo_maps)
                )
                sanity_seconds[name] += time.perf_counter() - start
                bar.update(steps)
    bar.close()
    runs = [
        MethodRun(
            name, torch.cat(maps[name]), seconds[name], values[name], randomisations[name],
            sanity_seconds[name],
        )
        for name in methods
    ]
    return Comparison(list(photos), predictions, chosen, class_names, runs, sanity=sanity)


def _randomised(
    model: nn.Module,
    sanity: SanityCheck,
    name: str,
    inputs: Tensor,
    target: Tensor,
    original: Tensor,
) -> Randomisation:
    """One photo's cascading randomisation for the method ``name``, maps on the CPU."""
    build = sanity.explainers[name]
    result = model_randomisation(
        model, lambda copy: _Explained(build(copy)), inputs, target, layers=sanity.layers,
        return_maps=True, show_progress=False, original=original,
    )  # fmt: skip
    return replace(result, maps=_on_cpu(result.maps), original=_on_cpu(result.original))


def _on_cpu(maps: Tensor | None) -> Tensor | None:
    return None if maps is None else maps.cpu()


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
    """Write ``report.html`` and one ``<photo>_<method>.png`` overlay per cell (names slugged);
    with a sanity check also ``<photo>_sanity.png`` (the randomisation strips) and
    ``<photo>_sanity_curve.png`` (the correlation curves).

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
    sanity: dict[int, tuple[str, str]] = {}
    if any(run.sanity for run in comparison.runs):
        for index, photo in enumerate(comparison.photos):
            strip, curve = sanity_strip_png(comparison, index), sanity_curve_png(comparison, index)
            (out / f"{slug(photo.name)}_sanity.png").write_bytes(strip)
            (out / f"{slug(photo.name)}_sanity_curve.png").write_bytes(curve)
            sanity[index] = (data_uri(strip), data_uri(curve))
    page = render_html(
        comparison, cells, originals, title=title, model_name=model_name, sanity=sanity
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def sanity_runs(comparison: Comparison) -> list[MethodRun]:
    """The runs that were randomised."""
    return [run for run in comparison.runs if run.sanity]


def step_label(layer: str) -> str:
    return f"+ {layer}"


def correlation_label(randomisation: Randomisation, step: int) -> str:
    """``"rho 0.93"``, or why the correlation is undefined (never a bare NaN)."""
    if bool(randomisation.original_constant[0]):
        return "rho undefined: the original map is constant"
    if bool(randomisation.constant[step, 0]):
        return "constant map: rho undefined"
    return f"rho {float(randomisation.spearman[step, 0]):.2f}"


def sanity_strip_png(comparison: Comparison, index: int) -> bytes:
    """One photo's randomisation strips: a row per method, the original map then the map
    after each cumulative step, each titled with its rank correlation with the original."""
    runs = sanity_runs(comparison)
    layers = runs[0].sanity[index].layers
    columns = {"original": [run.sanity[index].original for run in runs]}
    for step, layer in enumerate(layers):
        maps = [run.sanity[index].maps for run in runs]
        columns[step_label(layer)] = [m[step] if m is not None else None for m in maps]
    photo = comparison.photos[index]
    figure = method_grid(
        [photo.image] * len(runs), columns, row_titles=[run.name for run in runs], cell_size=1.6
    )
    width = len(columns) + 1
    for row, run in enumerate(runs):
        for step, layer in enumerate(layers):
            axes = figure.axes[row * width + step + 2]
            note = axes.get_title().partition("\n")[2]
            label = correlation_label(run.sanity[index], step)
            axes.set_title(f"{step_label(layer)}\n{label}{' ' + note if note else ''}", fontsize=7)
    figure.tight_layout()
    return png_bytes(figure)


def sanity_curve(
    curves: Mapping[str, Sequence[float]], constant: Mapping[str, Sequence[bool]],
    layers: Sequence[str], title: str = "",
) -> Figure:
    """Spearman's rho with the original map after each cumulative step, one line per method;
    a step whose map became constant (rho undefined) is marked with an x on the bottom line."""
    figure = Figure(figsize=(3.4 + 0.45 * len(layers), 3.6))
    axes = figure.subplots()
    steps = np.arange(len(layers) + 1)
    marked = False
    for name, values in curves.items():
        (line,) = axes.plot(steps, [1.0, *values], marker="o", markersize=3, label=name)
        flat = [step + 1 for step, flag in enumerate(constant[name]) if flag]
        if flat:
            axes.plot(flat, [-1.1] * len(flat), "x", color=line.get_color(),
                      label=None if marked else "constant map (rho undefined)")  # fmt: skip
            marked = True
    axes.set_xticks(steps, ["original", *(step_label(layer) for layer in layers)], rotation=60,
                    ha="right", fontsize=7)  # fmt: skip
    axes.set_ylim(-1.2, 1.05)
    axes.axhline(0.0, color="#999", linewidth=0.5)
    axes.set_ylabel("Spearman rho with the original map", fontsize=8)
    axes.set_title(title or "cascading randomisation, output side first", fontsize=9)
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    return figure


def sanity_curve_png(comparison: Comparison, index: int) -> bytes:
    """One photo's correlation curves (`sanity_curve`)."""
    runs = sanity_runs(comparison)
    results = {run.name: run.sanity[index] for run in runs}
    undefined = {
        name: (result.constant[:, 0] | result.original_constant[0]).tolist()
        for name, result in results.items()
    }
    figure = sanity_curve(
        {name: result.spearman[:, 0].tolist() for name, result in results.items()},
        undefined,
        runs[0].sanity[index].layers,
        title=comparison.photos[index].name,
    )
    return png_bytes(figure)


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
img.sanity { display: block; max-width: 100%; height: auto; margin: 0.5em 0; }
"""


def render_html(
    comparison: Comparison,
    cells: Mapping[tuple[int, str], str],
    originals: Sequence[str],
    *,
    title: str,
    model_name: str,
    sanity: Mapping[int, tuple[str, str]] | None = None,
) -> str:
    """The report's HTML, pictures given as data URIs (``sanity``: per photo, its
    randomisation strips and its correlation curves)."""
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
{sanity_html(comparison, sanity or {})}
{notes_html}
</body></html>
"""


SANITY_NOTE = (
    "Cascading model randomisation (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS "
    "2018): each row is a method's map on the model, then after re-initialising the modules "
    "named above the columns, cumulatively from the output side down (PyTorch's own "
    "initialisation, seeded; the model itself is untouched). rho: Spearman's rank correlation "
    "of the map with the original, at the map's own resolution; undefined where the map "
    "became constant. A map that keeps rho near 1 while the weights are destroyed does not "
    "depend on what the model learned."
)


def sanity_html(comparison: Comparison, pictures: Mapping[int, tuple[str, str]]) -> str:
    """The sanity-check section: the note, then each photo's strips and curves."""
    runs = sanity_runs(comparison)
    if not runs or not pictures or comparison.sanity is None:
        return ""
    esc = html.escape
    layers, total = comparison.sanity.layers, comparison.sanity.total_layers
    seconds = ", ".join(f"{esc(run.name)} {run.sanity_seconds:.1f} s" for run in runs)
    blocks = "".join(
        f"<h3>{esc(photo.name)}</h3><img class='sanity' src='{pictures[index][0]}' "
        f"alt='randomisation strips on {esc(photo.name)}'><img class='sanity' "
        f"src='{pictures[index][1]}' alt='correlation curves on {esc(photo.name)}'>"
        for index, photo in enumerate(comparison.photos)
    )
    return (
        f"<h2>Sanity check: cascading model randomisation</h2><p class='note'>"
        f"{esc(SANITY_NOTE)} Randomised: {len(layers)} of the model's {total} parameterised "
        f"blocks ({esc(', '.join(layers))}). Time: {seconds}.</p>{blocks}"
    )


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
