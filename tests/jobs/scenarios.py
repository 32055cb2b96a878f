"""Run a diagnosis scenario (``scenario_job.py``) under ``rankscope run`` and report on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs.collector_jobs import JOBS, job_env, launcher, rankscope

SCENARIO_JOB = JOBS / "scenario_job.py"
WINDOW = "4-21"


def scenario(
    tmp_path: Path,
    nproc: int,
    name: str,
    *args: str,
    profile: str = WINDOW,
    steps: int = 24,
    run_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The JSON report of one scenario run (``profile="off"``: the light layer only;
    ``run_args``: more ``rankscope run`` options, e.g. ``--profile-memory``)."""
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        profile,
        "--nvml-period-ms",
        "200",
        *run_args,
        "--",
        *launcher("module", nproc),
        str(SCENARIO_JOB),
        "--steps",
        str(steps),
        "--scenario",
        name,
        *args,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run(
        [sys.executable, "-m", "rankscope", "report", str(run), "--format", "json"],
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    out: dict[str, Any] = json.loads(report.stdout)
    return out
