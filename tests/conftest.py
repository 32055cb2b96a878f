"""Shared fixtures and helpers: the test data in ``tests/data``, an isolated cache, report tables.

Layout: ``unit/<package>/`` mirrors the source tree (small hand-built inputs),
``integration/`` starts real jobs, servers and browsers, ``jobs/`` holds the
training scripts those tests launch and ``fakes/`` the stand-ins (a fake NVML).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Real-browser fixtures (``shots``, ``browser``) for the tests that drive Chromium.
pytest_plugins = ["jobs.browser"]

REPO = Path(__file__).resolve().parents[1]
# Real traces the tests read: the H200 reference runs and HTA's public traces
# (copied with their READMEs, ground truth and license notice).
DATA = REPO / "tests" / "data"


# Tests that start torch jobs (the collector's real integration tests) skip
# cleanly where torch is absent: the review side never needs it.
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


def data_path(*parts: str) -> Path:
    """A path under ``tests/data``; a missing one is a broken checkout, not a skip."""
    p = DATA.joinpath(*parts)
    assert p.exists(), f"test data missing from the repository: {p}"
    return p


def blank_traces(folder: Path) -> None:
    """Overwrite each trace in ``folder`` with zeros of the same size and mtime: its
    cache key is unchanged, so a report that still answers read the cache alone."""
    for f in folder.glob("*.pt.trace.json.gz"):
        st = f.stat()
        f.write_bytes(bytes(st.st_size))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One cache for the whole session keeps tests fast, and never the user's own.
    cache = tmp_path_factory.getbasetemp() / "rankscope-cache"
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(cache))


@contextlib.contextmanager
def dashboard_env(run: Path, cache: Path) -> Iterator[None]:
    """The dashboard's run and cache (``RANKSCOPE_DASHBOARD_PATH``/``_CACHE_DIR``) for an
    in-process ``AppTest``, put back as they were afterwards."""
    keys = ("RANKSCOPE_DASHBOARD_PATH", "RANKSCOPE_CACHE_DIR")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(zip(keys, (str(run), str(cache)), strict=True))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    "DATA",
    "REPO",
    "data_path",
    "ground_truth_table",
    "hta_reference",
    "needs_torch",
    "rankscope_cmd",
    "re",
]
