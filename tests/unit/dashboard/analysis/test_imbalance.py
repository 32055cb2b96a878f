"""Stragglers and imbalance (``analysis.imbalance``) on hand-timed ranks.

``matched()``: two all_reduces in one 100 ms step; rank 2 arrives last at both.
At the first, ranks 0 and 1 wait 10 ms for it; at the second, 5 ms: rank 2
costs each of them 15 ms/step. The straggler tests use ``fakes.collectives``
(the diagnosis' own rules are tested in ``test_diagnosis``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes.collectives import MS as MS_NS
from fakes.collectives import run_of

from rankscope.dashboard.analysis import comms, imbalance
from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import RankActivity
from rankscope.dashboard.analysis.diagnosis import Components, severity
from rankscope.dashboard.analysis.digest import components
from rankscope.dashboard.analysis.results import BREAKDOWN_COLUMNS, RankBreakdown
from rankscope.dashboard.ingest.table import Table

MS = 1_000_000
# rank -> (start of all_reduce 1, start of all_reduce 2) in ms; both end at 20 and 50 ms
STARTS = {0: (0, 40), 1: (0, 40), 2: (10, 45)}
ENDS = (20, 50)


def matched() -> Table:
    tables = {}
    for rank, starts in STARTS.items():
        ts = np.array(starts, dtype=np.int64) * MS
        tables[rank] = Table.build(
            {
                "ts": ts,
                "dur": np.array(ENDS, dtype=np.int64) * MS - ts,
                "launch_ts": ts,
                "seq": np.array([-1, -1], dtype=np.int64),
                "bytes": np.array([-1, -1], dtype=np.int64),
                "name": ["all_reduce"] * 2,
                "pg": ["0"] * 2,
            },
            strings=("name", "pg"),
        )
    windows = {r: {0: (0, 100 * MS)} for r in STARTS}
    return comms.match_collectives(tables, windows, [0])


def breakdown(rank: int, **values: float) -> RankBreakdown:
    return RankBreakdown.from_columns(rank, {c: 0.0 for c in BREAKDOWN_COLUMNS} | values)


def test_median_and_severity() -> None:
    assert imbalance.median([3.0, 1.0, 2.0]) == 2.0
    assert imbalance.median([4.0, 1.0]) == 2.5
    assert math.isnan(imbalance.median([]))
    assert [severity(ms, 100.0) for ms in (25, 20, 15, 10, 9)] == [
        "high",
        "high",
        "medium",
        "medium",
        "low",
    ]


def test_caused_wait_is_the_others_wait_per_other_rank_and_step() -> None:
    assert imbalance.caused_wait_ms(matched(), [0, 1, 2], n_steps=1) == {0: 0.0, 1: 0.0, 2: 15.0}


def coverage(acts: dict[int, RankActivity]) -> dict[int, Components]:
    """What the diagnosis reads of each rank, in a run without a GPU."""
    return {r: components(a, run_has_gpu=False) for r, a in acts.items()}


def activity(rank: int, data: iv.Intervals | None = None) -> RankActivity:
    e = iv.empty()
    return RankActivity(rank, False, e, e, e, e, e if data is None else data, e)


def test_find_stragglers_names_the_rank_its_cause_and_its_evidence() -> None:
    """Rank 2 loads data 15 ms longer than ranks 0 and 1 (10 ms) before each of 6 steps."""
    table, windows = run_of([[10.0] * 6, [10.0] * 6, [25.0] * 6])
    starts = table["start_ns"][table["rank"] == 2]
    acts = {0: activity(0), 1: activity(1), 2: activity(2, iv.union(starts - 15 * MS_NS, starts))}
    stragglers, caused, diag = imbalance.find_stragglers(
        table, [0, 1, 2], coverage(acts), windows, 6, False
    )
    (s,) = stragglers
    assert (s.rank, s.pattern, s.cause, s.cause_detail) == (2, "persistent", "data_loading", None)
    # Each step lasts 25 + 2 = 27 ms; fixing rank 2 brings it to 12: 15 ms, 56% of the step.
    assert s.est_saving_ms_per_step == 15.0 and s.severity == "high"
    assert s.excess_ms_per_step == 15.0 and s.cause_breakdown == {"data_loading": 15.0}
    assert s.caused_wait_ms_per_step == 15.0 and caused == {0: 0.0, 1: 0.0, 2: 15.0}
    assert s.last_arrivals == 6 and s.cause_excess_ms_per_step == 15.0
    assert s.evidence == (
        "its work before each step's collectives takes 15.0 ms/step more than the other"
        " ranks' median (90% interval 15.0-15.0); of which data loading 15.0 ms/step;"
        " arrives last at 6 of 6 collectives; the other ranks wait 15.0 ms/step for it"
    )
    assert diag.joint_saving_ms_per_step == 15.0


def test_a_stall_is_named_with_its_step() -> None:
    gaps = [[10.0] * 6, [10.0] * 6, [10.0] * 6]
    gaps[1][4] = 210.0
    table, windows = run_of(gaps)
    acts = {r: activity(r) for r in range(3)}
    (s,), _, _ = imbalance.find_stragglers(table, [0, 1, 2], coverage(acts), windows, 6, False)
    assert (s.rank, s.pattern, s.cause, s.cause_detail) == (1, "intermittent", "host", "untraced")
    assert [(st.step, st.lag_ms) for st in s.steps] == [(4, 200.0)]
    assert s.evidence.startswith("stalled ~200 ms at step 4 beyond the other ranks")


def test_the_last_arrival_is_reported_with_what_it_costs() -> None:
    caused = imbalance.caused_wait_ms(matched(), [0, 1, 2], n_steps=1)
    last = imbalance.last_arrival_summary(matched(), caused, 1000.0)
    assert last is not None
    assert (last.rank, last.count, last.of) == (2, 2, 2)
    assert (last.excess_ms_per_step, last.excess_pct_of_step) == (15.0, 1.5)


def test_imbalance_per_metric() -> None:
    per_rank = {
        0: breakdown(0, step_ms=100),
        1: breakdown(1, step_ms=100),
        2: breakdown(2, step_ms=130),
    }
    imb = imbalance.imbalance(per_rank)
    assert imb.ranks == 3 and imb.last_arrival is None
    step = imb.metrics["step_ms"]
    assert (step.mean, step.max, step.min, step.max_rank) == (110.0, 130.0, 100.0, 2)
    assert step.max_over_mean == pytest.approx(130 / 110, abs=1e-3)
    assert step.cv == pytest.approx(200**0.5 / 110, abs=1e-3)  # std of (100, 100, 130) is √200
    assert imb.metrics["compute_ms"].max_over_mean is None  # every rank 0: no ratio
