"""SIGTERM to a rank blocked inside a C++ collective still leaves its evidence.

Python runs a signal handler only when the collective returns: before, a rank
the launcher stopped while it waited in gloo wrote nothing, and a peer killed
without a word could not be told from the rank that hung. Two real gloo
processes (``tests/jobs/blocked_signal_job.py``): rank 0 waits in seq 2, which
rank 1 never joins; SIGTERM to rank 0 must put its signal evidence on disk
within a few seconds, naming the all_reduce in flight.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_torch
from jobs.collector_jobs import JOBS, REPO, job_env

from rankscope.profiler import evidence

pytestmark = needs_torch


def test_sigterm_inside_a_collective_writes_signal_evidence(tmp_path: Path) -> None:
    out, store = tmp_path / "run", tmp_path / "store"
    out.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(JOBS / "blocked_signal_job.py"),
                "--rank",
                str(r),
                "--store",
                str(store),
                "--out",
                str(out),
            ],
            env=job_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        assert procs[0].stdout is not None
        line = procs[0].stdout.readline()  # "blocking" once seq 1 is done
        assert line.strip() == "blocking", line
        time.sleep(1.0)  # well inside seq 2's all_reduce
        procs[0].send_signal(signal.SIGTERM)
        proof_file = out / "rank0.hang.json"
        deadline = time.monotonic() + 10
        while not proof_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proof_file.exists(), "no evidence 10 s after SIGTERM"
        proof = evidence.read_evidence(proof_file)
        assert proof.trigger == "signal" and proof.detail == "SIGTERM"
        in_flight = [(e.seq, e.name) for e in proof.ring if not e.completed]
        assert in_flight == [(2, "all_reduce")], proof.ring
        training = next(t for t in proof.threads if t.is_training)
        # the blocked frame: torch's all_reduce, called from the job's main()
        functions = [f.function for f in training.frames]
        assert functions[-1] == "all_reduce" and "main" in functions, functions
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=30)
