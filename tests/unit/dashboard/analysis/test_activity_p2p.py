"""``rank_activity`` of a CPU-only rank: an isend in flight while the rank computes is not waiting.

By hand (ms): operators at 0-1, 1.05-2 and 2.05-3 (the 50 µs between them is Python
running the loop); an isend issued at 0.5 whose wait ends at 4 (the rank waited for
it from 3 to 4); a blocking receive 5-9 (its ``c10d::recv_`` op is communication).
"""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import rank_activity
from rankscope.dashboard.ingest.rank import RankData
from rankscope.dashboard.ingest.table import Table

MS = 1_000_000


def _table(rows: list[tuple[float, float, str, str]]) -> Table:
    return Table.build(
        {
            "ts": np.array([round(a * MS) for a, _, _, _ in rows], dtype=np.int64),
            "dur": np.array([round(b * MS) - round(a * MS) for a, b, _, _ in rows], dtype=np.int64),
            "name": [n for _, _, n, _ in rows],
            "cat": [c for _, _, _, c in rows],
        },
        strings=("name", "cat"),
    )


def _rank(comms: list[tuple[float, float, str, str]]) -> RankData:
    cpu = _table(
        [
            (0.0, 1.0, "aten::mm", "cpu_op"),
            (1.05, 2.0, "aten::mm", "cpu_op"),
            (2.05, 3.0, "aten::tanh", "cpu_op"),
            (5.0, 9.0, "c10d::recv_", "cpu_op"),
        ]
    )
    return RankData(0, [], {}, cpu=cpu, comms=_table(comms))


def test_an_isend_counts_as_waiting_only_where_the_rank_ran_nothing() -> None:
    act = rank_activity(_rank([(0.5, 4.0, "send", ""), (5.0, 9.0, "recv", "")]))
    assert iv.length(act.p2p) == 5 * MS  # 3-4 (the wait) and 5-9 (the blocking receive)
    assert iv.length(act.comm) == 5 * MS
    assert iv.length(act.compute) == round(2.9 * MS)  # every operator, none hidden by the isend


def test_a_collective_still_takes_the_time_it_spans() -> None:
    # Collectives keep their whole range (DDP's bucketed all_reduce is a separate question).
    act = rank_activity(_rank([(0.5, 4.0, "all_reduce", "")]))
    assert iv.length(act.p2p) == 0 and iv.length(act.comm) == round(3.5 * MS)
    assert iv.length(act.compute) == round(0.5 * MS)


def test_close_gaps_fills_only_the_short_ones() -> None:
    s = np.array([0, 10, 100], dtype=np.int64)
    e = np.array([5, 20, 110], dtype=np.int64)
    got = iv.close_gaps((s, e), 5)
    assert got[0].tolist() == [0, 100] and got[1].tolist() == [20, 110]
