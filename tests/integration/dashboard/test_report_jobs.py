"""`rankscope report` on runs it has never seen: real gloo jobs traced with plain torch.profiler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_torch, rankscope_cmd

pytestmark = needs_torch

JOB = Path(__file__).resolve().parents[2] / "jobs" / "tb_profiled_ddp.py"
pytest.importorskip("torch")


def run_job(out: Path, nproc: int, **env: str) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--standalone", str(JOB), str(out),
    ]  # fmt: skip
    # A session of its own, so a hung job's workers die with it instead of lingering.
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the training job hung")
    assert proc.returncode == 0, stderr[-3000:]


def report(path: Path) -> dict:
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_data_loading_straggler_in_a_tensorboard_trace_folder(tmp_path: Path) -> None:
    run_job(tmp_path, 3, SLOW_RANK="2", SLOW_KIND="data", STALL_MS="60")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and all(f.startswith("worker") for f in files)
    r = report(tmp_path)
    assert r["run"]["ranks"] == [0, 1, 2]
    assert r["run"]["steps"] == [2, 3, 4, 5, 6, 7]
    top = r["stragglers"][0]
    assert (top["rank"], top["cause"]) == (2, "data_loading")
    assert [s["rank"] for s in r["stragglers"]] == [2]
    by_rank = {x["rank"]: x for x in r["ranks"]}
    assert by_rank[2]["data_ms"] > 55  # the 60 ms sleep, seen in the trace
    assert by_rank[0]["comm_wait_ms"] > 40  # ... and paid by the others, in all_reduce
    # gloo's all_reduce runs on the host, so there is no GPU and no NCCL overlap.
    assert by_rank[0]["gpu_busy_pct"] is None and by_rank[0]["comm_overlap_pct"] is None


@pytest.mark.slow
def test_compute_straggler_on_cpu_is_cpu_compute(tmp_path: Path) -> None:
    run_job(tmp_path, 2, SLOW_RANK="1", SLOW_KIND="compute", STALL_MS="60")
    r = report(tmp_path)
    top = r["stragglers"][0]
    # Without a GPU the extra matmuls are operator work on the CPU, not data loading.
    assert (top["rank"], top["cause"], top["pattern"]) == (1, "cpu_compute", "persistent")
