"""What may import what: the library never imports the applications; the applications use
only the library's public modules and do not import each other in a cycle."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "captum_sscam"
MODULES = {
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
    for path in sorted(PACKAGE.rglob("*.py"))
}
SHIMS = {"captum_sscam.__main__", "captum_sscam.evaluate"}  # old entry points, forwarding to apps
PUBLIC = {"captum_sscam", "captum_sscam.metrics", "captum_sscam.visualization"}


def imported_modules(name: str) -> set[str]:
    """The captum_sscam modules ``name`` imports (``from pkg import mod`` counts as pkg.mod)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{name} uses a relative import; import by absolute name")
    return {module for module in found if module.split(".")[0] == "captum_sscam"}


def is_app(name: str) -> bool:
    return name == "captum_sscam.apps" or name.startswith("captum_sscam.apps.")


def test_every_module_imports() -> None:
    assert {"captum_sscam.apps.methods", "captum_sscam.apps.cli", "captum_sscam.attr"} <= set(
        MODULES
    )
    for name in MODULES:
        if name not in SHIMS:  # importing captum_sscam.__main__ would run the command line
            importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(set(MODULES) - SHIMS), ids=str)
def test_layers(name: str) -> None:
    imports = imported_modules(name)
    if is_app(name):
        outside = {module for module in imports if not is_app(module)}
        assert outside <= PUBLIC, f"{name} imports non-public library modules {outside - PUBLIC}"
    else:
        assert not any(map(is_app, imports)), f"library module {name} imports the applications"


def test_shims_only_forward_to_the_applications() -> None:
    for name in SHIMS:
        tree = ast.parse(MODULES[name].read_text())
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [(node.module, [a.name for a in node.names]) for node in imports] == [
            ("captum_sscam.apps." + name.rpartition(".")[2].replace("__main__", "cli"), ["main"])
        ]
        code = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom))]
        assert len(code) == 2  # the docstring, and the call of main


def test_applications_do_not_import_each_other_in_a_cycle() -> None:
    apps = [name for name in MODULES if is_app(name)]
    graph = {name: {module for module in imported_modules(name) if is_app(module)} for name in apps}
    for name in apps:
        if name != "captum_sscam.apps":  # a module must not import the package's own names
            assert "captum_sscam.apps" not in graph[name], name
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join([*path, name])}"
        state[name] = "open"
        for module in graph.get(name, ()):
            visit(module, [*path, name])
        state[name] = "done"

    for name in apps:
        visit(name, [])


def test_the_checks_see_the_imports_they_forbid(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from captum_sscam.attr._masks import channel_masks\nimport captum_sscam.apps")
    monkeypatch.setitem(MODULES, "captum_sscam.apps.bad", bad)
    assert imported_modules("captum_sscam.apps.bad") == {
        "captum_sscam.attr._masks",
        "captum_sscam.apps",
    }
    with pytest.raises(AssertionError, match="non-public library modules"):
        test_layers("captum_sscam.apps.bad")
