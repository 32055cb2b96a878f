"""``rankscope run --ingest``: each rank ingests its own window on the node, at low priority.

A real 2-rank gloo job under ``rankscope run --ingest`` with the cache in a
temporary folder: after the job, the cache holds each rank's tables and digest
(written by the niced ``rankscope ingest`` each rank started after its window,
never waited for by the job), and the report reads them: it names the same
straggler as a report that parses everything, and parses no trace (the trace
files are overwritten with zeros of the same size and mtime first).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import blank_traces, needs_torch
from jobs.collector_jobs import DDP_JOB, SLEEP_MS, SLOW_RANK, job_env, launcher, rankscope

from rankscope.profiler import rundir


def _wait_for(predicate: object, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


@pytest.mark.slow
@needs_torch
def test_each_rank_ingests_its_window_and_the_report_parses_nothing(tmp_path: Path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    env = job_env(RANKSCOPE_CACHE_DIR=str(cache), RANKSCOPE_CACHE_MIN_BYTES="0")
    job = [*launcher("module", 2), str(DDP_JOB), "--steps", "12"]
    job += ["--slow-rank", str(SLOW_RANK), "--sleep-ms", str(SLEEP_MS)]
    proc = rankscope("run", "--out", str(run), "--ingest", "--", *job, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = rundir.read_run_manifest(run)
    assert manifest["config"]["ingest"] is True

    digests = cache / "digests"
    assert _wait_for(lambda: digests.is_dir() and len(list(digests.iterdir())) == 2), (
        f"no digest per rank in {cache}: {sorted(p.name for p in cache.rglob('*'))}"
    )
    assert len([p for p in cache.iterdir() if (p / "summary.json").is_file()]) == 2
    assert "] ingest:" not in proc.stderr  # no ingest failure was reported

    want = rankscope("report", str(run), "--format", "json", env=env)
    assert want.returncode == 0, want.stderr
    blank_traces(run)
    got = rankscope("report", str(run), "--format", "json", env=env)
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert got.stdout == want.stdout
    assert [s["rank"] for s in report["stragglers"]] == [SLOW_RANK]
