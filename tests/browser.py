"""Headless Chromium for the browser tests (Debian's chromium + chromedriver, driven by selenium).

`make chromium` installs the two Debian packages and the `browser` extra installs
selenium. Without them the browser tests skip on a developer's machine and fail
under CI (CI=true), so CI cannot pass without really opening the pages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"

ALL_IMAGES_LOADED = """
const images = Array.from(document.images);
return images.map(img => [img.alt, img.complete, img.naturalWidth, img.naturalHeight]);
"""


def _missing() -> str | None:
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (run `make chromium`)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[browser]')"
    return None


@contextlib.contextmanager
def headless_chromium() -> Iterator[object]:
    """A selenium Chrome driver on a fresh profile; quits and removes the profile after."""
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="captum-sscam-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: object, name: str) -> Path:
    """Save a screenshot under build/test-artifacts/ (kept as a CI artifact, not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path
