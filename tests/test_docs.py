"""The docs and README stay true to the code: pages, API names, code, CLI options, make targets."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from captum_sscam.apps.cli import build_parser
from tests.browser import headless_chromium, screenshot

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
TEXTS = [*PAGES, ROOT / "README.md"]


OTHER_TOOLS = re.compile(r"\bpip\b|-m build\b|\bmkdocs\b|\btorchrun\b")


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert sorted(nav) == sorted(page.name for page in PAGES)
    assert {"index.md", "getting-started.md", "math.md", "api.md"} <= set(nav)


def test_api_reference_names_resolve() -> None:
    text = (DOCS / "api.md").read_text()
    identifiers = re.findall(r"^::: ([\w.]+)$", text, re.MULTILINE)
    library = {"ScoreCAM", "SmoothedScoreCAM", "IntegratedScoreCAM", "metrics", "visualization"}
    assert {f"captum_sscam.{name}" for name in library} <= set(identifiers)
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
        # options of other tools' commands (pip, build, mkdocs, torchrun) are theirs to check
        lines = [line for line in path.read_text().splitlines() if not OTHER_TOOLS.search(line)]
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", "\n".join(lines))):
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


# --- The built site: formulas, highlighting and cross-references render, offline -------------

REST_MARKUP = re.compile(r"\.\. math::|:(?:math|func|class|meth|mod|attr|data|exc):")
MATHJAX = "assets/mathjax/tex-svg-full.js"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation built as `make docs` builds it (`mkdocs build --strict`)."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def page_text(html: str) -> str:
    """The text a reader sees: tags dropped, entities decoded."""
    return unescape(re.sub(r"<[^>]+>", "", html))


def built_pages(site: Path) -> list[Path]:
    return sorted(path for path in site.rglob("*.html") if path.name != "404.html")


def test_built_pages_show_no_rest_markup(site: Path) -> None:
    for path in built_pages(site):
        text = page_text(path.read_text())
        rest = REST_MARKUP.findall(text)
        assert not rest, f"{path.relative_to(site)} shows reST markup: {rest}"
        unresolved = re.findall(r"\[[\w.]+\]\[captum_sscam[\w.]*\]", text)
        assert not unresolved, f"{path.relative_to(site)}: {unresolved}"


def test_api_page_marks_formulas_as_math(site: Path) -> None:
    html = (site / "api" / "index.html").read_text()
    formulas = re.findall(r'<span class="arithmatex">\\\((.*?)\\\)</span>', html)
    assert r"100 \max(0, Y - O) / Y" in formulas  # average_drop
    assert r"p = \lceil \text{step} \cdot HW \rceil" in formulas  # deletion_auc
    # no dollar sign left over outside math and code (a formula arithmatex did not take)
    prose = re.sub(r'<(code|pre|span class="arithmatex")[^>]*>.*?</\1>', "", html, flags=re.S)
    prose = re.sub(r'<span class="arithmatex">.*?</span>', "", prose, flags=re.S)
    assert "$" not in page_text(prose)
    math_page = (site / "math" / "index.html").read_text()
    assert len(re.findall(r'<div class="arithmatex">\\\[', math_page)) >= 4


def test_api_page_links_resolve_and_returns_are_one_entry(site: Path) -> None:
    html = (site / "api" / "index.html").read_text()
    ids = set(re.findall(r'id="([^"]+)"', html))
    links = re.findall(r'<a[^>]*href="#(captum_sscam[\w.]*)"', html)
    assert "captum_sscam.metrics.deletion_auc" in links
    assert set(links) <= ids
    # a Returns section is one row, however many lines its description takes
    for table in re.findall(r"Returns:</span></p>\s*<table>(.*?)</table>", html, re.S):
        assert table.count("<tr") == 2, page_text(table)  # header + one row


def test_site_serves_its_own_assets(site: Path) -> None:
    script = site / MATHJAX
    assert b'VERSION="3.2.2"' in script.read_bytes()  # MathJax 3.2.2, from django-static-mathjax
    css = (site / "assets" / "pygments.css").read_text()
    assert ".highlight .kn" in css  # Pygments' keyword class
    for path in built_pages(site):
        html = path.read_text()
        sources = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
        sheets = re.findall(r'<link[^>]*\shref="([^"]+)"', html)
        assert any(source.endswith(MATHJAX) for source in sources), path
        for url in sources + sheets:
            assert not re.match(r"(https?:)?//", url), f"{path.relative_to(site)} loads {url}"
            assert (path.parent / url.split("#")[0]).resolve().is_file(), url
        assert "hljs" not in html


def test_code_is_highlighted_at_build_time(site: Path) -> None:
    html = (site / "getting-started" / "index.html").read_text()
    assert re.search(r'<div class="highlight"><pre>.*<span class="kn">import</span>', html, re.S)


def test_formulas_render_in_chromium(site: Path) -> None:
    with headless_chromium() as driver:
        driver.get((site / "api" / "index.html").as_uri())
        driver.set_script_timeout(60)
        rendered = driver.execute_async_script(MATH_RENDERED)
        remote = driver.execute_script(REMOTE_RESOURCES)
        driver.execute_script(
            "document.documentElement.style.scrollBehavior = 'auto';"
            "document.getElementById('captum_sscam.metrics.deletion_auc').scrollIntoView();"
        )
        shot = screenshot(driver, "api-formulas.png")
    assert remote == []
    assert len(rendered) >= 10
    for tex, width, height, error, visible_text in rendered:
        assert width > 0 and height > 0, tex
        assert not error, tex
        assert "\\(" not in visible_text, tex
    assert shot.stat().st_size > 10_000


# Waits for MathJax's first typesetting, then measures each formula arithmatex marked.
MATH_RENDERED = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) { done([]); return; }
MathJax.startup.promise.then(() => done(
  Array.from(document.querySelectorAll('.arithmatex')).map(element => {
    const box = element.querySelector('mjx-container');
    const rect = box ? box.getBoundingClientRect() : {width: 0, height: 0};
    const error = !box || box.querySelector('[data-mjx-error], mjx-merror') !== null;
    return [element.textContent.slice(0, 60), rect.width, rect.height, error, element.innerText];
  })
));
"""
REMOTE_RESOURCES = """
return performance.getEntriesByType('resource').map(e => e.name)
  .filter(name => !name.startsWith('file:'));
"""
