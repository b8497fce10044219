"""Every ```python block of the README and docs/ runs as written, at a bounded cost.

Each page's blocks run in order in one fresh interpreter in an empty folder (see
tests/snippets.py). The package comes from this checkout (PYTHONPATH); test_packaging.py runs
the README's blocks again from an installed wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.snippets import PAGES, ROOT, environment, python_blocks, run_blocks

# A block's cost is bounded by its forward passes, not by seconds (a loaded machine is slow,
# not wrong). The README's first block makes about 1,500 passes of ResNet-18 at 128 px (10-20 s
# on an idle 2-core CPU); no documented block may make more than a few times that.
BLOCK_FORWARDS = 6_000
PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]
# The few blocks that cannot run here, each with its reason shown in its page.
NOT_RUN = {"docs/recipes.md": 1}


def test_blocks_are_found_and_few_are_exempt() -> None:
    blocks = [block for page in PAGES for block in python_blocks(page)]
    assert len(blocks) >= 12
    assert {page.relative_to(ROOT).as_posix() for page in PAGES_WITH_CODE} >= {
        "README.md",
        "docs/getting-started.md",
        "docs/recipes.md",
    }
    exempt: dict[str, int] = {}
    for block in blocks:
        if block.not_run is not None:
            assert block.not_run.strip(), block.where
            name = block.page.relative_to(ROOT).as_posix()
            exempt[name] = exempt.get(name, 0) + 1
            text = block.page.read_text()
            assert "does not run it" in text, f"{block.where}: say why in the page"
    assert exempt == NOT_RUN


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda page: page.name)
def test_python_blocks_run_as_written(page: Path, tmp_path: Path) -> None:
    blocks = [block for block in python_blocks(page) if block.not_run is None]
    env = environment(PYTHONPATH=str(ROOT))
    run = run_blocks(sys.executable, blocks, tmp_path, timeout=600, env=env)
    assert run.returncode == 0, run.output
    assert list(run.forwards) == [block.where for block in blocks]
    costly = {where: n for where, n in run.forwards.items() if n > BLOCK_FORWARDS}
    assert not costly, f"blocks over {BLOCK_FORWARDS} forward passes: {costly}"
