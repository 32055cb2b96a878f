"""Many collectives a step: a real FSDP2 job (``fully_shard`` per block, gloo, 2 ranks).

Rank 1 trains on twice the batch, so it arrives last at most all-gathers while
rank 0 waits in each. The whole run's evidence is each rank's own arrival lag per
collective instance (``analysis.arrivals``): it names rank 1, as the trace window
does, where "work before the step's last collective" (rank 0's waits included)
named nobody.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, job_env, launcher, rankscope

pytestmark = [pytest.mark.slow, needs_torch]


def fsdp_report(tmp_path: Path, profile: str, *args: str) -> dict[str, Any]:
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        profile,
        "--nvml-period-ms",
        "200",
        "--",
        *launcher("module", 2),
        str(JOBS / "fsdp_job.py"),
        "--steps",
        "30",
        *args,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = subprocess.run(
        [sys.executable, "-m", "rankscope", "report", str(run), "--format", "json"],
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def test_the_rank_with_twice_the_batch_is_late_in_the_window_and_the_whole_run(
    tmp_path: Path,
) -> None:
    r = fsdp_report(tmp_path, "10-14", "--rank", "1", "--factor", "2")
    assert [(s["rank"], s["cause"]) for s in r["stragglers"]] == [(1, "cpu_compute")]
    whole = r["whole_run"]
    assert [s["rank"] for s in whole["stragglers"]] == [1]
    judged = [s["late_rank"] for s in whole["steps"] if s["late_rank"] >= 0]
    assert Counter(judged)[1] > 0.7 * len(judged)  # late at most steps, not rank 0
    assert whole["matched_collectives"] > 10 * whole["n_steps"]  # many collectives a step
