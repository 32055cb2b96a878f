"""``app.model``'s whole-run shaping: max-pooling long runs, which ranks a big heatmap shows,
trace windows and the steps to pick.

Hand-made numbers: a 300 ms stall at one step among 5000 steps of ~1 ms noise; 100
ranks of which a few stand out; windows as a rank manifest lists them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.app import model


def test_a_one_step_stall_survives_max_pooling_5000_steps_into_500_columns() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(100, 5100)
    excess = rng.normal(0.0, 1.0, size=(4, len(steps)))
    excess[2, 3217 - 100] = 300.0  # rank 2 stalls once, at step 3217
    pooled, first = model.max_pool(excess, steps, 500)
    assert model.pool_width(len(steps), 500) == 10
    assert pooled.shape == (4, 500) and len(first) == 500
    assert first[0] == 100 and first[1] == 110 and first[-1] == 5090
    column = (3217 - 100) // 10  # steps 3210-3219
    assert first[column] == 3210
    assert pooled[2, column] == 300.0  # at full height, never averaged away
    assert pooled[:, column].argmax() == 2
    assert np.nanmax(np.delete(pooled[2], column)) < 10  # nowhere else


def test_max_pool_keeps_a_short_run_and_ignores_missing_values() -> None:
    steps = np.array([0, 1, 2, 3, 4])
    values = np.array([1.0, np.nan, 3.0, np.nan, np.nan])
    same, first = model.max_pool(values, steps, 600)
    assert first.tolist() == [0, 1, 2, 3, 4] and np.isnan(same[1])
    pooled, first = model.max_pool(values, steps, 2)  # columns of 3 steps: 0-2, 3-4
    assert first.tolist() == [0, 3]
    assert pooled[0] == 3.0 and np.isnan(pooled[1])


def test_up_to_64_ranks_every_rank_in_order() -> None:
    excess = np.zeros((3, 5))
    excess[1, 2] = 50
    assert model.heatmap_ranks(excess, [2, 0, 1], [1], 64) == [0, 1, 2]


def test_beyond_64_ranks_the_stragglers_then_the_latest_ranks_first() -> None:
    ranks = list(range(100))
    excess = np.zeros((100, 20))
    excess[:, :] = np.linspace(0, 1, 100)[:, None]  # the quiet ranks: higher rank, a bit later
    excess[37, 4] = 300.0  # a one-step stall
    excess[81, :] = 20.0  # a persistent straggler (peak 20)
    excess[5, 9] = 80.0
    shown = model.heatmap_ranks(excess, ranks, first=[81], max_ranks=64)
    assert len(shown) == 64
    assert shown[:4] == [81, 37, 5, 99]  # the straggler, then by worst step: 300, 80, then 1
    assert 0 not in shown  # the quietest ranks are left out


def _analysis(windows_by_rank: dict[int, list[dict[str, Any]]], steps: list[int]) -> Any:
    manifest = {"ranks": {r: {"windows": w} for r, w in windows_by_rank.items()}}
    return SimpleNamespace(run=SimpleNamespace(manifest=manifest), steps=steps)


TRIGGER = {
    "kind": "slow_steps",
    "step": 342,
    "median_ms": 10.2,
    "threshold_ms": 15.3,
    "recent_ms": [41.0, 40.8, 41.3],
}


def test_trace_windows_once_each_and_auto_capture_labelled_with_its_trigger() -> None:
    planned = {"first_step": 5, "last_step": 7, "file": "rank0.step5-7.pt.trace.json.gz"}
    auto = {"first_step": 345, "last_step": 347, "file": "x", "trigger": TRIGGER}
    a = _analysis({0: [planned, auto], 1: [planned, dict(auto, file="y")]}, [5, 6, 7])
    windows = model.trace_windows(a)
    assert windows[["first_step", "last_step", "auto"]].values.tolist() == [
        [5, 7, False],
        [345, 347, True],
    ]
    assert windows["label"].tolist() == [
        "trace steps 5–7",
        "auto-capture steps 345–347: steps slowed to 41 ms (median 10 ms)",
    ]


def test_trace_windows_of_a_plain_trace_folder_come_from_the_traced_steps() -> None:
    windows = model.trace_windows(_analysis({}, [3, 4, 5, 9, 20, 21]))
    assert windows[["first_step", "last_step"]].values.tolist() == [[3, 5], [9, 9], [20, 21]]
    assert windows["label"].tolist()[1] == "trace step 9"


@pytest.mark.parametrize(
    ("step", "expected"), [(6, (5, 7)), (50, (48, 52)), (49, (48, 52)), (8, None)]
)
def test_the_window_over_a_step_is_the_shortest_that_holds_it(
    step: int, expected: tuple[int, int] | None
) -> None:
    a = _analysis(
        {
            0: [
                {"first_step": 5, "last_step": 7},
                {"first_step": 40, "last_step": 60},
                {"first_step": 48, "last_step": 52},
            ]
        },
        [],
    )
    assert model.covering_window(model.trace_windows(a), step) == expected


def test_a_jump_lands_on_the_analysable_steps_inside_the_window() -> None:
    assert model.step_range_within((58, 62), [57, 59, 60, 61, 63]) == (59, 61)
    assert model.step_range_within((58, 62), [10, 11]) is None


def test_no_window_says_how_to_capture_one() -> None:
    text = wording.no_window_covers(60)
    assert text.startswith("No trace window covers step 60.")
    assert "`rankscope attach RUN --steps 3`" in text
    assert (
        wording.slow_step_label(60, 2, 300.4, None)
        == "step 60: rank 2 ~300 ms late (no trace window)"
    )
