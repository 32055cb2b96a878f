"""``operator_sums``: a CPU-only rank's operators by self time, nothing counted twice.

By hand (ms), one step window 0-20: on thread 1 ``aten::linear`` 0-10 holds
``aten::addmm`` 1-9, which holds ``aten::copy_`` 2-3; then ``aten::linear`` again
12-14 with nothing inside. On thread 2, at the same time, ``aten::add`` 0-3 (not
inside thread 1's operators). A ``user_annotation`` 0-20 is not an operator.
Self times: linear 2 + 2 = 4, addmm 7, copy_ 1, add 3 (15 ms, the time operators
ran); an operator after the window is left out.
"""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.analysis.utilisation import operator_sums, top_kernels_of
from rankscope.dashboard.ingest.rank import RankData
from rankscope.dashboard.ingest.table import Table

MS = 1_000_000


def _cpu(rows: list[tuple[float, float, str, str, int]]) -> Table:
    return Table.build(
        {
            "ts": np.array([round(a * MS) for a, *_ in rows], dtype=np.int64),
            "dur": np.array([round((b - a) * MS) for a, b, *_ in rows], dtype=np.int64),
            "name": [r[2] for r in rows],
            "cat": [r[3] for r in rows],
            "tid": np.array([r[4] for r in rows], dtype=np.int64),
        },
        strings=("name", "cat"),
    )


def test_self_time_subtracts_what_runs_inside_on_the_same_thread() -> None:
    cpu = _cpu(
        [
            (0, 20, "ProfilerStep#0", "user_annotation", 1),
            (0, 10, "aten::linear", "cpu_op", 1),
            (1, 9, "aten::addmm", "cpu_op", 1),
            (2, 3, "aten::copy_", "cpu_op", 1),
            (12, 14, "aten::linear", "cpu_op", 1),
            (0, 3, "aten::add", "cpu_op", 2),
            (25, 26, "aten::mm", "cpu_op", 1),  # after the window
        ]
    )
    sums = operator_sums(RankData(0, [], {}, cpu=cpu), {0: (0, 20 * MS)})
    got = {
        sums.names[int(c)]: (int(ns), int(n))
        for c, ns, n in zip(sums.name, sums.dur_ns, sums.calls, strict=True)
    }
    assert got == {
        "aten::linear": (4 * MS, 2),
        "aten::addmm": (7 * MS, 1),
        "aten::copy_": (1 * MS, 1),
        "aten::add": (3 * MS, 1),
    }
    (top, *_) = top_kernels_of({0: sums}, [0])
    assert (top.name, top.ms_per_step, top.calls_per_step) == ("aten::addmm", 7.0, 1.0)


def test_a_rank_without_operators_has_none() -> None:
    cpu = _cpu([(0, 20, "ProfilerStep#0", "user_annotation", 1)])
    assert operator_sums(RankData(0, [], {}, cpu=cpu), {0: (0, 20 * MS)}).names == []
