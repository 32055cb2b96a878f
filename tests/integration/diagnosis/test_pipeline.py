"""Pipeline jobs (``tests/jobs/pipeline_job.py``): point-to-point waits name no false straggler.

gloo traces sends and receives without sequence numbers. They used to be paired
across ranks by position like collectives (rank 0's first ``recv`` with rank 1's
first ``recv``), so a 4-stage pipeline whose stage 2 computes 3x was reported as
"Rank 3 is the straggler" and time blocked in ``recv`` as transfer. Now a one-way
send or receive is an instance of its own: a receive's time is waiting (the
bubble), the headline says the wait is in point-to-point receives, and the
finding that names a rank is the one that computes more: the slow stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import needs_torch
from jobs.collector_jobs import JOBS, launcher, rankscope, report_of

pytestmark = needs_torch


def pipeline_run(out: Path, stages: int, *args: str) -> dict:  # type: ignore[type-arg]
    job = [*launcher("module", stages), str(JOBS / "pipeline_job.py"), "--steps", "14", *args]
    proc = rankscope("run", "--out", str(out), "--nvml-period-ms", "0", "--", *job, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report_of(out, "json"))  # type: ignore[no-any-return]


def test_a_slow_stage_of_four_is_the_rank_that_computes_more(tmp_path: Path) -> None:
    report = pipeline_run(tmp_path / "run", 4, "--slow-stage", "2", "--fwd-ms", "3")
    verdict = report["verdict"]
    assert verdict["rank"] is None, verdict["headline"]  # no rank "arrives last" at a recv
    assert "point-to-point receives" in verdict["headline"]
    top = report["findings"][0]
    assert top["kind"] == "compute_imbalance" and top["ranks"] == [2], top
    recv = next(c for c in report["collectives"] if c["name"] == "recv")
    assert recv["transfer_ms"] == 0.0 and recv["wait_ms"] > 0  # blocked, not transfer


def test_a_balanced_pipeline_raises_no_alarm(tmp_path: Path) -> None:
    report = pipeline_run(tmp_path / "run", 2)
    assert report["verdict"]["rank"] is None and report["stragglers"] == []
    assert [f for f in report["findings"] if f["severity"] in ("medium", "high")] == []
