"""A run directory named with a newline, a double quote or other odd characters works end to end.

torch writes the export path into the trace unescaped (``traceName``) and could
not open a path holding a newline, so such a run used to lose every window (a
``FileNotFoundError`` at export) or leave invalid JSON. Here a real 2-rank gloo
job runs under ``rankscope run`` into such a folder: every window must be a
valid gzipped JSON trace, and ``rankscope report`` must read the run.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_torch, rankscope_cmd
from jobs.collector_jobs import JOBS, launcher, rankscope

ODD_NAME = 'run "quoted"\nsecond line $x `y` <z>'


@needs_torch
@pytest.mark.skipif(sys.platform != "linux", reason="newlines in file names")
def test_a_run_named_with_a_newline_and_quotes_keeps_its_traces(tmp_path: Path) -> None:
    run = tmp_path / ODD_NAME
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "2-3",
        "--nvml-period-ms",
        "0",
        "--",
        *launcher("module", 2),
        str(JOBS / "light_layer_job.py"),
        "--steps",
        "6",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "export steps" not in proc.stderr, proc.stderr[-3000:]
    windows = sorted(run.glob("rank*.step2-3.pt.trace.json.gz"))
    assert [w.name for w in windows] == [
        "rank0.step2-3.pt.trace.json.gz",
        "rank1.step2-3.pt.trace.json.gz",
    ]
    for window in windows:
        with gzip.open(window, "rt", encoding="utf-8") as f:
            trace = json.load(f)  # strict JSON: a raw quote or newline would fail here
        assert any(e.get("name") == "ProfilerStep#2" for e in trace["traceEvents"])
    report = subprocess.run(
        [*rankscope_cmd(), "report", str(run), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["run"]["steps"] == [2, 3]
