"""The always-on light layer in real 2-rank gloo jobs under ``rankscope run --profile off``.

Every rank leaves ``rank{R}.collectives.jsonl`` (the flight recorder's view) whose
``(pg, seq)`` instances match across ranks and fall inside the step timer's
steps; a DataLoader that sleeps on one rank shows as that rank's ``data_ns``;
the training result is the same with and without the collector.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, job_env, launcher, rankscope

from rankscope.profiler import rundir

JOB = JOBS / "light_layer_job.py"
STEPS = 30
DATA_SLEEP_MS = 20.0
DATA_RANK = 1


def job_args(result: Path) -> list[str]:
    return [
        str(JOB),
        "--steps",
        str(STEPS),
        "--data-slow-rank",
        str(DATA_RANK),
        "--data-sleep-ms",
        str(DATA_SLEEP_MS),
        "--result",
        str(result),
    ]


@pytest.fixture(scope="module")
def light_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("light")
    run, result = tmp / "run", tmp / "with.json"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "off",
        "--nvml-period-ms",
        "0",
        "--",
        *launcher("module", 2),
        *job_args(result),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, result


@needs_torch
def test_every_rank_logs_the_same_collective_instances(light_run: tuple[Path, Path]) -> None:
    run, _ = light_run
    rows = {r: rundir.read_collectives(run, r) for r in (0, 1)}
    for r in (0, 1):
        # DDP: its set-up broadcasts, then one gradient all_reduce per step.
        names = [c["name"] for c in rows[r]]
        assert names.count("all_reduce") == STEPS, names
        assert "broadcast" in names
        assert all(c["pg"] == "0" and not c["p2p"] for c in rows[r])
        reduces = [c for c in rows[r] if c["name"] == "all_reduce"]
        assert len({c["bytes"] for c in reduces}) == 1 and reduces[0]["bytes"] > 0
    keys = [[(c["pg"], c["seq"], c["name"], c["bytes"]) for c in rows[r]] for r in (0, 1)]
    assert keys[0] == keys[1]
    seqs = [c["seq"] for c in rows[0]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    meta = rundir.read_run_manifest(run)["ranks"][0]
    assert meta["collectives"]["dropped"] == 0 and meta["collectives"]["sources"] == ["fr"]


@needs_torch
def test_collectives_fall_inside_the_steps_that_issued_them(light_run: tuple[Path, Path]) -> None:
    run, _ = light_run
    for r in (0, 1):
        steps = rundir.read_steps(run, r)
        assert len(steps) == STEPS - 1  # step 0 begins at the first optimizer step
        first, last = steps[0]["start_ns"], steps[-1]["end_ns"]
        reduces = [c["enqueue_ns"] for c in rows_named(run, r, "all_reduce")]
        # The first all_reduce runs before the first optimizer step; every later one
        # (the backward of training iteration k) lies inside collector step k - 1.
        inside = [t for t in reduces if first <= t <= last]
        assert len(inside) == STEPS - 1
        for t, step in zip(inside, steps, strict=True):
            assert step["start_ns"] <= t <= step["end_ns"]


def rows_named(run: Path, rank: int, name: str) -> list[dict]:
    return [c for c in rundir.read_collectives(run, rank) if c["name"] == name]


@needs_torch
def test_data_wait_per_step_is_the_datasets_sleep(light_run: tuple[Path, Path]) -> None:
    run, _ = light_run
    waits = {r: [s["data_ns"] / 1e6 for s in rundir.read_steps(run, r)] for r in (0, 1)}
    slow = waits[DATA_RANK]
    assert all(DATA_SLEEP_MS <= ms < DATA_SLEEP_MS + 15 for ms in slow), slow
    assert statistics.median(waits[1 - DATA_RANK]) < 3.0, waits[1 - DATA_RANK]


@needs_torch
def test_the_training_result_is_the_same_without_the_collector(
    light_run: tuple[Path, Path], tmp_path: Path
) -> None:
    _, with_collector = light_run
    without = tmp_path / "without.json"
    proc = subprocess.run(
        [*launcher("module", 2), *job_args(without)],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(with_collector.read_text()) == json.loads(without.read_text())


@pytest.mark.gpu
@needs_torch
def test_nccl_collectives_carry_their_gpu_time(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "off",
        "--nccl-timing",
        "--",
        sys.executable,
        str(JOBS / "nccl_job.py"),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = rows_named(run, 0, "all_reduce")
    assert len(rows) >= 20
    assert all(r["state"] == "completed" for r in rows)
    assert all(r["end_ns"] is not None and r["end_ns"] >= r["enqueue_ns"] for r in rows)
    assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in rows)
    assert {r["bytes"] for r in rows} == {1 << 22}
    assert rundir.read_run_manifest(run)["ranks"][0]["collectives"]["sources"][0] == "nccl"
