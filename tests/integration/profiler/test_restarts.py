"""torchrun restarts the job: the restarted attempt never writes over the first one's files.

A 2-rank gloo job under ``rankscope run`` and ``torchrun --max-restarts 1``; rank 1
raises at step 6 of the first attempt only (``tests/jobs/hang_job.py
--first-attempt-only``), so torchrun restarts both workers and the second attempt
finishes. The run directory then holds the second attempt, ``attempt0/`` the
first; each report says which attempt it is, and the last one says why the job
was restarted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, job_env, launcher, rankscope, report_of

from rankscope.profiler import rundir

pytestmark = needs_torch


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("restart") / "run"
    job = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    job += ["--nproc-per-node=2", "--max-restarts=1", str(JOBS / "hang_job.py")]
    job += ["--scenario", "raise", "--rank", "1", "--at", "6", "--steps", "12"]
    job += ["--first-attempt-only", "--pg-timeout-s", "10"]
    args = ["run", "--out", str(out), "--profile", "off", "--nvml-period-ms", "0", "--"]
    proc = rankscope(*args, *job, timeout=180, env=job_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def steps_of(run: Path, rank: int) -> list[int]:
    return [s["step"] for s in rundir.read_steps(run, rank)]


def test_each_attempt_keeps_its_own_files(restarted: Path) -> None:
    first = restarted / "attempt0"
    assert rundir.attempt_dirs(restarted) == [(0, first)]
    for rank in (0, 1):
        assert rundir.read_json(first / f"rank{rank}.meta.json")["attempt"] == 0
        assert rundir.read_json(restarted / f"rank{rank}.meta.json")["attempt"] == 1
    # The first attempt stopped at rank 1's exception; the second ran to the end.
    assert max(steps_of(first, 1)) < 6 <= max(steps_of(restarted, 1))
    assert rundir.read_json(first / "run.json")["ended"] == "restarted"
    manifest = rundir.read_json(restarted / "run.json")
    assert manifest["attempt"] == 1 and manifest["exit_code"] == 0


def test_the_report_says_which_attempt_and_why_the_job_restarted(restarted: Path) -> None:
    report = json.loads(report_of(restarted, "json"))
    assert report["run"]["attempt"] == 1
    assert report["run"]["earlier_attempts"] == [str(restarted / "attempt0")]
    assert report["hang"] is None  # the last attempt finished
    warnings = report["run"]["warnings"]
    assert any("torchrun restarted this job: this report is of attempt 1" in w for w in warnings)
    why = next(w for w in warnings if w.startswith("attempt0 ended: "))
    assert "Rank 1 raised RuntimeError: corrupt batch at step 6" in why, warnings


def test_the_first_attempts_own_report_names_the_crash(restarted: Path) -> None:
    report = json.loads(report_of(restarted / "attempt0", "json"))
    assert report["run"]["attempt"] == 0 and report["hang"]["rank"] == 1
    assert report["hang"]["kind"] == "crashed", report["hang"]["headline"]
    assert any(
        "this is attempt 0 of a job torchrun restarted" in w for w in report["run"]["warnings"]
    )


def test_overwrite_clears_the_earlier_jobs_attempts(restarted: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    subprocess.run(["cp", "-r", str(restarted), str(out)], check=True)
    job = [*launcher("module", 1), str(JOBS / "hang_job.py"), "--steps", "3"]
    proc = rankscope(
        "run", "--out", str(out), "--overwrite", "--profile", "off", "--nvml-period-ms", "0",
        "--", *job, timeout=120, env=job_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rundir.attempt_dirs(out) == []
