"""A folder of runs in the real dashboard: ``rankscope dashboard RUNS/`` in headless Chromium.

Two reference runs side by side (the 4-rank straggler run and the balanced
2-rank run): the picker lists both, newest first, and each choice shows that
run's own ranks and verdict, on the Overview and after moving to another page.
Skipped without Chromium or the playwright package, like ``test_browser.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import data_path

pytestmark = pytest.mark.browser

STRAGGLER = "Rank 1 is the straggler"
BALANCED = "No straggler"


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for name, source, mtime in (
        ("exp_balanced", "h200_ddp2_balanced", 1_700_000_000),
        ("exp_straggler", "h200_ddp4_straggler", 1_700_100_000),  # the newer one
    ):
        shutil.copytree(data_path("reference_runs", source), root / name)
        for f in (root / name).iterdir():
            os.utime(f, (mtime, mtime))
    return root


@pytest.fixture(scope="module")
def server(
    shots: ModuleType, runs_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    os.environ.setdefault(
        "RANKSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rankscope-cache")
    )
    port = shots.free_port()
    with shots.start_server(runs_folder, port, timeout_s=120):
        yield f"http://127.0.0.1:{port}"


def _pick(page: Any, label_start: str) -> list[str]:
    """Choose the run whose label starts with ``label_start``; the labels on offer, in order."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').click()
    options = page.get_by_role("option")
    options.first.wait_for(state="visible", timeout=30_000)
    labels = [t.strip() for t in options.all_inner_texts()]
    page.get_by_role("option", name=label_start).first.click()
    return labels


def _picked(page: Any) -> str:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input')
    return str(box.input_value())


def _main_text(page: Any) -> str:
    return str(page.locator('[data-testid="stMain"]').inner_text())


def test_the_picker_lists_runs_newest_first_and_switches_between_them(
    shots: ModuleType, server: str, browser: Any
) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.goto(server, timeout=120_000)
    # The newest run opens first.
    shots.wait_painted(page, STRAGGLER, timeout_ms=120_000)
    text = _main_text(page)
    assert "4 rank(s) of 4" in text and "exp_straggler" in text
    assert _picked(page).startswith("exp_straggler")
    assert shots.error_boxes(page) == []

    labels = _pick(page, "exp_balanced")
    assert [label.split()[0] for label in labels] == ["exp_straggler", "exp_balanced"]
    shots.wait_painted(page, BALANCED, timeout_ms=120_000)
    text = _main_text(page)
    assert "2 rank(s) of 2" in text and "Overview · exp_balanced" in text
    assert STRAGGLER not in text
    assert shots.error_boxes(page) == []

    # The choice holds on another page, and switching back shows the first run again.
    page.get_by_role("link", name="Load imbalance").click()
    shots.wait_painted(page, "Who arrived last", timeout_ms=60_000)
    assert _picked(page).startswith("exp_balanced")
    assert "rank 1" in _main_text(page) and "rank 2" not in _main_text(page)
    page.get_by_role("link", name="Overview").click()
    shots.wait_painted(page, BALANCED, timeout_ms=60_000)

    _pick(page, "exp_straggler")
    shots.wait_painted(page, STRAGGLER, timeout_ms=120_000)
    text = _main_text(page)
    assert "4 rank(s) of 4" in text and BALANCED not in text
    assert shots.error_boxes(page) == []
    page.close()
