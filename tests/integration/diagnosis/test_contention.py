"""CPU contention, onset and period on real gloo jobs, and the one verdict over both sources.

A CPU hog is a busy-loop process pinned to one CPU (``scenario_job.busy_loop``).
Beside a balanced job it loads the host for every rank: nothing may be raised
above low. Pinned with one rank's training thread from step N on
(``contended``), that rank is named with cause ``host_contention`` from about
step N. A rank stalling every 4th step gets period 4, and one with 4x the work every
4th step period 4 and cause ``cpu_compute``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_torch
from jobs.scenario_job import busy_loop
from jobs.scenarios import scenario

from rankscope.profiler import rundir

pytestmark = [pytest.mark.slow, needs_torch]


@pytest.fixture
def cpu_hog() -> Iterator[subprocess.Popen[bytes]]:
    hog = busy_loop(max(os.sched_getaffinity(0)))
    yield hog
    hog.kill()
    hog.wait()


def alarms(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Everything the report raises above low: findings and both sources' stragglers."""
    out = [(f["kind"], f["severity"]) for f in r["findings"] if f["severity"] != "low"]
    whole = r["whole_run"] or {"stragglers": []}
    out += [
        (f"straggler {s['rank']} {s['cause']}", s["severity"])
        for s in r["stragglers"] + whole["stragglers"]
        if s["severity"] != "low"
    ]
    return out


@pytest.mark.parametrize("repeat", [0, 1, 2])
def test_a_balanced_run_beside_a_cpu_hog_raises_nothing_above_low(
    tmp_path: Path, cpu_hog: subprocess.Popen[bytes], repeat: int
) -> None:
    r = scenario(tmp_path, 3, "balanced", profile="10-15", steps=40)
    assert alarms(r) == []
    assert r["verdict"]["rank"] is None or r["verdict"]["cause"] == "host_contention"


def test_a_rank_sharing_its_cpu_from_step_15_is_contention_from_step_15(tmp_path: Path) -> None:
    r = scenario(
        tmp_path, 3, "contended", "--rank", "1", "--at-step", "15", profile="off", steps=45
    )
    top = r["whole_run"]["stragglers"][0]
    assert (top["rank"], top["cause"]) == (1, "host_contention"), top
    # 10 seen beside two busy loops: rank 1 then queued 13-36 ms a step from step 9 (the
    # others 0-39, 18 and 13 on average), 67-99 from step 15: the rise began early there
    assert top["onset_step"] is not None and 9 <= top["onset_step"] <= 18, top
    assert top["onset_s"] > 0
    # the light layer's own record: rank 1's thread queued for a CPU far more from step 15
    steps = {row["step"]: row for row in rundir.read_steps(tmp_path / "run", 1)}
    assert all("cpu_ns" in row and "runq_ns" in row for row in steps.values())
    before = sum(steps[s]["runq_ns"] for s in range(5, 15)) / 10
    after = sum(steps[s]["runq_ns"] for s in range(20, 30)) / 10
    assert after > before + 10e6, (before, after)
    v = r["verdict"]
    assert (v["rank"], v["cause"], v["onset_step"]) == (1, "host_contention", top["onset_step"])
    assert "from step" in v["headline"]


# A stall (pure Python, half busy, half asleep) every 4th step; and long sequences
# bucketed onto one rank: its batch 4x at steps 2, 6, 10, ... (~3x its usual operator
# time more on those steps, nothing on the others), read from its thread's CPU time.
@pytest.mark.parametrize(
    ("name", "extra", "cause"),
    [("periodic", ("--ms", "80"), None), ("long_batches", (), "cpu_compute")],
)
def test_late_every_fourth_step_has_period_four(
    tmp_path: Path, name: str, extra: tuple[str, ...], cause: str | None
) -> None:
    r = scenario(
        tmp_path,
        2,
        name,
        "--rank",
        "1",
        *extra,
        "--at-step",
        "2",
        "--every",
        "4",
        profile="off",
        steps=42,
    )
    (s,) = r["whole_run"]["stragglers"]
    assert (s["rank"], s["period_steps"]) == (1, 4), s
    assert all(st["step"] % 4 == 2 for st in s["steps"])
    v = r["verdict"]
    assert (v["rank"], v["period_steps"]) == (1, 4)
    assert "every 4th step" in v["headline"]
    if cause is not None:
        assert s["cause"] == v["cause"] == cause, s
