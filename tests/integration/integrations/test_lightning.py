"""``rankscope.integrations.lightning.RankscopeCallback`` in a real Lightning ``Trainer``.

DDP on CPU (gloo), two ranks under torchrun (Lightning joins torchrun's process
group), rank 1's ``training_step`` 40 ms slower: each rank's step log has one step
per optimizer step and ``rankscope report`` names rank 1. The ``pytorch_lightning``
twin runs one rank with gradient accumulation (a step is two batches).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, SLOW_RANK, job_env, launcher, report_of

from rankscope.profiler import rundir

JOB = JOBS / "lightning_job.py"
STEPS = 12

pytestmark = [pytest.mark.slow, needs_torch]


def _run(tmp_path: Path, nproc: int, *args: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    run = tmp_path / "run"
    proc = subprocess.run(
        [*launcher("module", nproc), str(JOB), str(run), *args],
        capture_output=True,
        text=True,
        timeout=180,
        # the flight recorder's ring (the whole-run verdict) is asked for before the
        # process group starts, as rankscope run does
        env=job_env(TORCH_FR_BUFFER_SIZE="2000"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def test_lightning_callback_on_two_ranks_names_the_slow_rank(tmp_path: Path) -> None:
    pytest.importorskip("lightning", reason="lightning is not installed")
    run, _ = _run(
        tmp_path, 2, "--steps", str(STEPS), "--slow-rank", str(SLOW_RANK), "--profile", "3-5"
    )
    manifest = rundir.read_run_manifest(run)
    assert manifest["world_size"] == 2 and sorted(manifest["ranks"]) == [0, 1]
    assert manifest["config"]["launcher"] == "lightning callback"
    for rank in (0, 1):
        assert [s["step"] for s in rundir.read_steps(run, rank)] == list(range(STEPS))
    assert sorted((w.rank, w.first_step, w.last_step) for w in rundir.capture_windows(run)) == [
        (0, 3, 5),
        (1, 3, 5),
    ]
    report = json.loads(report_of(run, "json"))
    assert report["stragglers"][0]["rank"] == SLOW_RANK
    assert [s["rank"] for s in report["whole_run"]["stragglers"]] == [SLOW_RANK]


def test_pytorch_lightning_callback_counts_optimizer_steps(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_lightning", reason="pytorch_lightning is not installed")
    run, _ = _run(
        tmp_path, 1, "--steps", "5", "--accumulate", "2", "--package", "pytorch_lightning"
    )
    steps = rundir.read_steps(run, 0)
    assert [s["step"] for s in steps] == list(range(5))  # 10 batches, 5 optimizer steps
    assert rundir.read_run_manifest(run)["config"]["launcher"] == "pytorch_lightning callback"
