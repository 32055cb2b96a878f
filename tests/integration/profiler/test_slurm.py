"""``rankscope run -- srun ...``: the collector in tasks Slurm started (a fake srun here).

The tasks have Slurm's variables and none of torchrun's, and the job starts its
``Collector`` before ``init_process_group``: each task writes its own rank's
files (``SLURM_PROCID``), records where it ran (``placement_source`` slurm), and the
report names the slow rank. ``tests/fakes/fake_srun.py`` starts the tasks the way
srun does (its environment passed on, the tasks' variables added).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, SLOW_RANK, TESTS, job_env, rankscope, report_of

from rankscope.profiler import rundir

SRUN = TESTS / "fakes" / "fake_srun.py"


@pytest.mark.slow
@needs_torch
def test_rankscope_run_wraps_srun(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = rankscope(
        "run", "--out", str(run), "--profile", "3-5", "--nvml-period-ms", "50", "--",
        sys.executable, str(SRUN), "-n", "2",
        sys.executable, str(JOBS / "slurm_job.py"), str(tmp_path / "theirs"),
        "--slow-rank", str(SLOW_RANK),
        timeout=180, env=job_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "theirs").exists()  # the job's Collector deferred to rankscope run's
    manifest = rundir.read_run_manifest(run)
    assert manifest["exit_code"] == 0 and manifest["world_size"] == 2
    assert manifest["nodes"] == [{"node": 0, "host": manifest["nodes"][0]["host"], "ranks": [0, 1]}]
    for rank in (0, 1):
        meta = manifest["ranks"][rank]
        assert (meta["rank"], meta["world_size"], meta["local_rank"]) == (rank, 2, rank)
        assert meta["placement_source"] == "slurm"
        assert [s["step"] for s in rundir.read_steps(run, rank)] == list(range(12))
    assert "torch.distributed says rank" not in rundir.log_path(run, 1).read_text()
    report = json.loads(report_of(run, "json"))
    assert report["stragglers"][0]["rank"] == SLOW_RANK
    assert [s["rank"] for s in report["whole_run"]["stragglers"]] == [SLOW_RANK]
