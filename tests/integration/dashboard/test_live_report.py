"""A report on a job that still runs says so; the same run once stopped does not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, needs_torch
from jobs.collector_jobs import stepping_collector


def _report(run: Path, fmt: str = "text") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankscope", "report", str(run), "--format", fmt],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _overview_infos(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The info boxes of the dashboard's Overview on ``run`` (Streamlit's AppTest)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RANKSCOPE_DASHBOARD_PATH", str(run))
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(tmp_path / "c"))
    at = AppTest.from_file(str(REPO / "dashboard" / "app" / "main.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return [i.value.replace("\\", "") for i in at.info]


def _progress_step(run: Path) -> int:
    from rankscope.profiler.evidence import read_progress

    try:
        p = read_progress(run, 0)
    except Exception:  # a record caught half-written: look again
        return 0
    return 0 if p is None else p.step.current_step


@needs_torch
def test_a_report_on_a_running_job_says_it_is_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    with stepping_collector(run, nvml_period_ms=0, profile_steps=None) as col:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(run.glob("rank0.progress.json")):
            time.sleep(0.2)
        # the progress record is rewritten every PROGRESS_PERIOD_S (2 s): wait for one
        # written after a step finished (the first is written at start, at step 0)
        while time.monotonic() < deadline and _progress_step(run) < 1:
            time.sleep(0.1)
        col.flush()
        text = _report(run)
        live = json.loads(_report(run, "json").stdout)["run"]["live"]
        now = col.current_step
        overview = _overview_infos(run, tmp_path, monkeypatch)
    assert text.returncode == 0, text.stderr
    body = text.stdout.split("\n", 2)[2]
    assert body.startswith("LIVE: the job is still running (1 rank(s), at step"), text.stdout
    # the step its progress record (at most PROGRESS_PERIOD_S old) says
    assert live["running"] == [0] and 1 <= live["step"] <= now, (live, now)
    assert any(i.startswith("LIVE: the job is still running") for i in overview), overview

    after = _report(run)
    assert after.returncode == 0, after.stderr
    assert "LIVE" not in after.stdout
    assert json.loads(_report(run, "json").stdout)["run"]["live"] is None
