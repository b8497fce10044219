"""The ```python blocks of the README and docs/, and a runner that executes them as a reader would.

A page's blocks run in order in one fresh interpreter (later blocks may use what earlier ones
defined, as a reader following the page does), in an empty working directory. The runner counts
each block's forward passes (images through a model's top-level forward), which bounds its cost
on any machine; time belongs in the benchmarks.
A block that cannot run here says why, visibly in the page and in a marker the test reads:
`<!-- not-run: REASON -->` on the line before its fence.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"^(?:<!-- not-run: (?P<reason>.+?) -->\n)?```python\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)

# Executed with `python -c`: sys.path[0] is the empty working directory, so `captum_sscam`
# is whatever the interpreter has installed (or PYTHONPATH names).
RUNNER = """
import json, sys
import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

depth, forwards = 0, 0

def entering(module, args):
    global depth, forwards
    if depth == 0 and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
        forwards += args[0].shape[0]  # a top-level forward: one pass per example
    depth += 1

def leaving(module, args, output):
    global depth
    depth -= 1

register_module_forward_pre_hook(entering)
register_module_forward_hook(leaving)
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for block in blocks:
    depth, forwards = 0, 0
    exec(compile(block["code"], block["where"], "exec"), namespace)
    print(json.dumps({"where": block["where"], "forwards": forwards}), flush=True)
"""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    code: str
    not_run: str | None = None  # the reason, for a block marked not-run

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    text = page.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        fence = match.start("code") - len("```python\n")
        line = text.count("\n", 0, fence) + 2
        blocks.append(Block(page, line, match.group("code"), match.group("reason")))
    return blocks


@dataclass(frozen=True)
class Run:
    returncode: int
    forwards: dict[str, int]  # per block: examples through a model's top-level forward
    output: str


def run_blocks(
    python: str, blocks: list[Block], workdir: Path, timeout: float, env: dict[str, str]
) -> Run:
    """Run `blocks` in order in one `python` process in `workdir`; count each block's passes."""
    script = workdir / "blocks.json"
    script.write_text(json.dumps([{"where": b.where, "code": b.code} for b in blocks]))
    result = subprocess.run(
        [python, "-c", RUNNER, str(script)],
        cwd=workdir,
        env={**env, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    forwards = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            forwards[record["where"]] = record["forwards"]
    return Run(result.returncode, forwards, result.stdout[-3000:] + result.stderr[-6000:])


def environment(**changes: str | None) -> dict[str, str]:
    """os.environ with `changes` applied (None removes a variable)."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


__all__ = ["PAGES", "ROOT", "Block", "Run", "environment", "python_blocks", "run_blocks"]
