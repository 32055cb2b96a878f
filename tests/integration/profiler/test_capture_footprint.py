"""A profiler window's own footprint is never read as the job's: a real 2-rank gloo job.

The window records steps 10-12 (warm-up 9); its stop, at the start of step 13,
stalls rank 1's next batch by 400 ms (``capture_stall_job.py``): the footprint an
H200 run showed, where the window's end landed in the next step's DataLoader
wait on the rank with the larger trace. The step records say which capture
phase touched each step, and the whole-run verdict leaves a window's start, stop
and export steps out (its recorded steps are judged, labelled "window"). The
same files with the labels removed (what a collector before them wrote) name
rank 1 a data-loading straggler at step 13: the test fails if the labels or the
exclusion stop working.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, REPO, job_env, launcher, rankscope

from rankscope.profiler import rundir

pytestmark = [needs_torch]

JOB = JOBS / "capture_stall_job.py"
STALL_MS = 400.0


def report(run: Path) -> dict[str, Any]:
    proc = rankscope("report", str(run), "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@pytest.fixture(scope="module")
def stalled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("capture") / "run"
    # The job's own Collector takes the window (under `rankscope run` it would defer).
    proc = subprocess.run(
        [*launcher("module", 2), str(JOB), str(run), "--stall-ms", str(STALL_MS)],
        env=job_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_each_step_says_which_capture_phase_touched_it(stalled_run: Path) -> None:
    for rank in (0, 1):
        steps = {s["step"]: s for s in rundir.read_steps(stalled_run, rank)}
        labels = {n: s["capture"] for n, s in steps.items() if "capture" in s}
        assert labels.get(9) == "start"
        assert [labels.get(n) for n in (10, 11, 12, 13)] == ["window"] * 3 + ["stop"]
        assert set(labels) <= set(range(9, 20)), labels  # only the window and its export
        assert all(labels.get(n) in (None, "export") for n in range(14, 20))
        if rank == 1:  # the stall is in step 13's DataLoader wait, where it was seen
            assert steps[13]["data_ns"] >= STALL_MS * 1e6


def test_the_window_end_is_capture_not_a_straggler(stalled_run: Path) -> None:
    whole = report(stalled_run)["whole_run"]
    rows = {s["step"]: s for s in whole["steps"]}
    stop = rows[13]
    assert stop["capture"] == "stop"
    assert (stop["late_rank"], stop["excess_ms"], stop["data_ms"]) == (-1, 0.0, 0.0)
    assert stop["step_ms"] >= STALL_MS  # what the step took stays visible
    assert rows[9]["capture"] == "start" and rows[9]["late_rank"] == -1
    assert [rows[n]["capture"] for n in (10, 11, 12)] == ["window"] * 3  # judged, labelled
    assert whole["capture_steps"] >= 2  # steps 9 and 13, and any the export ran beside
    captured = {n for n, s in rows.items() if s["capture"] in ("start", "stop", "export")}
    for s in whole["stragglers"]:  # whatever noise finds, never the window's steps
        assert not {x["step"] for x in s["steps"] or []} & captured, s
        assert s["rank"] != 1 or s["cause"] != "data_loading", s


def test_without_the_labels_the_stall_would_blame_rank_1(stalled_run: Path, tmp_path: Path) -> None:
    """The same run with ``capture`` removed (as an older collector wrote it)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in stalled_run.iterdir():
        if f.is_file():
            (bare / f.name).write_bytes(f.read_bytes())
    for rank in (0, 1):
        path = rundir.steps_path(bare, rank)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for obj in lines:
            obj.pop("capture", None)
        path.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    whole = report(bare)["whole_run"]
    assert whole["capture_steps"] == 0
    row = next(s for s in whole["steps"] if s["step"] == 13)
    assert row["late_rank"] == 1 and row["excess_ms"] > 0.8 * STALL_MS
    assert row["data_ms"] > 0.8 * STALL_MS  # read as data loading: the bug this fixes
