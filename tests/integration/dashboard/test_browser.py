"""End to end: ``rankscope dashboard REF --no-browser --port N`` in headless Chromium.

The Overview must name the straggler; every page must render without an
exception or error box, and fetch nothing beyond the server (offline
clusters). Screenshots go to a temporary folder, or to
``$RANKSCOPE_SCREENSHOTS`` when set. Skipped without /usr/bin/chromium or the
playwright package (Playwright's own browser download is not used).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import DATA

REF_RUN = DATA / "reference_runs" / "h200_ddp4_straggler"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def _reference_run() -> None:
    if not REF_RUN.exists():
        pytest.skip(f"not available: {REF_RUN}")


@pytest.fixture(scope="module")
def server(shots: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ.setdefault(
        "RANKSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rankscope-cache")
    )
    port = shots.free_port()
    # start_server's finaliser kills the server's whole process group, pass or fail.
    with shots.start_server(REF_RUN, port, timeout_s=120):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def shot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("RANKSCOPE_SCREENSHOTS")
    out = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_overview_names_the_straggler(
    shots: ModuleType, server: str, browser: Any, shot_dir: Path
) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1900})
    page.goto(server, timeout=120_000)
    shots.wait_painted(page, "Rank 1 is the straggler", timeout_ms=120_000)
    text = page.inner_text("body")
    assert "Rank 1 is the straggler: data loading" in text
    assert shots.error_boxes(page) == []
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    page.screenshot(path=str(shot_dir / "overview.png"))
    page.close()


def test_every_page_renders(shots: ModuleType, server: str, browser: Any, shot_dir: Path) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1900})
    for name, path, marker in shots.PAGES[1:]:
        page.goto(f"{server}/{path}", timeout=120_000)
        shots.wait_painted(page, marker, timeout_ms=120_000)
        page.wait_for_timeout(500)
        assert shots.error_boxes(page) == [], name
        # Plotly draws after the script has finished; give it time on a slow machine.
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        page.screenshot(path=str(shot_dir / name))
    page.close()


def test_sidebar_navigation_keeps_the_run(shots: ModuleType, server: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    page.goto(server, timeout=120_000)
    shots.wait_painted(page, "Rank 1 is the straggler", timeout_ms=120_000)
    page.get_by_role("link", name="Communication").click()
    shots.wait_painted(page, "Arrival lag per collective", timeout_ms=60_000)
    assert "h200_ddp4_straggler" in page.inner_text('[data-testid="stSidebar"]')
    assert shots.error_boxes(page) == []
    page.close()


def test_no_request_leaves_the_machine(shots: ModuleType, server: str, browser: Any) -> None:
    """Every page works offline: nothing is fetched beyond the server (icons, fonts, stats)."""
    from urllib.parse import urlsplit

    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    hosts: dict[str, str] = {}
    page.on("request", lambda r: hosts.setdefault(urlsplit(r.url).hostname or r.url, r.url))
    for name, path, marker in shots.PAGES:
        page.goto(f"{server}/{path}", timeout=120_000)
        shots.wait_painted(page, marker, timeout_ms=120_000)
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        page.wait_for_timeout(500)
        assert shots.error_boxes(page) == [], name
    page.close()
    outside = {h: url for h, url in hosts.items() if h not in ("127.0.0.1", "localhost")}
    assert outside == {}
    assert "127.0.0.1" in hosts  # the listener saw the page's own requests
