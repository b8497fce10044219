"""The docs and README stay true to the code: pages, API names, code, CLI options, make targets."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from captum_sscam.apps.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
TEXTS = [*PAGES, ROOT / "README.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert sorted(nav) == sorted(page.name for page in PAGES)
    assert {"index.md", "getting-started.md", "math.md", "api.md"} <= set(nav)


def test_api_reference_names_resolve() -> None:
    text = (DOCS / "api.md").read_text()
    identifiers = re.findall(r"^::: ([\w.]+)$", text, re.MULTILINE)
    assert len(identifiers) == 7
    for identifier in identifiers:
        module_name, _, attribute = identifier.rpartition(".")
        try:
            importlib.import_module(identifier)
        except ModuleNotFoundError:
            assert hasattr(importlib.import_module(module_name), attribute), identifier
    for block in re.findall(
        r"::: ([\w.]+)\n    options:\n      members:\n((?:        - \w+\n)+)", text
    ):
        module = importlib.import_module(block[0])
        for member in re.findall(r"- (\w+)", block[1]):
            assert hasattr(module, member), f"{block[0]}.{member}"


@pytest.mark.parametrize("path", TEXTS, ids=lambda path: path.name)
def test_code_blocks_parse_and_their_imports_exist(path: Path) -> None:
    for block in python_blocks(path):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "captum_sscam":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}"
                    ), f"{path.name}: from {node.module} import {alias.name}"


def test_cli_options_in_the_docs_exist() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    known = {
        option
        for command in commands.values()
        for action in command._actions
        for option in action.option_strings
    }
    for path in (DOCS / "cli.md", ROOT / "README.md", DOCS / "getting-started.md"):
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", path.read_text())):
            if option not in {"--strict"}:  # mkdocs build --strict, in the README
                assert option in known, f"{path.name} mentions {option}"
    for command in re.findall(r"captum-sscam (\w+)", (DOCS / "cli.md").read_text()):
        assert command in commands


def test_make_targets_named_in_readme_and_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    for path in TEXTS:
        # `make X` in inline code, or a command line starting with make
        commands = re.findall(r"`make ([\w-]+)|^\s*make ([\w-]+)", path.read_text(), re.MULTILINE)
        for target in (inline or line for inline, line in commands):
            assert target in targets, f"{path.name} mentions make {target}"


def test_readme_example_names_are_real() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in re.findall(r"examples/([\w]+\.py)", readme):
        assert (ROOT / "examples" / name).is_file(), name
