"""Every benchmark command that the README and docs/ show parses with that script's own options.

The benchmarks take minutes to hours, so they are not run here; what a reader copies from a
page must at least be a command the script accepts (an option renamed or a choice dropped
fails here). Commands are read from code (fenced or indented blocks, with backslash
continuations joined) and from inline code that names a script with arguments; ``[...]``
marks an optional argument.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Iterator

import pytest

from tests.snippets import PAGES, ROOT

COMMAND = re.compile(r"benchmarks/(?P<script>\w+)\.py(?P<args>[^`\n#|]*)")
BENCHMARKS = ROOT / "benchmarks"
# the scripts; benchmarks/_common.py is their shared helpers, not a script
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py") if not path.stem.startswith("_"))


def documented_commands() -> Iterator[tuple[str, str, list[str]]]:
    """(page, script, arguments) of each benchmark command shown in the pages."""
    for page in PAGES:
        text = re.sub(r"\\\n\s*", " ", page.read_text())
        in_fence = False
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            code = in_fence or line.startswith("    ")
            for span in [line] if code else re.findall(r"`([^`]*)`", line):
                for match in COMMAND.finditer(span):
                    args = match.group("args").replace("[", " ").replace("]", " ")
                    if code or args.strip():
                        where = page.relative_to(ROOT).as_posix()
                        yield where, match.group("script"), shlex.split(args)


def parser_of(script: str) -> argparse.ArgumentParser:
    """The script's parser, imported as ``python benchmarks/SCRIPT.py`` imports it: with
    ``benchmarks/`` on the module path (for ``_common``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(
        f"benchmark_{script}", BENCHMARKS / f"{script}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.build_parser()


COMMANDS = list(documented_commands())


def test_the_pages_show_commands_of_every_benchmark() -> None:
    assert len(COMMANDS) >= 20
    assert {script for _, script, _ in COMMANDS} == set(SCRIPTS)


@pytest.mark.parametrize("script", sorted({script for _, script, _ in COMMANDS}))
def test_documented_commands_parse(script: str) -> None:
    parser = parser_of(script)
    for where, _, argv in (command for command in COMMANDS if command[1] == script):
        errors = io.StringIO()
        with contextlib.redirect_stderr(errors):
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(
                    f"{where}: benchmarks/{script}.py {shlex.join(argv)}\n{errors.getvalue()}"
                )


def test_a_wrong_option_is_caught() -> None:
    parser = parser_of("sscam_cost")
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parser.parse_args(["error", "--photo-names", "coffee"])
    assert parser.parse_args(["error", "--photos", "coffee"]).photos == ["coffee"]
