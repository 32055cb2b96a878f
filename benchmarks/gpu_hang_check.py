"""On a machine with an NVIDIA GPU: a stalled NCCL rank leaves its NCCL ring and stacks.

Run from the repository root (about 30 s)::

    OUT=/tmp/gpu_hang python3 benchmarks/gpu_hang_check.py

A 1-rank NCCL job (NCCL refuses two ranks on one GPU) runs under ``rankscope run
--nccl-timing --profile off`` with a 2 s stall threshold: 10 steps of a 4 MiB
all_reduce and an optimizer step, then one step that sleeps 5 s after issuing its
all_reduce (past the threshold: the rank is ``stalled`` and writes
``rank0.hang.json``), then 5 more steps. It checks that the evidence holds NCCL's
ring (``ring_source`` "nccl", the all_reduce entries with their states), the
training thread's stack in ``sleepy_step``, and what ``rankscope report`` says of
the run (a slow, not hung, rank). ``$OUT/summary.json`` holds the results; the exit
status is 0 when every check passed. Wheels in ``.whl/`` (msgspec, platformdirs)
are unpacked by ``benchmarks/gpu_check.py``'s ``child_env``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

JOB = r"""
import os, sys, time
import torch
import torch.distributed as dist

def sleepy_step(x):
    dist.all_reduce(x)
    time.sleep(5.0)  # past the 2 s stall threshold

def main():
    store = sys.argv[1]
    dist.init_process_group("nccl", init_method="file://" + store, rank=0, world_size=1)
    torch.cuda.set_device(0)
    w = torch.zeros(1 << 20, device="cuda", requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    for i in range(16):
        (w * 2).sum().backward()
        if i == 10:
            sleepy_step(w.grad)
        else:
            dist.all_reduce(w.grad)
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
    time.sleep(0.5)
    dist.destroy_process_group()

main()
"""


def main() -> int:
    import gpu_check  # its child_env puts the wheels and src/ on PYTHONPATH

    gpu_check.WHEELS = gpu_check.unpack_wheels()

    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_hang_"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_hang_work_"))
    job = work / "job.py"
    job.write_text(JOB)
    run = work / "run"
    env = gpu_check.child_env(RANKSCOPE_STALL_S="2")
    res: dict[str, Any] = {}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "rankscope", "run", "--out", str(run), "--profile", "off"),
            *("--nccl-timing", "--", sys.executable, str(job), str(work / "store")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    res["job_rc"] = proc.returncode
    res["job_stderr_tail"] = proc.stderr[-2000:]
    files = sorted(p.name for p in run.glob("*")) if run.exists() else []
    res["files"] = files
    hang_files = sorted(run.glob("rank0*.hang.json"))
    res["hang_files"] = [p.name for p in hang_files]
    if hang_files:
        ev = json.loads(hang_files[0].read_text())
        ring = ev.get("ring") or []
        res["trigger"] = ev.get("trigger")
        res["ring_source"] = ev.get("ring_source")
        res["ring_entries"] = len(ring)
        res["ring_names"] = sorted({e.get("name") for e in ring})
        res["ring_states"] = sorted({str(e.get("completed")) for e in ring})
        res["last_entry"] = ring[-1] if ring else None
        training = [t for t in ev.get("threads") or [] if t.get("is_training")]
        frames = training[0].get("frames") if training else []
        res["training_functions"] = [f.get("function") for f in frames or []][-6:]
        res["evidence_bytes"] = hang_files[0].stat().st_size
    rep = subprocess.run(
        [sys.executable, "-m", "rankscope", "report", str(run), "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    res["report_rc"] = rep.returncode
    try:
        doc = json.loads(rep.stdout)
        hang = doc.get("hang") or {}
        res["report_hang_kind"] = hang.get("kind")
        res["report_hang_headline"] = hang.get("headline")
        res["report_warnings"] = doc["run"]["warnings"]
    except Exception as e:
        res["report_error"] = f"{type(e).__name__}: {e}; stderr {rep.stderr[-1000:]}"
    checks = {
        "job ran": res["job_rc"] == 0,
        "evidence written": bool(hang_files),
        "NCCL ring in the evidence": res.get("ring_source") == "nccl"
        and "all_reduce" in res.get("ring_names", []),
        "stack in sleepy_step": "sleepy_step" in (res.get("training_functions") or []),
    }
    res["checks"] = checks
    (out / "summary.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str))
    print("VERDICT", "PASS" if all(checks.values()) else "FAIL", checks)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
