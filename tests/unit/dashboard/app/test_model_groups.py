"""The Communication page's process-group tables, from hand-built group summaries.

A 2x2 mesh: tp pairs {0, 1} and {2, 3}, dp pairs {0, 2} and {1, 3}; rank 2 is slow,
so dp group "2" (ranks 0 and 2) waits for it (29.9 ms on average).
"""

from __future__ import annotations

import math

import pandas as pd

from rankscope.dashboard.analysis.groups import GroupSummary
from rankscope.dashboard.app import model


def group(
    pg: str, desc: str, ranks: list[int], lags: list[float], held: int | None
) -> GroupSummary:
    return GroupSummary(
        pg=pg,
        desc=desc,
        ranks=ranks,
        instances=60,
        last_arrivals={r: 0 for r in ranks},
        mean_lag_ms=dict(zip(ranks, lags, strict=True)),
        held_back_by=held,
    )


GROUPS = [
    group("1", "tp", [0, 1], [0.0, 0.4], None),
    group("2", "dp", [0, 2], [0.0, 29.9], 2),
    group("3", "", [1, 3], [0.2, 0.0], None),
]


def test_each_group_is_a_row_naming_whom_it_waits_for() -> None:
    df = model.groups_frame(GROUPS)
    assert df["process group"].tolist() == ["1", "2", "3"]
    assert df["ranks"].tolist() == ["0, 1", "0, 2", "1, 3"]
    assert df["held back by"].tolist()[1] == "rank 2" and df["its lag ms"].tolist()[1] == 29.9
    assert pd.isna(df["kind"].tolist()[2])  # no pg_desc: shown as a blank, not ""


def test_the_lag_matrix_has_a_cell_per_member_and_blanks_elsewhere() -> None:
    m = model.group_lag_matrix(GROUPS)
    assert m.index.tolist() == ["1 (tp)", "2 (dp)", "3"]
    assert m.columns.tolist() == [0, 1, 2, 3]
    assert m.loc["2 (dp)", 2] == 29.9 and m.loc["2 (dp)", 0] == 0.0
    assert math.isnan(m.loc["2 (dp)", 1]) and math.isnan(m.loc["1 (tp)", 3])
