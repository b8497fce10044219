"""What may import what: the library never imports the applications; the core imports nothing
above it; the metrics and the drawing stand on the core and public names, never on the methods'
private modules; the applications use only the library's public modules and do not import each
other in a cycle."""

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
SHIMS = {"captum_sscam.__main__"}  # `python -m captum_sscam`, forwarding to apps.cli
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


def is_core(name: str) -> bool:
    return name == "captum_sscam._core" or name.startswith("captum_sscam._core.")


def is_attr_private(name: str) -> bool:
    return name.startswith("captum_sscam.attr.") and name.rpartition(".")[2].startswith("_")


@pytest.mark.parametrize("name", sorted(name for name in MODULES if is_core(name)), ids=str)
def test_the_core_imports_nothing_above_it(name: str) -> None:
    above = {module for module in imported_modules(name) if not is_core(module)}
    assert not above, f"core module {name} imports {above}"


METRICS_AND_DRAWING = sorted(
    name
    for name in MODULES
    if name.startswith("captum_sscam.metrics") or name == "captum_sscam.visualization"
)


@pytest.mark.parametrize("name", METRICS_AND_DRAWING, ids=str)
def test_metrics_and_drawing_stand_on_the_core_and_public_names(name: str) -> None:
    own = {module for module in imported_modules(name) if module.startswith("captum_sscam.metrics")}
    others = imported_modules(name) - own
    allowed = {module for module in others if is_core(module) or module in PUBLIC}
    assert others == allowed, f"{name} imports {others - allowed} (neither the core nor public)"
    assert not any(map(is_attr_private, others)), name


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
    monkeypatch.setitem(MODULES, "captum_sscam.metrics.bad", bad)
    with pytest.raises(AssertionError, match="neither the core nor public"):
        test_metrics_and_drawing_stand_on_the_core_and_public_names("captum_sscam.metrics.bad")
    core_bad = tmp_path / "core_bad.py"
    core_bad.write_text("from captum_sscam.attr._masks import upsampled_masks")
    monkeypatch.setitem(MODULES, "captum_sscam._core.bad", core_bad)
    with pytest.raises(AssertionError, match="core module"):
        test_the_core_imports_nothing_above_it("captum_sscam._core.bad")
