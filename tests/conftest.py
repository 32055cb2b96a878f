"""Shared fixtures: the ../shared data (skipped cleanly when absent) and an isolated cache."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RANKSCOPE_SHARED_DIR", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when CI has no shared data beside the checkout."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One cache for the whole session keeps tests fast, and never the user's own.
    cache = tmp_path_factory.getbasetemp() / "rankscope-cache"
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(cache))


def rankscope_cmd() -> list[str]:
    return [sys.executable, "-m", "rankscope.dashboard.cli"]


def markdown_table(text: str, header_startswith: str) -> list[list[str]]:
    """Rows of the markdown table whose header line starts with ``header_startswith``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_startswith):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table starting with {header_startswith!r}")


def hta_reference(readme: Path) -> dict[tuple[str, int], dict[str, float]]:
    """HTA's published numbers in a shared README: (run, rank) -> {idle, compute, ...}."""
    text = readme.read_text()
    rows = (
        markdown_table(text, "| run | rank | idle %")
        if "| run | rank | idle %" in text
        else markdown_table(text, "| trace | rank | idle %")
    )
    out = {}
    for row in rows:
        nums = [float(x) for x in row[2:]]
        entry = {"idle_pct": nums[0], "compute_pct": nums[1], "non_compute_pct": nums[2]}
        if len(nums) > 3:
            entry["comm_overlap_pct"] = nums[3]
        out[(row[0], int(row[1]))] = entry
    return out


def ground_truth_table(readme: Path, run: str) -> dict[int, dict[str, float]]:
    """The measured ground-truth table of a reference run (per rank)."""
    text = readme.read_text()
    section = text.split(f"### {run}", 1)[1]
    rows = markdown_table(section, "| rank | batch")
    out = {}
    for row in rows:
        out[int(row[0])] = {
            "batch": float(row[1]),
            "data_loading_ms": float(row[2]),
            "gpu_kernel_ms": float(row[3]),
            "all_reduce_ms": float(row[4]),
        }
    return out


__all__ = [
    "REPO",
    "SHARED",
    "ground_truth_table",
    "hta_reference",
    "rankscope_cmd",
    "re",
    "shared_path",
]
