"""``rankscope ingest``: the cache written ahead, then a report that parses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ("reference_runs", "h200_ddp4_straggler")


def _rankscope(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RANKSCOPE_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "rankscope", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_ingest_then_report_reads_the_cache(tmp_path: Path, executor: str) -> None:
    from conftest import blank_traces, data_path

    if executor == "dask":
        pytest.importorskip("distributed")
    run = data_path(*RUN)
    cold = _rankscope("report", str(run), "--format", "json", cache=tmp_path / "cold")
    assert cold.returncode == 0, cold.stderr

    cache = tmp_path / "shared"
    done = _rankscope("ingest", str(run), "--executor", executor, "--json", cache=cache)
    assert done.returncode == 0, done.stderr
    summaries = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(s["summary"]["rank"] for s in summaries) == [0, 1, 2, 3]
    assert {s["cached"] for s in summaries} == {"written"}
    assert "4 ingested, 0 skipped" in done.stderr
    # Every entry has its summary, every rank its digest.
    assert len(list(cache.glob("*/summary.json"))) == 4
    assert all(s["digest"] for s in summaries)
    assert len(list((cache / "digests").iterdir())) == 4
    # The report reads the cache and says the same, without parsing a trace: the
    # files are overwritten with zeros of the same size and mtime (the cache key).
    copy = tmp_path / "run"
    copy.mkdir()
    for f in run.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
        os.utime(copy / f.name, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    done = _rankscope("ingest", str(copy), "--json", cache=cache)
    want = _rankscope("report", str(copy), "--format", "json", cache=cache).stdout
    blank_traces(copy)
    warm = _rankscope("report", str(copy), "--format", "json", cache=cache)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout == want
    assert json.loads(warm.stdout)["stragglers"] == json.loads(cold.stdout)["stragglers"]
    again = _rankscope("ingest", str(run), "--json", cache=cache)
    assert {json.loads(x)["cached"] for x in again.stdout.splitlines()} == {"hit"}


def test_ranks_picks_files_by_name(tmp_path: Path) -> None:
    from conftest import data_path

    done = _rankscope("ingest", str(data_path(*RUN)), "--ranks", "1,3", "--json", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(x)["summary"]["rank"] for x in done.stdout.splitlines()) == [1, 3]


@pytest.mark.parametrize(
    "args",
    [["/no/such/run"], ["{run}", "--ranks", "9"], ["{run}", "--ranks", "x"]],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    from conftest import data_path

    args = [a.format(run=data_path(*RUN)) for a in args]
    done = _rankscope("ingest", *args, cache=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("rankscope ingest: ")


def test_garbage_trace_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "rank0.pt.trace.json.gz"
    bad.write_bytes(b"\x1f\x8b not gzip")
    done = _rankscope("ingest", str(bad), cache=tmp_path / "c")
    assert done.returncode == 2
    assert "no usable trace" in done.stderr.splitlines()[-1]


def test_dask_missing_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import data_path

    from rankscope.dashboard.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(tmp_path))
    assert main(["ingest", str(data_path(*RUN)), "--executor", "dask"]) == 3
