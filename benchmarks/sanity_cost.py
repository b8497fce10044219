"""What the model randomisation sanity check costs against one attribution, on the CPU.

``captum_sscam.metrics.model_randomisation`` makes ``steps + 1`` attributions (the original
map and one per randomised module) plus a deep copy of the model and a re-initialisation
per step. This script times, in one warm process and in turns (``--repeats`` times, so
that load from other processes falls on both alike):

- one call: ``ScoreCAM(model, layer).attribute(x, target=..., top_k_channels=K)`` on a
  fresh object (what each step of the test does);
- the cascading test over the first ``--steps`` of the model's default layers (output side
  first) with the same arguments (``steps + 1`` attributions);
- the same test given the original maps (``original=``, as the report passes the maps it
  has already drawn: ``steps`` attributions);

and prints each row's median over the call's median (the budget: 6x at 5 steps). Model:
the bundled pretrained EfficientNet-Lite0 at 224 px, layer: its 1280 x 7 x 7 head
activation, photo: coffee (resized as a whole, as the other benchmarks), explained for its
top class. One untimed call first loads the kernels (and gives the original maps). Run (hold the
shared lock; about two minutes on 2 cores):

    flock /tmp/captum_sscam_heavy.lock env PYTHONPATH=. .venv/bin/python \\
        benchmarks/sanity_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import lite0, lite0_input, machine_header, photos, timed, top1
from torch import Tensor, nn

from captum_sscam import ScoreCAM
from captum_sscam.apps.models import lite0_target_layer
from captum_sscam.metrics import model_randomisation, randomisation_layers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="randomised modules (default 5)")
    parser.add_argument("--top-k", type=int, default=32, help="top_k_channels (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="turns of both rows (default 3)")
    parser.add_argument("--photo", default="coffee", help="a bundled photo (default coffee)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    return parser


def score_cam(model: nn.Module) -> ScoreCAM:
    return ScoreCAM(model, lite0_target_layer(model))


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = lite0()
    x = lite0_input(photos()[args.photo])
    target = top1(model, x)
    kwargs = {"top_k_channels": args.top_k, "show_progress": False}
    layers = randomisation_layers(model)[: args.steps]

    def one_call() -> None:
        score_cam(model).attribute(x, target=target, **kwargs)

    original = score_cam(model).attribute(x, target=target, **kwargs)  # also loads the kernels

    def sanity_check(given: Tensor | None) -> None:
        model_randomisation(
            model, score_cam, x, target, layers=layers, attribute_kwargs=kwargs,
            show_progress=False, original=given,
        )  # fmt: skip

    rows: dict[str, list[float]] = {"call": [], "check": [], "given": []}
    for _ in range(args.repeats):
        rows["call"].append(timed(one_call, "cpu"))
        rows["check"].append(timed(lambda: sanity_check(None), "cpu"))
        rows["given"].append(timed(lambda: sanity_check(original), "cpu"))
    call = statistics.median(rows["call"])
    print(machine_header())
    print(
        f"EfficientNet-Lite0, 224 px, {args.photo}, ScoreCAM top_k_channels={args.top_k}, "
        f"cascading over {', '.join(layers)}; median of {args.repeats}\n"
    )
    labels = {
        "call": "one ScoreCAM call",
        "check": f"model_randomisation, {len(layers)} steps",
        "given": f"model_randomisation, {len(layers)} steps, original= given",
    }
    print("| run | attributions | seconds (each repeat) | x one call |")
    print("| --- | --- | --- | --- |")
    for key, times in rows.items():
        count = {"call": 1, "check": len(layers) + 1, "given": len(layers)}[key]
        median = statistics.median(times)
        each = ", ".join(f"{t:.2f}" for t in times)
        print(f"| {labels[key]} | {count} | {median:.2f} ({each}) | {median / call:.2f} |")


if __name__ == "__main__":
    main()
