"""Who a process group waits for, from hand-built arrival times (ns)."""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.analysis.groups import _summary

MS = 1_000_000


def test_a_member_late_at_one_of_two_collectives_a_step_holds_the_group_back() -> None:
    # dp pair (1, 3), two all-reduces a step: rank 3 arrives 30 ms late at the first;
    # the second finds both together, rank 1 a few us later (noise).
    steps = 30
    t = np.arange(2 * steps, dtype=np.int64) * 100 * MS
    rank1 = t.copy()
    rank3 = t.copy()
    rank3[0::2] += 30 * MS
    rank1[1::2] += 20_000  # 0.02 ms
    g = _summary("4", "dp", [1, 3], np.stack([rank1, rank3]))
    assert g.last_arrivals == {1: 30, 3: 30}
    assert g.mean_lag_ms[3] == 15.0
    assert g.held_back_by == 3


def test_members_that_take_turns_being_last_hold_nobody_back() -> None:
    rng = np.random.default_rng(1)
    arr = (rng.uniform(0, 2, (2, 60)) * MS).astype(np.int64) + np.arange(60) * 100 * MS
    g = _summary("3", "dp", [0, 2], arr)
    assert g.held_back_by is None


def test_a_member_last_by_a_hair_everywhere_is_not_held_against_it() -> None:
    # Rank 2 is last at every instance but only 0.2 ms after: under MIN_LAG_MS.
    t = np.arange(40, dtype=np.int64) * 100 * MS
    g = _summary("1", "tp", [2, 3], np.stack([t + 200_000, t]))
    assert g.last_arrivals == {2: 40, 3: 0} and g.held_back_by is None
