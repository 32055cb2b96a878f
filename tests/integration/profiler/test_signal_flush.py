"""SIGTERM to ``rankscope run`` (a scheduler's stop, a user's kill) leaves every
rank's records up to the signal and a report that says the job was stopped.

Before, a rank ended by the default action of SIGTERM lost what it had buffered
(up to ``flush_period_s``, 2 s, of step and collective records), its meta kept no
end time, and the report read the collective in flight at the signal as a hang
("HUNG: every rank entered ... none completed; the transport is the suspect").
A real 2-rank gloo job under torchrun (``tests/jobs/light_layer_job.py``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_torch
from jobs.collector_jobs import JOBS, REPO, job_env, launcher, report_of

pytestmark = needs_torch


def _records(path: Path) -> list[dict[str, object]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if "schema" not in r]


def test_sigterm_keeps_the_records_up_to_the_signal_and_reads_as_stopped(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rankscope.dashboard.cli", "run", "--out", str(run)]
    cmd += ["--profile", "off", "--nvml-period-ms", "0", "--", *launcher("module", 2)]
    cmd += [str(JOBS / "light_layer_job.py"), "--steps", "100000", "--step-ms", "20"]
    log = open(tmp_path / "job.log", "w")  # noqa: SIM115 - closed below
    job = subprocess.Popen(cmd, env=job_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(_records(run / "rank1.steps.jsonl")) < 5:
            time.sleep(0.2)
        assert _records(run / "rank1.steps.jsonl"), (tmp_path / "job.log").read_text()[-3000:]
        time.sleep(1.0)  # into the next flush period: its records are only in memory
        sent_ns = time.time_ns()
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        log.close()
    for rank in (0, 1):
        steps = _records(run / f"rank{rank}.steps.jsonl")
        last_end = max(int(str(s["end_ns"])) for s in steps)
        # steps of ~20 ms: the last one on disk ended just before the signal
        assert sent_ns - last_end < 0.5e9, (rank, (sent_ns - last_end) / 1e9)
        meta = json.loads((run / f"rank{rank}.meta.json").read_text())
        assert meta["end_ns"] is not None and meta["end_ns"] >= sent_ns, meta.get("end_ns")
    text = report_of(run, "text")
    headline = text.split("\n", 2)[2].splitlines()[0]
    assert headline.startswith("STOPPED: The job was stopped by a signal (SIGTERM to every"), text
