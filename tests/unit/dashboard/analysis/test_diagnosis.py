"""The diagnosis on hand-built collective tables: every number here can be checked by hand.

``fakes.collectives.run_of(gaps)``: one all_reduce per step; rank r does
``gaps[r][s]`` ms of its own work before the collective of step s, which ends
for everyone when the last rank arrives plus a 2 ms transfer. So the step
lasts ``max_r gap + 2`` ms, and the others wait for the rank with the longest gap.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes.collectives import MS, run_of

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.diagnosis import (
    Components,
    build_gaps,
    diagnose,
    shapley_savings,
    what_if,
)


def no_components(n: int) -> dict[int, Components]:
    e = iv.empty()
    return {r: Components.build(e, e, e, e) for r in range(n)}


def jitter(n_ranks: int, n_steps: int, base: float, spread: float, seed: int = 0) -> np.ndarray:
    return base + np.random.default_rng(seed).uniform(-spread, spread, (n_ranks, n_steps))


def test_gaps_are_each_ranks_own_work_before_each_collective() -> None:
    table, windows = run_of([[10, 12], [30, 31], [11, 9]])
    gaps = build_gaps(table, [0, 1, 2], windows)
    assert gaps is not None
    assert np.allclose(gaps.gap_ms, [[10, 12], [30, 31], [11, 9]])
    # rank 0 waited 20 ms for rank 1 at step 0 (30 - 10), 19 ms at step 1
    assert np.allclose(gaps.wait_ms[0], [20, 19])


def test_what_if_cuts_the_late_ranks_gaps_to_the_median_of_the_others() -> None:
    table, windows = run_of([[10, 10], [30, 40], [12, 8]])
    gaps = build_gaps(table, [0, 1, 2], windows)
    assert gaps is not None
    # Step 0: 30 -> median(10, 12) = 11, the step's last arrival becomes 12: saves 18.
    # Step 1: 40 -> median(10, 8) = 9, the last arrival becomes 10: saves 30. Mean 24.
    assert what_if(gaps, [1], 2) == pytest.approx(24.0)
    assert what_if(gaps, [0], 2) == pytest.approx(0.0)


def test_a_persistent_straggler_its_cause_and_saving() -> None:
    gaps = jitter(3, 12, 10.0, 0.5)
    gaps[1] += 20.0  # rank 1 does 20 ms more before every collective
    table, windows = run_of(gaps.tolist())
    # Rank 1's extra 20 ms is data loading: the 20 ms right before each of its arrivals.
    starts = table["start_ns"][table["rank"] == 1]
    e = iv.empty()
    comps = no_components(3)
    comps[1] = Components.build(iv.union(starts - 20 * MS, starts), e, e, e)
    d = diagnose(table, [0, 1, 2], comps, windows, has_gpu=False)
    assert [(v.rank, v.pattern, v.cause) for v in d.stragglers] == [
        (1, "persistent", "data_loading")
    ]
    v = d.stragglers[0]
    assert v.excess_ms_per_step == pytest.approx(20.0, abs=1.0)
    assert v.excess_ci_ms is not None and v.excess_ci_ms[0] > 18.0
    assert v.cause_breakdown["data_loading"] == pytest.approx(20.0, abs=0.1)
    # Fixing it brings each step back to the slower of the other two (~10.5 ms of gap).
    assert v.est_saving_ms_per_step == pytest.approx(d.joint_saving_ms_per_step)
    assert 19.0 < v.est_saving_ms_per_step < 20.5
    assert v.severity == "high" and v.confidence == "high"  # ~20 of ~32 ms per step
    assert v.late_steps == 12


def test_untraced_time_is_host_with_a_hint_and_traced_ops_are_cpu_compute() -> None:
    gaps = jitter(2, 10, 10.0, 0.5)
    gaps[0] += 15.0
    table, windows = run_of(gaps.tolist())
    d = diagnose(table, [0, 1], no_components(2), windows, has_gpu=False)
    (v,) = d.stragglers
    assert (v.rank, v.cause, v.cause_detail) == (0, "host", "untraced")
    assert v.hint is not None and "py-spy" in v.hint

    starts = table["start_ns"][table["rank"] == 0]
    e = iv.empty()
    comps = no_components(2)
    comps[0] = Components.build(e, e, e, iv.union(starts - 24 * MS, starts))
    (v,) = diagnose(table, [0, 1], comps, windows, has_gpu=False).stragglers
    assert (v.cause, v.cause_detail) == ("cpu_compute", None)
    (v,) = diagnose(table, [0, 1], comps, windows, has_gpu=True).stragglers
    assert v.cause == "host"  # host operators beside a GPU


def test_balanced_ranks_with_jitter_raise_nothing() -> None:
    for seed in range(5):
        table, windows = run_of(jitter(4, 12, 10.0, 2.0, seed).tolist())
        d = diagnose(table, [0, 1, 2, 3], no_components(4), windows, has_gpu=False)
        assert d.stragglers == [] and d.rotating is None, seed


def test_a_rank_slightly_late_every_step_is_within_the_spread() -> None:
    """3 ms later every step of ~12 ms: under the 5 ms floor, not a straggler."""
    gaps = jitter(2, 12, 10.0, 0.3)
    gaps[1] += 3.0
    table, windows = run_of(gaps.tolist())
    assert diagnose(table, [0, 1], no_components(2), windows, has_gpu=False).stragglers == []


def test_one_long_stall_is_intermittent_at_its_step_not_a_mean() -> None:
    gaps = jitter(3, 10, 10.0, 0.5)
    gaps[2, 6] += 300.0
    table, windows = run_of(gaps.tolist())
    d = diagnose(table, [0, 1, 2], no_components(3), windows, has_gpu=False)
    (v,) = d.stragglers
    assert (v.rank, v.pattern) == (2, "intermittent")
    assert [s.step for s in v.steps] == [6]
    assert v.steps[0].lag_ms == pytest.approx(300.0, abs=1.5)
    # Fixing it saves the 300 ms once, i.e. ~30 ms per step over the 10 steps.
    assert v.est_saving_ms_per_step == pytest.approx(30.0, abs=1.5)


def test_lateness_moving_between_ranks_is_rotating_with_no_straggler() -> None:
    gaps = jitter(3, 12, 5.0, 0.5)
    for s in range(12):
        gaps[s % 3, s] += 150.0
    table, windows = run_of(gaps.tolist())
    d = diagnose(table, [0, 1, 2], no_components(3), windows, has_gpu=False)
    assert d.stragglers == []
    assert d.rotating is not None
    assert d.rotating.counts == {0: 4, 1: 4, 2: 4}
    assert [st.step for st in d.rotating.steps] == list(range(12))
    assert d.rotating.ranks_by_step == [s % 3 for s in range(12)]
    assert all(149 < st.lag_ms < 151 for st in d.rotating.steps)


def test_two_stragglers_share_one_joint_saving() -> None:
    """Ranks 1 and 2 are 40 and 20 ms late (gaps 50 and 30 vs 10)."""
    gaps = np.array([[10.0] * 8, [50.0] * 8, [30.0] * 8, [10.0] * 8])
    table, windows = run_of(gaps.tolist())
    built = build_gaps(table, [0, 1, 2, 3], windows)
    assert built is not None
    # Fixing 1 alone: the step waits for rank 2 (30): saves 20. Fixing 2 alone: 0.
    # Both: back to 10: saves 40. Shapley: rank 1 (20 + 40) / 2 = 30, rank 2 (0 + 20) / 2 = 10.
    shares, joint = shapley_savings(built, [1, 2], 8)
    assert joint == pytest.approx(40.0)
    assert shares[1] == pytest.approx(30.0) and shares[2] == pytest.approx(10.0)
    d = diagnose(table, [0, 1, 2, 3], no_components(4), windows, has_gpu=False)
    assert [(v.rank, v.pattern) for v in d.stragglers] == [(1, "persistent"), (2, "persistent")]
    assert [v.est_saving_ms_per_step for v in d.stragglers] == [30.0, 10.0]
    assert d.joint_saving_ms_per_step == 40.0


def test_per_step_rows_name_the_wait_each_rank_caused() -> None:
    table, windows = run_of([[10, 10], [30, 10], [10, 25]])
    d = diagnose(table, [0, 1, 2], no_components(3), windows, has_gpu=False)
    rows = {(r.rank, r.step): r for r in d.per_step}
    # Step 0: ranks 0 and 2 wait 20 ms for rank 1; step 1: 0 and 1 wait 15 for rank 2.
    assert rows[(1, 0)].caused_wait_ms == pytest.approx(20.0)
    assert rows[(2, 1)].caused_wait_ms == pytest.approx(15.0)
    assert rows[(0, 0)].caused_wait_ms == 0.0
    assert rows[(1, 0)].lag_ms == pytest.approx(20.0) and rows[(0, 0)].lag_ms == 0.0
    assert rows[(1, 0)].step_ms == pytest.approx(32.0)


def test_a_stray_hiccup_beside_a_stragglers_stalls_is_not_rotating() -> None:
    """Rank 2 stalls twice; rank 0 once (a scheduler hiccup): rank 2 stays a straggler."""
    gaps = jitter(3, 20, 10.0, 0.5)
    gaps[2, 5] += 300.0
    gaps[2, 15] += 300.0
    gaps[0, 9] += 80.0
    table, windows = run_of(gaps.tolist())
    d = diagnose(table, [0, 1, 2], no_components(3), windows, has_gpu=False)
    assert d.rotating is None
    top = d.stragglers[0]  # the worst first: the 600 ms of stalls, not the hiccup
    assert (top.rank, top.pattern, [s.step for s in top.steps]) == (2, "intermittent", [5, 15])
