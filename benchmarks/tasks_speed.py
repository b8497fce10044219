"""Speed of a Score-CAM call with the task targets: a segmentation model and a detector.

Does the engine keep its speed when the model returns a dict (segmentation) or a list of dicts
(detection) and a callable target scores it? Per model, in one warm process (one untimed call
first), ``--repeats`` turns of:

- the call: ``ScoreCAM(model, layer).attribute(image, target=..., top_k_channels=K)`` with the
  default options (``channels_last=None``: the faster memory format, timed on real batches,
  which needs 4 full batches: K = 128 makes 4 of the default 32 on a CPU);
- the bare forwards of its masked passes: the very batches the call's masked forwards got
  (recorded by a forward pre-hook in the untimed call: a detector's cost depends on the
  content, through the proposals that survive), through the model alone, in each memory
  format; the faster format's time.

"x bare" is the call's median time over the bare forwards' median: what the engine adds to
the forwards it has to make (the capture forward, masks, masked inputs, the target, the map).
"target" is the time spent inside the target callable during a call (its median).

Models (torchvision, random weights, seed 0: the cost does not depend on the weights'
values, except a detector's through its proposals):

- ``lraspp_mobilenet_v3_large`` at ``--size`` px, target
  ``SegmentationRegion(8, box=...)`` (VOC's cat, over the centre half), layer
  ``backbone["16"]`` (960 channels);
- ``fasterrcnn_mobilenet_v3_large_320_fpn`` (``box_score_thresh=0``, the other thresholds
  torchvision's: with random weights every class scores about 1/91; images resized to 320 px
  inside), target ``DetectionBox`` of the first detection on the photo, layer
  ``backbone.body["16"]``. Its forward cost varies with the number of proposals, so it is
  measured on one fixed image, the bundled photo ``--photo`` (default chelsea).

Run (hold the shared lock; about 2 minutes on 2 shared cores with one torch thread):

    flock /tmp/captum_sscam_heavy.lock env OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python \\
        benchmarks/tasks_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from _common import machine_header, photos, timed
from torch import Tensor, nn

from captum_sscam import DetectionBox, ExampleTarget, ScoreCAM, SegmentationRegion
from captum_sscam.apps.data import photo_tensor, resize_photo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=["segmentation", "detection"],
                        default=["segmentation", "detection"])  # fmt: skip
    parser.add_argument("--top-k", type=int, default=128, help="top_k_channels (default 128)")
    parser.add_argument("--size", type=int, default=224, help="image side in px (default 224)")
    parser.add_argument("--photo", default="chelsea", help="a bundled photo (default chelsea)")
    parser.add_argument("--repeats", type=int, default=3, help="turns (default 3)")
    return parser


@dataclass(frozen=True)
class Task:
    name: str
    model: nn.Module
    layer: nn.Module
    target: ExampleTarget
    description: str


class TimedTarget(ExampleTarget):
    """``target`` with the seconds spent inside it added up."""

    def __init__(self, target: ExampleTarget) -> None:
        self.target, self.seconds = target, 0.0

    def __call__(self, output: Any, examples: Tensor) -> Tensor:
        start = time.perf_counter()
        scores = self.target(output, examples)
        self.seconds += time.perf_counter() - start
        return scores


def segmentation(image: Tensor) -> Task:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    size = image.shape[-1]
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    return Task(
        "lraspp_mobilenet_v3_large", model, model.backbone["16"],
        SegmentationRegion(8, box=box), f"SegmentationRegion(8, box={box})",
    )  # fmt: skip


def detection(image: Tensor) -> Task:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0
    ).eval()
    with torch.no_grad():
        found = model(image)[0]
    box, label = found["boxes"][0], int(found["labels"][0])
    described = f"DetectionBox(first of {len(found['boxes'])} detections, label {label})"
    return Task(
        "fasterrcnn_mobilenet_v3_large_320_fpn", model, model.backbone.body["16"],
        DetectionBox(box, label), described,
    )  # fmt: skip


def recorded_batches(task: Task, image: Tensor, top_k: int) -> list[Tensor]:
    """The call's masked batches (copies), from an untimed call."""
    batches: list[Tensor] = []

    def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
        batches.append(args[0].detach().clone().contiguous())

    handle = task.model.register_forward_pre_hook(record)
    try:
        ScoreCAM(task.model, task.layer).attribute(image, target=task.target, top_k_channels=top_k)
    finally:
        handle.remove()
    return batches[1:]  # batches[0]: the capture forward


def bare_seconds(model: nn.Module, batches: list[Tensor]) -> float:
    """The batches through the model alone, in the faster memory format."""
    times = []
    for channels_last in (False, True):
        inputs = [
            b.contiguous(memory_format=torch.channels_last) if channels_last else b
            for b in batches
        ]

        def run(inputs: list[Tensor] = inputs) -> None:
            with torch.no_grad():
                for batch in inputs:
                    model(batch)

        times.append(timed(run, "cpu"))
    return min(times)


def measure(task: Task, image: Tensor, top_k: int, repeats: int) -> dict[str, Any]:
    batches = recorded_batches(task, image, top_k)  # also the untimed, warming call
    method = ScoreCAM(task.model, task.layer)
    calls, bares, targets = [], [], []
    for _ in range(repeats):
        target = TimedTarget(task.target)

        def call(target: TimedTarget = target) -> None:
            method.attribute(image, target=target, top_k_channels=top_k)

        calls.append(timed(call, "cpu"))
        targets.append(target.seconds)
        bares.append(bare_seconds(task.model, batches))
    call, bare = statistics.median(calls), statistics.median(bares)
    return {
        "model": task.name,
        "target": task.description,
        "forwards": sum(len(b) for b in batches),
        "call": call,
        "bare": bare,
        "ratio": call / bare,
        "target_s": statistics.median(targets),
        "calls": calls,
        "bares": bares,
    }


def main() -> None:
    args = build_parser().parse_args()
    photo = photos()[args.photo]
    image = photo_tensor(resize_photo(photo, args.size)).permute(2, 0, 1)[None].float() / 255
    print(machine_header(f"photo {args.photo} at {args.size} px, top_k_channels={args.top_k}"))
    print()
    print("| model | target | masked forwards | call s | bare s | x bare | target s |")
    print("|---|---|---|---|---|---|---|")
    makers = {"segmentation": segmentation, "detection": detection}
    for name in args.models:
        row = measure(makers[name](image), image, args.top_k, args.repeats)
        print(
            f"| {row['model']} | {row['target']} | {row['forwards']} | {row['call']:.2f} | "
            f"{row['bare']:.2f} | {row['ratio']:.2f} | {row['target_s']:.3f} |",
            flush=True,
        )
        calls = ", ".join(f"{c:.2f}" for c in row["calls"])
        bares = ", ".join(f"{b:.2f}" for b in row["bares"])
        print(f"<!-- {row['model']}: calls {calls}; bare {bares} -->", flush=True)


if __name__ == "__main__":
    main()
