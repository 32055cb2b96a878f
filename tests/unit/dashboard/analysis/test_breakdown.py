"""The step breakdown (``analysis.breakdown``) of one hand-drawn 100 ms step.

    compute  [0, 40)      comm [30, 60)   memcpy [60, 65)   data [65, 80)
    host     [0, 10) (under compute) and [80, 90)           waiting [30, 50)

Exposed communication is 20 ms (30-40 is under compute), memcpy 5, exposed data
loading 15, host-only 10, idle the remaining 10: the six parts add up to 100.
"""

from __future__ import annotations

import math

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import RankActivity
from rankscope.dashboard.analysis.breakdown import rank_means, step_breakdown

MS = 1_000_000


def spans(*pairs: tuple[int, int]) -> iv.Intervals:
    s = np.array([a for a, _ in pairs], dtype=np.int64) * MS
    e = np.array([b for _, b in pairs], dtype=np.int64) * MS
    return iv.union(s, e)


def activity(rank: int = 0) -> RankActivity:
    return RankActivity(
        rank=rank,
        has_gpu=True,
        gpu=spans((0, 40), (30, 65)),
        compute=spans((0, 40)),
        comm=spans((30, 60)),
        memcpy=spans((60, 65)),
        data=spans((65, 80)),
        host=spans((0, 10), (80, 90)),
    )


def test_one_step_adds_up() -> None:
    t = step_breakdown({0: activity()}, {0: {7: (0, 100 * MS)}}, [7], {0: spans((30, 50))})
    row = {c: float(t[c][0]) for c in t.columns if c not in ("rank", "step")}
    assert (int(t["rank"][0]), int(t["step"][0])) == (0, 7)
    assert row == {
        "step_ms": 100.0,
        "compute_ms": 40.0,
        "comm_ms": 30.0,
        "comm_exposed_ms": 20.0,
        "comm_overlapped_ms": 10.0,
        "comm_wait_ms": 20.0,
        "memcpy_ms": 5.0,
        "data_ms": 15.0,
        "data_exposed_ms": 15.0,
        "host_ms": 10.0,
        "idle_ms": 10.0,
        "gpu_busy_ms": 65.0,
    }


def test_activity_outside_the_window_is_cut_off() -> None:
    t = step_breakdown({0: activity()}, {0: {1: (50 * MS, 70 * MS)}}, [1], {})
    # 50-60 exposed comm, 60-65 memcpy, 65-70 data; no compute, no wait
    assert float(t["comm_exposed_ms"][0]) == 10.0
    assert float(t["memcpy_ms"][0]) == 5.0
    assert float(t["data_exposed_ms"][0]) == 5.0
    assert float(t["compute_ms"][0]) == 0.0 and float(t["comm_wait_ms"][0]) == 0.0


def test_rank_means_average_over_steps() -> None:
    windows = {0: {1: (0, 100 * MS), 2: (100 * MS, 150 * MS)}, 1: {}}
    t = step_breakdown({0: activity(), 1: activity(1)}, windows, [1, 2], {})
    means = rank_means(t, [0, 1])
    assert means[0].step_ms == 75.0  # (100 + 50) / 2
    assert means[0].compute_ms == 20.0  # (40 + 0) / 2
    assert means[0].value("idle_ms") == 30.0  # (10 + 50) / 2: the second step is all idle
    assert math.isnan(means[1].step_ms)  # rank 1 has no step
