"""The Parquet cache: a second load reads only the cache, a changed file misses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def test_second_load_reads_only_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import data_path

    from rankscope.dashboard.ingest import cache, run, tracefile, workers

    path = data_path("reference_runs", "h200_ddp4_straggler")  # 1.3 MB per rank: cached
    first = run.load_run(path)
    assert all(cache.load(Path(f)) is not None for rd in first.ranks.values() for f in rd.files)

    def no_parsing(_: object) -> None:
        raise AssertionError("parsed a trace although the cache is warm")

    # Where a trace is parsed: by a worker, or when a view first asks for the tables.
    monkeypatch.setattr(workers, "parse_trace", no_parsing)
    monkeypatch.setattr(tracefile, "parse_trace", no_parsing)
    second = run.load_run(path)
    for r, rd in first.ranks.items():
        assert np.array_equal(rd.gpu["ts"], second.ranks[r].gpu["ts"])
        assert rd.cpu.vocab["name"] == second.ranks[r].cpu.vocab["name"]
        assert np.array_equal(rd.cpu["name"], second.ranks[r].cpu["name"])


def test_cache_misses_when_the_file_changes(tmp_path: Path) -> None:
    import shutil

    from conftest import data_path

    from rankscope.dashboard.ingest import cache

    f = tmp_path / "rank0.pt.trace.json.gz"
    shutil.copy(data_path("reference_runs", "h200_ddp2_balanced", "rank0.pt.trace.json.gz"), f)
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
    derived = ("digests", "telemetry")  # per rank: its digest and its telemetry sums
    entries = sorted(e for e in cache_dir.iterdir() if e.name not in derived)
    assert len(entries) == 3  # one per rank's trace
    assert all((e / "gpu.parquet").is_file() and (e / "cpu.parquet").is_file() for e in entries)
    digests = sorted(f for d in derived for f in (cache_dir / d).iterdir())
    assert len(digests) == 6  # and per rank one digest, one set of telemetry sums
    mtimes = {e: e.stat().st_mtime_ns for e in [*entries, *digests]}
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert json.loads(second.stdout) == json.loads(first.stdout)
    # Nothing was written again: the second report read what the first stored.
    assert {e: e.stat().st_mtime_ns for e in mtimes} == mtimes
    assert sorted(cache_dir.iterdir()) == sorted([*entries, *(cache_dir / d for d in derived)])


def test_a_run_of_small_traces_is_cached_a_lone_one_is_not(tmp_path: Path) -> None:
    """Caching is decided per run: three traces, each under the limit but over it
    together, are cached (a second report reads the cache alone); one is parsed."""
    import os
    import shutil

    from conftest import REPO, blank_traces

    from rankscope.dashboard.ingest import cache

    run = tmp_path / "run"
    shutil.copytree(REPO / "sample_traces" / "ddp3_dataloader_straggler", run)
    traces = sorted(run.glob("*.pt.trace.json.gz"))
    sizes = [f.stat().st_size for f in traces]
    limit = max(sizes) + 1  # every file is under it, the three together are over it
    assert sum(sizes) >= limit
    cache_dir = tmp_path / "cache"
    env = {
        **os.environ,
        "RANKSCOPE_CACHE_DIR": str(cache_dir),
        "RANKSCOPE_CACHE_MIN_BYTES": str(limit),
    }
    cmd = [sys.executable, "-m", "rankscope.dashboard.cli", "report", "--format", "json"]
    first = subprocess.run([*cmd, str(run)], env=env, capture_output=True, text=True, check=True)
    blank_traces(run)  # same size and mtime: only the cache can answer now
    second = subprocess.run([*cmd, str(run)], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout

    lone = tmp_path / "lone" / "rank0.pt.trace.json.gz"
    lone.parent.mkdir()
    shutil.copy(REPO / "sample_traces" / "ddp3_dataloader_straggler" / traces[0].name, lone)
    subprocess.run([*cmd, str(lone)], env=env, capture_output=True, check=True)
    assert not (cache_dir / cache.cache_key(lone)).exists()
