"""The papers' evaluation over a dataset, in one process or under ``torchrun``.

Every image of a `torch.utils.data.Dataset` (or an image folder) is
explained by each method and scored by `captum_sscam.metrics`. Results
are appended to ``part-<rank>.jsonl`` in the output folder as each image
finishes, so an interrupted run started again with the same folder resumes
where it stopped (finished ``(image name, method)`` pairs are skipped; keep the
metric settings of a folder fixed). Under
``torchrun`` each rank takes a shard (`torch.utils.data.DistributedSampler`,
gloo on CPU, nccl on GPUs), results are gathered and rank 0 writes
``results.jsonl`` and ``table.md``. The command line's ``evaluate``
(`captum_sscam.apps.cli`) runs it on an image folder with the bundled
EfficientNet-Lite0::

    captum-sscam evaluate IMAGES --out runs/photos
    torchrun --nproc_per_node 4 -m captum_sscam evaluate IMAGES --out runs/photos

The methods are those of `captum_sscam.apps.methods.METHODS` (``--methods``
takes their keys) and the metrics those of `captum_sscam.apps.scores.METRICS`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from captum_sscam.apps.data import Photo, center_crop_photo, image_files, photo_tensor, read_image
from captum_sscam.apps.methods import Explain
from captum_sscam.apps.models import lite0_preprocess
from captum_sscam.apps.scores import METRICS, metric_values


@dataclass(frozen=True)
class Sample:
    """One model-ready ``(C, H, W)`` image, its class (``None``: the model's top
    class) and object boxes ``(x1, y1, x2, y2)`` in its pixels (none: no
    localisation metrics)."""

    image: Tensor
    target: int | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = field(default=())
    name: str = ""


class ImageFolder(Dataset):
    """Every image file under ``root`` (recursive, sorted; the endings of
    `captum_sscam.apps.data.IMAGE_EXTENSIONS`), as the bundled
    EfficientNet-Lite0 sees it: short side resized to ``size``, centre crop,
    Lite0's normalisation. Each sample is named by its path in ``root``."""

    def __init__(self, root: str | Path, size: int = 224) -> None:
        self.root = Path(root)
        self.size = size
        self.paths = [path for path, _ in image_files([self.root])]

    def __len__(self) -> int:
        return len(self.paths)

    def sample_names(self) -> list[str]:
        return [str(path.relative_to(self.root)) for path in self.paths]

    def __getitem__(self, index: int) -> Sample:
        photo: Photo = read_image(self.paths[index])[0]
        image = lite0_preprocess(photo_tensor(center_crop_photo(photo, self.size)))[0]
        return Sample(image, name=str(self.paths[index].relative_to(self.root)))


def evaluate(
    model: Callable[..., Tensor],
    methods: Mapping[str, Explain],
    dataset: Dataset | Sequence[Sample],
    out_dir: str | Path,
    step: float = 0.01,
    max_examples_per_batch: int | None = 64,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Explain and score every image; returns all records (rank 0) or ``[]``.

    Each record holds ``index`` (position in ``dataset``), ``name`` (which
    identifies the image when resuming: names must be unique), ``method``,
    ``target``, ``seconds`` (time of the attribution alone) and one value per
    metric: deletion (zeros substrate) and insertion (blur substrate) AUC at
    ``step`` (with the curves: ``fractions``, ``deletion_curve``,
    ``insertion_curve``), Average Drop and Increase in Confidence (in %, softmax
    probability), and, for samples with boxes, the energy pointing game and the
    pointing game (15 px tolerance). Runs distributed when a process group is
    initialised; every rank must call it with the same arguments.
    """
    out_dir = Path(out_dir)
    rank, world_size = _rank_and_world_size()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    _barrier(world_size)
    done = read_records(out_dir)
    _barrier(world_size)  # every rank has read before any rank appends
    names = _sample_names(dataset)
    done = [r for r in done if r.get("step") == step]  # another step size is another metric
    finished = {(r["name"], r["method"]) for r in done}
    pending = [i for i, name in enumerate(names) if any((name, m) not in finished for m in methods)]
    shard = list(DistributedSampler(pending, world_size, rank, shuffle=False))
    device = _device_of(model)
    new_records: list[dict[str, Any]] = []
    part_path = out_dir / f"part-{rank}.jsonl"
    with part_path.open("a") as part:
        if part_path.stat().st_size and not part_path.read_bytes().endswith(b"\n"):
            part.write("\n")  # end a line cut short by an interruption
        bar = tqdm(shard, desc=f"rank {rank}", unit="image", disable=not progress)
        for position in bar:
            index = pending[position]
            sample = _as_sample(dataset[index])
            todo = {m: f for m, f in methods.items() if (names[index], m) not in finished}
            for record in _evaluate_sample(
                model, todo, sample, index, names[index], device, step, max_examples_per_batch
            ):
                part.write(json.dumps(record) + "\n")
                part.flush()
                new_records.append(record)
    gathered = _gather(new_records, rank, world_size)
    if rank != 0:
        return []
    records = _merge(done + gathered, names, list(methods))
    with (out_dir / "results.jsonl").open("w") as merged:
        merged.writelines(json.dumps(record) + "\n" for record in records)
    (out_dir / "table.md").write_text(format_table(records, list(methods)) + "\n")
    return records


def read_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """Records of earlier runs in ``out_dir`` (a line cut short by an interruption is skipped)."""
    records = []
    for path in sorted(Path(out_dir).glob("part-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def summarise(records: Iterable[Mapping[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per method: ``{"method", "images", "seconds", metric: (mean, std, n)}``."""
    rows = []
    for method in methods:
        rows_of = [r for r in records if r["method"] == method]
        row: dict[str, Any] = {"method": method, "images": len(rows_of)}
        row["seconds"] = _mean_std([r["seconds"] for r in rows_of])
        for metric in METRICS:
            row[metric] = _mean_std([r[metric] for r in rows_of if metric in r])
        rows.append(row)
    return rows


def format_table(records: Iterable[Mapping[str, Any]], methods: Sequence[str]) -> str:
    """A Markdown table: each metric's mean ± standard deviation (n images)."""
    rows = summarise(records, methods)
    header = ["Method", *(f"{m.label} {m.arrow}" for m in METRICS.values()), "Seconds / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"]] + [_cell(row[m], 3) for m in METRICS] + [_cell(row["seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(stats: tuple[float, float, int], digits: int) -> str:
    mean, std, n = stats
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    if not values:
        return (math.nan, math.nan, 0)
    array = np.asarray(values, dtype=float)
    return (float(array.mean()), float(array.std()), len(values))


def _evaluate_sample(
    model: Callable[..., Tensor],
    methods: Mapping[str, Explain],
    sample: Sample,
    index: int,
    name: str,
    device: torch.device,
    step: float,
    max_examples_per_batch: int | None,
) -> Iterable[dict[str, Any]]:
    images = sample.image.unsqueeze(0).to(device)
    if sample.target is None:
        with torch.no_grad():
            target = int(model(images).argmax(dim=1)[0])
    else:
        target = int(sample.target)
    targets = torch.tensor([target], device=device)
    for method, explain in methods.items():
        start = time.perf_counter()
        attributions = explain(images, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        scores = metric_values(
            model, images, attributions.detach(), targets, [sample.boxes], step=step,
            max_examples_per_batch=max_examples_per_batch,
        )  # fmt: skip
        yield {
            "index": index,
            "name": name,
            "method": method,
            "target": target,
            "seconds": seconds,
            "step": step,
            **{key: values[0] for key, values in scores.values.items()},
            "fractions": scores.deletion.fractions.tolist(),
            "deletion_curve": scores.deletion.scores[0].tolist(),
            "insertion_curve": scores.insertion.scores[0].tolist(),
        }


def _as_sample(item: Any) -> Sample:
    if isinstance(item, Sample):
        return item
    if isinstance(item, Tensor):
        return Sample(item)
    if isinstance(item, Mapping):
        return Sample(
            item["image"], item.get("target"), tuple(item.get("boxes", ())), item.get("name", "")
        )
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Tensor):
        target = item[1]
        return Sample(item[0], int(target) if target is not None else None)
    raise TypeError(
        "dataset items must be a Sample, a (C, H, W) image tensor, an (image, target) "
        f"pair or a dict with 'image' (and 'target', 'boxes', 'name'); got {type(item).__name__}."
    )


def _merge(
    records: Iterable[dict[str, Any]], names: Sequence[str], methods: Sequence[str]
) -> list[dict[str, Any]]:
    """One record per image of ``names`` and method, in dataset order (DistributedSampler
    pads shards with repeats; the folder may hold images of earlier runs)."""
    position = {name: i for i, name in enumerate(names)}
    order = {m: i for i, m in enumerate(methods)}
    unique = {
        (r["name"], r["method"]): {**r, "index": position[r["name"]]}
        for r in records
        if r["method"] in order and r["name"] in position
    }
    return sorted(unique.values(), key=lambda r: (r["index"], order[r["method"]]))


def _sample_names(dataset: Dataset | Sequence[Sample]) -> list[str]:
    """Each image's name, which identifies its records across runs (must be unique).

    Uses ``dataset.sample_names()`` when the dataset has it (``ImageFolder`` does);
    otherwise loads every item once for its ``name`` (its index when unnamed).
    """
    if hasattr(dataset, "sample_names"):
        names = list(dataset.sample_names())
    else:
        names = [_as_sample(dataset[i]).name or str(i) for i in range(len(dataset))]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"sample names must be unique (they key the saved results); repeated: {duplicates[:5]}."
        )
    return names


def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def _gather(records: list[dict[str, Any]], rank: int, world_size: int) -> list[dict[str, Any]]:
    if world_size == 1:
        return records
    gathered: list[list[dict[str, Any]]] | None = (
        [[] for _ in range(world_size)] if rank == 0 else None
    )
    dist.gather_object(records, gathered, dst=0)
    return [record for part in gathered or [] for record in part]


def _device_of(model: Callable[..., Tensor]) -> torch.device:
    if isinstance(model, nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


def init_distributed() -> torch.device:
    """Join the ``torchrun`` process group when there is one; the device to use.

    nccl and ``cuda:LOCAL_RANK`` when CUDA is available, gloo and CPU otherwise.
    """
    cuda = torch.cuda.is_available()
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device
