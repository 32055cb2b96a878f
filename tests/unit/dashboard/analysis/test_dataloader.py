"""``dataloader.wait_by_step`` on three hand-made step timers.

Steps 1-3. Rank 0 waits 2, 4, 6 ms; rank 1 waits 10 ms at step 1, did not record
step 2 (-1) and 8 ms at step 3; rank 2 has no DataLoader column. Step 4 no rank has.
"""

from __future__ import annotations

import math

import numpy as np

from rankscope.dashboard.analysis.dataloader import wait_by_step
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import Table


def _rank(rank: int, marks: dict[str, list[int]]) -> RankData:
    return RankData(rank, [], {}, step_marks=Table.build(marks))


def test_longest_and_median_wait_over_the_ranks_that_recorded_one() -> None:
    ranks = {
        0: _rank(0, {"step": [1, 2, 3], "data_ns": [2_000_000, 4_000_000, 6_000_000]}),
        1: _rank(1, {"step": [1, 2, 3], "data_ns": [10_000_000, -1, 8_000_000]}),
        2: _rank(2, {"step": [1, 2, 3], "start_ns": [0, 1, 2]}),
    }
    longest, median = wait_by_step(ranks, np.array([1, 2, 3, 4]))
    assert longest[:3].tolist() == [10.0, 4.0, 8.0]
    assert median[:3].tolist() == [6.0, 4.0, 7.0]  # (2 + 10) / 2, 4 alone, (6 + 8) / 2
    assert math.isnan(longest[3]) and math.isnan(median[3])
