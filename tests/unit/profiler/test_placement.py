"""A rank's number and the job's size from the launcher's variables (torchrun, then Slurm)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import needs_torch

from rankscope.profiler import rundir
from rankscope.profiler.placement import rank_and_world

SRUN_TASK = {  # what `srun -N2 -n8 python train.py` sets in its task 5 (on node 1)
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_TASKS": "8",
    "SLURM_NTASKS": "8",
}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "4"}, (3, 4)),
        # torchrun's pair wins over Slurm's (`srun torchrun ...`: one agent per node)
        ({"RANK": "3", "WORLD_SIZE": "16", **SRUN_TASK}, (3, 16)),
        (SRUN_TASK, (5, 8)),
        # `srun -n 2` inside a 16-task allocation: the step's task count, not the job's
        ({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "16"}, (1, 2)),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, (2, 4)),  # no step count: the job's
        ({"SLURM_PROCID": "2"}, (0, 1)),  # no task count: not a rank of a known job
        ({"SLURM_PROCID": "9", "SLURM_NTASKS": "4"}, (0, 1)),  # out of range: ignored
        ({"SLURM_PROCID": "x", "SLURM_NTASKS": "4"}, (0, 1)),
        ({"SLURM_PROCID": "-1", "SLURM_NTASKS": "4"}, (0, 1)),
    ],
)
def test_rank_and_world_from_torchrun_then_slurm(
    env: dict[str, str], expected: tuple[int, int]
) -> None:
    assert rank_and_world(env) == expected


@needs_torch
def test_collector_under_srun_writes_the_slurm_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No process group, no torchrun variables: the task's files are SLURM_PROCID's."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SRUN_TASK.items():
        monkeypatch.setenv(name, value)
    from rankscope import Collector

    run = tmp_path / "run"
    with Collector(run, nvml_period_ms=0, control_period_s=0, collectives=False) as col:
        col.step()
        col.step()
    meta = rundir.read_json(rundir.rank_meta_path(run, 5))
    assert (meta["rank"], meta["world_size"], meta["local_rank"]) == (5, 8, 1)
    assert (meta["node_rank"], meta["placement_source"]) == (1, "slurm")
    assert [s["step"] for s in rundir.read_steps(run, 5)] == [0, 1]
    assert not (run / rundir.RUN_MANIFEST).exists()  # run.json is rank 0's
