"""Real-browser fixtures: the screenshot helpers (``docs/make_screenshots.py``) and one
headless Chromium per module. Skipped without Debian's Chromium or the playwright package
(Playwright's own browser download is not used). Import the fixtures by name.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shots() -> ModuleType:
    """``docs/make_screenshots.py``: start_server, launch_browser, wait_painted, PAGES."""
    spec = importlib.util.spec_from_file_location(
        "make_screenshots", REPO / "docs" / "make_screenshots.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not Path(mod.CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {mod.CHROMIUM}")
    pytest.importorskip("playwright.sync_api")
    return mod


@pytest.fixture(scope="module")
def browser(shots: ModuleType) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = shots.launch_browser(p)
        try:
            yield b
        finally:
            b.close()
