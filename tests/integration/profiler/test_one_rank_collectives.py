"""A 1-rank job with a process group logs its collectives (the GPU test's job, on gloo).

``tests/jobs/nccl_job.py --backend gloo`` under ``rankscope run --profile off``:
plain python, world size 1, 25 all_reduces of 4 MiB. Before issue 26 the
collector skipped the log whenever the world size was 1, so a 1-rank NCCL job
(the only kind one GPU can run) left no ``rank0.collectives.jsonl``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import needs_torch
from jobs.collector_jobs import JOBS, rankscope

from rankscope.profiler import rundir


@needs_torch
def test_a_one_rank_job_logs_every_collective_and_says_where_from(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "off",
        "--nvml-period-ms",
        "0",
        "--",
        sys.executable,
        str(JOBS / "nccl_job.py"),
        "--backend",
        "gloo",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = rundir.read_collectives(run, 0)
    assert [r["name"] for r in rows] == ["all_reduce"] * 25
    assert [r["seq"] for r in rows] == list(range(1, 26))
    assert {r["bytes"] for r in rows} == {1 << 22}
    info = rundir.read_run_manifest(run)["ranks"][0]["collectives"]
    assert info["sources"] == ["fr"] and info["written"] == 25 and info["absent"] is None
    assert info["readers"]["fr"]["function"] == "_dump_fr_trace"
    assert info["readers"]["fr"]["error"] is None


@needs_torch
def test_a_lone_process_without_a_process_group_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    job = tmp_path / "alone.py"
    job.write_text(
        "import torch\n"
        "w = torch.zeros(4, requires_grad=True)\n"
        "opt = torch.optim.SGD([w], lr=0.1)\n"
        "for _ in range(3):\n"
        "    (w * 2).sum().backward()\n"
        "    opt.step()\n"
    )
    proc = rankscope(
        "run", "--out", str(run), "--profile", "off", "--nvml-period-ms", "0", "--",
        sys.executable, str(job), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rundir.read_collectives(run, 0) == []
    info = rundir.read_run_manifest(run)["ranks"][0]["collectives"]
    assert info["absent"].startswith("no process group")
    assert "collectives" not in proc.stderr  # nothing to warn a lone process about
