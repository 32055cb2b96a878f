"""``rankscope watch`` on a real 2-rank gloo job under ``rankscope run --profile off``:
``--once`` shows every rank stepping, and the live view ends by itself with the job."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobs.collector_jobs import JOBS, REPO, job_env, launcher, rankscope

from rankscope.profiler import rundir

pytest.importorskip("torch", reason="torch is not installed")


def _start_job(run: Path, stop_file: Path) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "rankscope.dashboard.cli", "run", "--out", str(run),
        "--profile", "off", "--nvml-period-ms", "200", "--",
        *launcher("module", 2), str(JOBS / "attach_job.py"),
        "--stop-file", str(stop_file), "--step-ms", "15",
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_steps(run: Path, ranks: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beats = rundir.read_heartbeats(run)
        if len(beats) == ranks and all(int(hb.get("step", 0)) >= 3 for hb in beats.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"ranks did not start stepping: {rundir.read_heartbeats(run)}")


@pytest.mark.slow
def test_watch_shows_every_rank_then_ends_with_the_job(tmp_path: Path) -> None:
    run, stop_file = tmp_path / "run", tmp_path / "stop"
    job = _start_job(run, stop_file)
    live: subprocess.Popen[str] | None = None
    try:
        _wait_for_steps(run, 2)
        once = rankscope("watch", str(run), "--once", timeout=60)
        assert once.returncode == 0, once.stdout + once.stderr
        lines = once.stdout.splitlines()
        head = " ".join(once.stdout.split("rank ┃")[0].split())  # the summary (may wrap)
        assert "2 of 2 rank(s)" in head and "2 running" in head, once.stdout
        rows = [ln.split() for ln in lines if ln.split()[:1] in (["0"], ["1"])]
        assert sorted(r[0] for r in rows) == ["0", "1"], once.stdout
        # rank, host, state, step, behind, steps/s, ...
        assert all(r[4] == "running" and int(r[6]) >= 3 for r in rows), once.stdout

        live = subprocess.Popen(
            [sys.executable, "-m", "rankscope.dashboard.cli", "watch", str(run),
             "--interval", "0.3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=job_env(), cwd=REPO,
        )  # fmt: skip
        time.sleep(1.0)
        assert live.poll() is None, "watch ended while the job still ran"
        stop_file.touch()
        out, err = live.communicate(timeout=90)
        assert live.returncode == 0, out + err
        assert "job ended (exit code 0)" in " ".join(out.split()), out
        assert "Traceback" not in err, err
    finally:
        stop_file.touch()
        if live is not None and live.poll() is None:
            live.kill()
            live.communicate()
        job_out, _ = job.communicate(timeout=90)
    assert job.returncode == 0, job_out[-3000:]
    # The same run shared as one page: the light layer's whole-run heatmap is in it.
    pytest.importorskip("plotly")
    page = tmp_path / "report.html"
    res = rankscope("report", str(run), "--format", "html", "-o", str(page), timeout=300)
    assert res.returncode == 0, res.stderr
    assert 'id="rs-whole-run"' in page.read_text(encoding="utf-8"), res.stderr


def test_watch_of_a_missing_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = rankscope("watch", str(tmp_path / "nope"), "--once", timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == f"rankscope watch: {tmp_path / 'nope'}: no such run directory"
