"""Arrival lag per collective instance, on hand-built arrivals (ms): who holds the others back."""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.analysis.arrivals import arrival_gaps
from rankscope.dashboard.analysis.wholerun import LightRank

MS = 1_000_000


def light(rank: int, arrivals_ms: list[list[float]], offset_ns: int = 0) -> LightRank:
    """One rank: step s spans 1000 s..1000 s + 1000 ms; arrivals_ms[s]: its issue times."""
    n = len(arrivals_ms)
    enq = [1000 * s + a for s, row in enumerate(arrivals_ms) for a in row]
    return LightRank(
        rank=rank,
        step=np.arange(n, dtype=np.int64),
        start_ns=np.arange(n, dtype=np.int64) * 1000 * MS,
        end_ns=(np.arange(n, dtype=np.int64) + 1) * 1000 * MS,
        data_ns=np.full(n, -1, dtype=np.int64),
        coll_key=np.arange(len(enq), dtype=np.int64) + 1,
        enqueue_ns=(np.array(enq) * MS).astype(np.int64) + offset_ns,
        clock_offset_ns=offset_ns,
    )


def test_fsdp_like_the_rank_last_at_each_synced_all_gather_adds_up_its_lateness() -> None:
    # Rank 1 computes 2x: it arrives 10 ms after rank 0 at each of 4 all-gathers; each
    # all-gather holds both ranks together (rank 0 issues the next after rank 1 arrived).
    fast = [[0, 30, 60, 90]] * 3
    slow = [[10, 40, 70, 100]] * 3
    gaps = arrival_gaps([light(0, fast), light(1, slow, offset_ns=5 * MS)], np.arange(3))
    assert gaps is not None
    assert np.allclose(gaps[0], 0) and np.allclose(gaps[1], 40)  # 4 x 10 ms, every step


def test_ddp_like_a_lag_carried_over_unwaited_collectives_counts_once() -> None:
    # Rank 1 starts 50 ms late and issues its 3 all-reduces without waiting, as rank 0 does.
    fast = [[100, 110, 120]] * 3
    late = [[150, 160, 170]] * 3
    gaps = arrival_gaps([light(0, fast), light(1, late)], np.arange(3))
    assert gaps is not None
    assert np.allclose(gaps[0], 0) and np.allclose(gaps[1], 50)


def test_one_collective_a_step_keeps_the_step_evidence() -> None:
    assert arrival_gaps([light(0, [[5]] * 3), light(1, [[9]] * 3)], np.arange(3)) is None
