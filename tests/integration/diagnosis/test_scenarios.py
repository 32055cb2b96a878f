"""The diagnosis on real jobs with a known, induced slowdown: the right rank, cause and pattern.

Each scenario is a small DDP job on CPU (gloo) from ``tests/jobs/scenario_job.py``,
run under ``rankscope run`` with one profiler window over steps 4-21, then
``rankscope report --format json``. The induced effects are several times the
noise of a busy 2-core machine; the decision rule, not the test, carries the
robustness: balanced runs are repeated and must raise nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import needs_torch
from jobs.scenarios import scenario

pytestmark = [pytest.mark.slow, needs_torch]


def summary(r: dict[str, Any]) -> list[tuple[int, str, str, str]]:
    return [(s["rank"], s["pattern"], s["cause"], s["severity"]) for s in r["stragglers"]]


def kinds(r: dict[str, Any]) -> set[str]:
    return {f["kind"] for f in r["findings"]}


@pytest.mark.parametrize(("nproc", "repeat"), [(4, 0), (4, 1), (4, 2), (2, 0), (2, 1)])
def test_balanced_runs_raise_no_straggler(tmp_path: Path, nproc: int, repeat: int) -> None:
    # On a loaded 2-core machine a rank may stand out in a window now and then (descheduled,
    # within the whole run's noise): named at most as low.
    r = scenario(tmp_path, nproc, "balanced")
    assert [s for s in r["stragglers"] if s["severity"] != "low"] == [], summary(r)
    assert "rotating" not in kinds(r)


def test_communication_heavy_balanced_run_raises_no_straggler(tmp_path: Path) -> None:
    r = scenario(tmp_path, 4, "comm_heavy")
    assert r["stragglers"] == [], summary(r)


def test_slow_dataset_getitem(tmp_path: Path) -> None:
    r = scenario(tmp_path, 4, "data_getitem", "--rank", "2", "--ms", "60")
    assert [(s[0], s[1], s[2]) for s in summary(r)] == [(2, "persistent", "data_loading")]
    top = r["stragglers"][0]
    assert top["severity"] == "high" and top["confidence"] in ("high", "medium")
    assert 45 < top["est_saving_ms_per_step"] < 75  # the 60 ms of sleep a step, give or take


def test_slow_dataloader_workers(tmp_path: Path) -> None:
    r = scenario(tmp_path, 3, "slow_workers", "--rank", "1", "--ms", "80")
    assert [(s[0], s[2]) for s in summary(r)] == [(1, "data_loading")]
    # 2 workers, one batch each at a time: late at every step, or every 2nd step
    (s,) = r["stragglers"]
    assert s["pattern"] == "persistent" or s["period_steps"] == 2, s


# Rank 1's extra operator work is ~14 ms a step (feature depth 600). Over the window's
# 18 steps on a loaded 2-core host its lateness sometimes does not stand out from the
# noise (2 of 5 runs beside a CI run); over the whole run it does, and the light
# layer's CPU time (rank 1: ~14 ms a step, rank 0: ~7) names the cause. The answer is
# the run's one verdict; the window may stay silent, never name another rank. Beside a
# CPU hog, rank 0 queues 3-8 ms for a CPU after each collective that held it and is
# nearly as late as rank 1 (1 run in 4 said "No straggler" before): the whole run
# judges each rank without its own contention there (``hidden_by_queue_ms``). One CI
# run in about ten said "No straggler" on 24 steps (not reproduced beside 2-5 busy or
# bursty loops, 12 runs): 40 steps give the whole run more of them to judge.
def test_uneven_batch_is_cpu_compute(tmp_path: Path) -> None:
    r = scenario(tmp_path, 2, "uneven_batch", "--rank", "1", steps=40)
    v = r["verdict"]
    assert (v["rank"], v["pattern"], v["cause"]) == (1, "persistent", "cpu_compute"), v
    assert [(s[0], s[2]) for s in summary(r)] in ([], [(1, "cpu_compute")]), summary(r)


def test_python_work_outside_torch_ops_is_untraced_host_time(tmp_path: Path) -> None:
    r = scenario(tmp_path, 3, "python_work", "--rank", "2", "--ms", "60")
    assert [(s[0], s[1], s[2]) for s in summary(r)] == [(2, "persistent", "host")]
    top = r["stragglers"][0]
    assert top["cause_detail"] == "untraced" and "py-spy" in top["hint"]
    assert top["cause_breakdown"]["host"] > 40


def test_single_long_stall_is_intermittent_at_its_step(tmp_path: Path) -> None:
    r = scenario(tmp_path, 3, "single_stall", "--rank", "2", "--ms", "300", "--at-step", "12")
    assert [(s[0], s[1]) for s in summary(r)] == [(2, "intermittent")]
    (stall,) = r["stragglers"][0]["steps"]
    assert stall["step"] == 12 and 250 < stall["lag_ms"] < 360


def test_rotating_stalls_name_no_single_rank(tmp_path: Path) -> None:
    r = scenario(tmp_path, 3, "rotating", "--ms", "150")
    assert r["stragglers"] == [], summary(r)
    (rot,) = [f for f in r["findings"] if f["kind"] == "rotating"]
    assert sorted(rot["ranks"]) == [0, 1, 2]


def test_two_slow_ranks_of_different_size(tmp_path: Path) -> None:
    r = scenario(tmp_path, 4, "two_slow", "--rank", "1", "--rank2", "3", "--ms", "80")
    assert [(s[0], s[1], s[2]) for s in summary(r)] == [
        (1, "persistent", "data_loading"),
        (3, "persistent", "data_loading"),
    ]
    first, second = r["stragglers"]
    assert first["est_saving_ms_per_step"] > second["est_saving_ms_per_step"] > 5
    # One joint what-if, not a sum: fixing both saves about the larger one's lateness.
    joint = r["imbalance"]["joint_saving_ms_per_step"]
    assert joint == pytest.approx(
        first["est_saving_ms_per_step"] + second["est_saving_ms_per_step"], abs=0.01
    )
    assert 60 < joint < 100
