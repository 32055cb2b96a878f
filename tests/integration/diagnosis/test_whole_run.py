"""The whole run from the light layer alone: real gloo jobs under ``rankscope run --profile off``.

No trace window is taken: the report reads the step timer (with DataLoader wait),
the flight recorder's collective log and telemetry of every step of every rank.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.scenarios import scenario

pytestmark = [pytest.mark.slow, needs_torch]


def test_two_stalls_in_a_long_run_are_named_at_their_steps(tmp_path: Path) -> None:
    r = scenario(
        tmp_path,
        3,
        "single_stall",
        "--rank",
        "2",
        "--ms",
        "300",
        "--at-step",
        "120,241",
        profile="off",
        steps=320,
    )
    assert r["run"]["step_source"] == "none"  # no trace: all of this is the light layer
    whole = r["whole_run"]
    assert whole["n_steps"] >= 300 and whole["unmatched_collectives"] == 0
    (s,) = r["stragglers"]
    assert (s["rank"], s["pattern"]) == (2, "intermittent")
    assert [st["step"] for st in s["steps"]] == [120, 241]
    assert all(250 < st["lag_ms"] < 360 for st in s["steps"])
    assert "rankscope attach" in s["hint"]
    assert r["stragglers"] == whole["stragglers"]


def test_a_data_loading_straggler_from_light_files(tmp_path: Path) -> None:
    r = scenario(tmp_path, 3, "data_getitem", "--rank", "1", "--ms", "60", profile="off", steps=60)
    assert [(s["rank"], s["pattern"], s["cause"]) for s in r["stragglers"]] == [
        (1, "persistent", "data_loading")
    ]
    assert r["stragglers"][0]["cause_breakdown"]["data_loading"] > 40


def test_a_balanced_run_raises_nothing_from_light_files(tmp_path: Path) -> None:
    r = scenario(tmp_path, 3, "balanced", profile="off", steps=150)
    assert r["whole_run"]["n_steps"] >= 140
    assert r["stragglers"] == [] and r["whole_run"]["rotating"] is None


def test_a_trace_window_adds_detail_to_the_whole_run(tmp_path: Path) -> None:
    """With a window, the top-level verdict is the trace's and the whole run sits beside it."""
    r = scenario(
        tmp_path, 3, "data_getitem", "--rank", "1", "--ms", "60", profile="10-15", steps=40
    )
    assert r["run"]["steps"] == list(range(10, 16))
    assert [(s["rank"], s["cause"]) for s in r["stragglers"]] == [(1, "data_loading")]
    whole = r["whole_run"]
    assert whole["n_steps"] >= 35
    assert [(s["rank"], s["cause"]) for s in whole["stragglers"]] == [(1, "data_loading")]
