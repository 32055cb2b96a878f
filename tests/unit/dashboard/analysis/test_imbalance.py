"""Stragglers and imbalance (``analysis.imbalance``) on three hand-timed ranks.

Two all_reduces in one 100 ms step; rank 2 arrives last at both. At the first,
ranks 0 and 1 wait 10 ms for it; at the second, 5 ms: rank 2 costs each of
them 15 ms/step, 15% of the step (over the 5% threshold: medium severity).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankscope.dashboard.analysis import comms, imbalance
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
    assert [imbalance.severity(ms, 100.0) for ms in (25, 20, 15, 10, 9)] == [
        "high",
        "high",
        "medium",
        "medium",
        "low",
    ]


def test_caused_wait_is_the_others_wait_per_other_rank_and_step() -> None:
    assert imbalance.caused_wait_ms(matched(), [0, 1, 2], n_steps=1) == {0: 0.0, 1: 0.0, 2: 15.0}


def test_the_late_rank_with_more_data_loading_is_a_data_loading_straggler() -> None:
    per_rank = {
        0: breakdown(0, step_ms=100, data_ms=10, compute_ms=40),
        1: breakdown(1, step_ms=100, data_ms=12, compute_ms=40),
        2: breakdown(2, step_ms=100, data_ms=27, compute_ms=40),
    }
    stragglers, caused = imbalance.find_stragglers(matched(), per_rank, 1, 100.0, has_gpu=True)
    (s,) = stragglers
    assert (s.rank, s.cause, s.severity) == (2, "data_loading", "medium")
    assert s.excess_ms_per_step == 15.0  # 15 ms caused vs a median of 0 for the others
    assert s.caused_wait_ms_per_step == 15.0
    assert s.cause_excess_ms_per_step == 16.0  # 27 ms vs the others' median of 11 ms
    assert s.last_arrivals == 2
    assert s.evidence == (
        "data loading 27.0 ms/step vs 11.0 ms median of the other ranks (+16.0 ms);"
        " arrives last at 2 of 2 collectives; the other ranks wait 15.0 ms/step for it"
    )
    assert caused == {0: 0.0, 1: 0.0, 2: 15.0}


def test_a_late_rank_without_any_excess_is_late_for_communication() -> None:
    per_rank = {r: breakdown(r, step_ms=100, data_ms=10, compute_ms=40) for r in STARTS}
    (s,) = imbalance.find_stragglers(matched(), per_rank, 1, 100.0, has_gpu=True)[0]
    assert s.cause == "communication" and s.cause_excess_ms_per_step is None


def test_without_a_gpu_compute_counts_as_host_work() -> None:
    per_rank = {
        0: breakdown(0, step_ms=100, compute_ms=40),
        1: breakdown(1, step_ms=100, compute_ms=40),
        2: breakdown(2, step_ms=100, compute_ms=55),
    }
    (s,) = imbalance.find_stragglers(matched(), per_rank, 1, 100.0, has_gpu=False)[0]
    assert s.cause == "host" and s.cause_excess_ms_per_step == 15.0
    (s,) = imbalance.find_stragglers(matched(), per_rank, 1, 100.0, has_gpu=True)[0]
    assert s.cause == "gpu_compute"


def test_a_small_caused_wait_is_no_straggler_but_still_the_last_arrival() -> None:
    per_rank = {r: breakdown(r, step_ms=1000) for r in STARTS}
    stragglers, caused = imbalance.find_stragglers(matched(), per_rank, 1, 1000.0, True)
    assert stragglers == []  # 15 ms is 1.5% of a 1000 ms step
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
