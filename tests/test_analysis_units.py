"""Small, exact checks of the building blocks: interval algebra, ranks, cache, imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankscope.dashboard.analysis import intervals as iv
from rankscope.profiler.rundir import rank_from_filename

spans = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 15)), max_size=12)


def as_set(pairs: list[tuple[int, int]]) -> iv.Intervals:
    s = np.array([a for a, _ in pairs], dtype=np.int64)
    e = np.array([a + d for a, d in pairs], dtype=np.int64)
    return iv.union(s, e)


def points(x: iv.Intervals) -> set[int]:
    return {p for a, b in zip(*x, strict=True) for p in range(int(a), int(b))}


@settings(max_examples=200, deadline=None)
@given(spans, spans)
def test_interval_algebra_matches_brute_force(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    A, B = as_set(a), as_set(b)
    pa, pb = points(A), points(B)
    assert iv.length(A) == len(pa)
    assert points(iv.intersect(A, B)) == pa & pb
    assert points(iv.subtract(A, B)) == pa - pb
    assert points(iv.combine(A, B)) == pa | pb
    assert iv.clipped_length(A, 10, 30) == len({p for p in pa if 10 <= p < 30})
    # Merged sets are sorted and disjoint.
    s, e = iv.intersect(A, B)
    assert (s[1:] > e[:-1]).all() and (e > s).all()


@pytest.mark.parametrize(
    ("name", "rank"),
    [
        ("rank3.pt.trace.json.gz", 3),
        ("rank-12.json.gz", 12),
        ("sampled_rank-1.json.gz", 1),
        ("worker7.1700000000.pt.trace.json", 7),
        ("host_rank_2.json", 2),
        ("trace.json", None),
        ("franklin.json", None),
    ],
)
def test_rank_from_file_name(name: str, rank: int | None) -> None:
    assert rank_from_filename(name) == rank


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("rankscope.profiler", ("torch", "streamlit", "rankscope.dashboard")),
        ("rankscope.dashboard.analysis", ("torch", "streamlit")),
        ("rankscope.dashboard.analysis.analyse", ("torch", "streamlit", "pandas", "plotly")),
    ],
)
def test_imports_stay_cheap(module: str, forbidden: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_second_load_reads_only_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import shared_path

    from rankscope.dashboard.ingest import cache, run

    path = shared_path("reference_runs", "h200_ddp4_straggler")  # 1.3 MB per rank: cached
    first = run.load_run(path)
    assert all(cache.load(Path(f)) is not None for rd in first.ranks.values() for f in rd.files)

    def no_parsing(_: object) -> None:
        raise AssertionError("parsed a trace although the cache is warm")

    monkeypatch.setattr(run, "parse_trace", no_parsing)
    second = run.load_run(path)
    for r, rd in first.ranks.items():
        assert np.array_equal(rd.gpu["ts"], second.ranks[r].gpu["ts"])
        assert rd.cpu.vocab["name"] == second.ranks[r].cpu.vocab["name"]
        assert np.array_equal(rd.cpu["name"], second.ranks[r].cpu["name"])


def test_cache_misses_when_the_file_changes(tmp_path: Path) -> None:
    import shutil

    from conftest import shared_path

    from rankscope.dashboard.ingest import cache

    f = tmp_path / "rank0.pt.trace.json.gz"
    shutil.copy(shared_path("reference_runs", "h200_ddp2_balanced", "rank0.pt.trace.json.gz"), f)
    key = cache.cache_key(f)
    f.write_bytes(f.read_bytes() + b"")
    import os

    os.utime(f, ns=(1, 1))
    assert cache.cache_key(f) != key


def test_report_cli_caches_as_parquet_and_reuses_it(tmp_path: Path) -> None:
    """Through the command, as a user runs it; small files too when asked to."""
    import json
    import os

    from conftest import REPO

    cache_dir = tmp_path / "cache"
    env = {**os.environ, "RANKSCOPE_CACHE_DIR": str(cache_dir), "RANKSCOPE_CACHE_MIN_BYTES": "0"}
    sample = REPO / "sample_traces" / "ddp3_dataloader_straggler"
    cmd = [
        sys.executable,
        "-m",
        "rankscope.dashboard.cli",
        "report",
        str(sample),
        "--format",
        "json",
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    entries = sorted(cache_dir.iterdir())
    assert len(entries) == 3  # one per rank's trace
    assert all((e / "gpu.parquet").is_file() and (e / "cpu.parquet").is_file() for e in entries)
    mtimes = {e: e.stat().st_mtime_ns for e in entries}
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert {e: e.stat().st_mtime_ns for e in sorted(cache_dir.iterdir())} == mtimes


def test_report_start_up_stays_lean() -> None:
    """The report of a small run loads no heavy module it does not use.

    pandas (~0.4 s), pyarrow (cache only), numpy.ma (np.unique/np.median pull it
    in, ~25 ms), streamlit and torch each would make `rankscope report` slower
    than HTA on small traces.
    """
    from conftest import REPO

    sample = REPO / "sample_traces" / "ddp3_dataloader_straggler"
    code = (
        "import sys, io, contextlib, rankscope.dashboard.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    args = ['report', {str(sample)!r}, '--format', 'json']\n"
        "    assert rankscope.dashboard.cli.main(args) == 0\n"
        "heavy = ('pandas', 'pyarrow', 'numpy.ma', 'streamlit', 'torch', 'plotly', 'rich')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"report loaded {out.stdout.strip()}"
