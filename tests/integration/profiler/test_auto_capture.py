"""``rankscope run --auto-capture`` in a real 2-rank gloo job where rank 1 turns slow mid-run.

Rank 1 sleeps 30 ms more per step from step 60 to 159 (steps go from ~10 ms to
~40 ms on every rank: they wait for it at the all_reduce), is normal again,
then slow again from step 220 to the end (after 60 normal steps, so the
history the trigger compares with is normal again). The first slowdown must take one
trace window by itself, on both ranks, over slow steps, with the reason in the
request and the manifests; the second comes within the rate limit (5 minutes
apart) and is only logged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, launcher, rankscope

from rankscope.profiler import rundir

SLOW_FROM, SLOW_UNTIL, SLOW_AGAIN, STEPS = 60, 160, 220, 280


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("auto") / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "off",
        "--auto-capture",
        "--nvml-period-ms",
        "0",
        "--",
        *launcher("module", 2),
        str(JOBS / "light_layer_job.py"),
        "--steps",
        str(STEPS),
        "--step-ms",
        "10",
        "--slow-rank",
        "1",
        "--slow-ms",
        "30",
        "--slow-from",
        str(SLOW_FROM),
        "--slow-until",
        str(SLOW_UNTIL),
        "--slow-again",
        str(SLOW_AGAIN),
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 trace file(s)" not in proc.stderr  # one window on each of 2 ranks
    return run


@needs_torch
def test_a_slowdown_captures_one_window_of_slow_steps_on_every_rank(auto_run: Path) -> None:
    manifest = rundir.read_run_manifest(auto_run)
    windows = {r: meta["windows"] for r, meta in manifest["ranks"].items()}
    assert sorted(windows) == [0, 1]
    assert [len(w) for w in windows.values()] == [1, 1], windows
    w0, w1 = windows[0][0], windows[1][0]
    assert (w0["first_step"], w0["last_step"]) == (w1["first_step"], w1["last_step"])
    assert w0["last_step"] - w0["first_step"] + 1 == 3
    # The collector's step N is training iteration N + 1 (steps count between optimizer steps).
    assert w0["first_step"] >= SLOW_FROM and w0["last_step"] + 1 < SLOW_UNTIL
    for r in (0, 1):
        assert (auto_run / windows[r][0]["file"]).is_file()
        steps = {s["step"]: s for s in rundir.read_steps(auto_run, r)}
        for n in range(w0["first_step"], w0["last_step"] + 1):
            assert (steps[n]["end_ns"] - steps[n]["start_ns"]) / 1e6 > 25.0


@needs_torch
def test_the_trigger_is_recorded_in_the_request_and_the_manifests(auto_run: Path) -> None:
    request = rundir.read_request(auto_run)
    assert request is not None and request["id"].startswith("auto-")
    trigger = request["trigger"]
    assert trigger["kind"] == "slow_steps"
    assert SLOW_FROM <= trigger["step"] < SLOW_FROM + 20
    assert 8.0 <= trigger["median_ms"] <= 20.0
    assert len(trigger["recent_ms"]) == 3
    assert all(
        ms > trigger["threshold_ms"] >= 1.5 * trigger["median_ms"] for ms in trigger["recent_ms"]
    )
    for meta in rundir.read_run_manifest(auto_run)["ranks"].values():
        window = meta["windows"][0]
        assert window["request"] == request["id"] and window["trigger"] == trigger


@needs_torch
def test_the_second_slowdown_is_held_back_by_the_rate_limit(auto_run: Path) -> None:
    log = rundir.log_path(auto_run, 0).read_text()
    assert "requested steps" in log
    held = [line for line in log.splitlines() if "not captured" in line]
    assert held and "300 s apart" in held[0]
    step = int(held[0].split("slowdown at step ")[1].split()[0])
    assert SLOW_AGAIN <= step < SLOW_AGAIN + 20
    assert (
        not rundir.log_path(auto_run, 1).exists()
        or "requested" not in rundir.log_path(auto_run, 1).read_text()
    )


@needs_torch
def test_the_report_names_the_slow_rank_and_its_cause_from_the_window(auto_run: Path) -> None:
    """Rank 1's extra 30 ms is a sleep outside any torch op: untraced host time, in the window."""
    proc = rankscope("report", str(auto_run), "--format", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    windows = rundir.read_run_manifest(auto_run)["ranks"][0]["windows"]
    assert report["run"]["steps"] == list(
        range(windows[0]["first_step"], windows[0]["last_step"] + 1)
    )
    top = report["stragglers"][0]
    assert (top["rank"], top["cause"], top["cause_detail"]) == (1, "host", "untraced")
