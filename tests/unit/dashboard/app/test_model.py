"""``app.model`` on small hand-made reports: the per-step evidence, the stall marks, the verdict.

Three ranks over steps 10-14. In the intermittent report rank 2 stalls once, at
step 13, 300 ms beyond the others' median (they wait ~290 ms for it there);
otherwise every rank is within a few ms of the others. Every number below can be
checked against these rows by hand.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from report_factory import make_report, rotating, step_rank, straggler

from rankscope.dashboard.analysis.report import Report, Rotating
from rankscope.dashboard.analysis.results import Straggler
from rankscope.dashboard.app import model

STEPS = (10, 11, 12, 13, 14)


def _per_step(stall: tuple[int, int, float] | None = None) -> list[dict[str, Any]]:
    """Rank r at step s: excess r - 1 ms (so -1, 0, 1), plus ``stall`` = (rank, step, ms)."""
    rows = []
    for rank in (2, 0, 1):  # unsorted on purpose: the frame sorts
        for step in STEPS:
            excess = float(rank - 1)
            caused = 0.0
            if stall and (rank, step) == stall[:2]:
                excess, caused = stall[2], stall[2] - 10
            rows.append(
                {
                    "rank": rank,
                    "step": step,
                    "step_ms": 30.0 + (stall[2] if stall and step == stall[1] else 0.0),
                    "excess_ms": excess,
                    "caused_wait_ms": caused,
                    "lag_ms": caused,
                }
            )
    return rows


def _straggler(rank: int, pattern: str, **extra: Any) -> Straggler:
    return straggler(rank, pattern, **extra)


def _report(
    stragglers: list[Straggler],
    per_step: list[dict[str, Any]],
    rotating: Rotating | None = None,
    joint: float | None = None,
) -> Report:
    return make_report(
        run_ranks=[0, 1, 2],
        steps=list(STEPS),
        step_ms=90.0,
        stragglers=stragglers,
        per_step=[step_rank(row) for row in per_step],
        rotating=rotating,
        joint=joint,
    )


HINT = "time with no traced op: Python outside torch ops"


@pytest.fixture
def intermittent() -> Report:
    stall = _straggler(
        2,
        "intermittent",
        cause_detail="untraced",
        steps=[{"step": 13, "lag_ms": 302.0}],
        est_saving_ms_per_step=58.0,
        hint=HINT,
    )
    return _report([stall], _per_step((2, 13, 300.0)))


def test_an_intermittent_straggler_reads_where_it_stalled_never_a_mean(
    intermittent: Report,
) -> None:
    assert model.straggler_sentence(intermittent) == (
        "Rank 2 stalled ~302 ms at step 13: host-side work outside any traced op;"
        " the other ranks waited for it there."
    )
    assert model.straggler_next(intermittent) == f"Where to look next: {HINT}."
    assert model.headline_numbers(intermittent)["straggler_cause"] == (
        "host-side work outside any traced op"
    )


def test_stragglers_frame_gives_pattern_confidence_and_saving(
    intermittent: Report,
) -> None:
    (row,) = model.stragglers_frame(intermittent).to_dict("records")
    assert row["rank"] == 2 and row["pattern"] == "intermittent"
    assert row["cause"] == "host-side work outside any traced op"
    assert row["confidence"] == "high" and row["saving ms/step"] == 58.0
    assert math.isnan(row["excess ms/step"])  # a mean would hide the stall
    assert row["stalls"] == "stalled ~302 ms at step 13"

    persistent = _report([_straggler(1, "persistent")], _per_step())
    (row,) = model.stragglers_frame(persistent).to_dict("records")
    assert row["pattern"] == "persistent" and row["excess ms/step"] == 60.0
    assert row["stalls"] is None  # drawn as the em dash
    assert list(model.stragglers_frame(_report([], _per_step())).columns) == (
        model.STRAGGLER_COLUMNS
    )


def test_per_step_frame_and_matrix(intermittent: Report) -> None:
    df = model.per_step_frame(intermittent)
    assert list(df.columns) == model.PER_STEP_COLUMNS
    assert list(df["rank"]) == [0] * 5 + [1] * 5 + [2] * 5
    assert list(df["step"][:5]) == list(STEPS)
    matrix = model.per_step_matrix(intermittent, "excess_ms")
    assert matrix.shape == (3, 5)
    assert list(matrix.index) == [0, 1, 2] and list(matrix.columns) == list(STEPS)
    assert matrix.loc[2, 13] == 300.0 and matrix.loc[2, 12] == 1.0 and matrix.loc[0, 13] == -1.0
    assert model.per_step_matrix(_report([], []), "excess_ms").empty


def test_stall_marks_put_the_stall_at_its_rank_and_step(intermittent: Report) -> None:
    marks = model.stall_marks(intermittent)
    assert marks.to_dict("records") == [
        {"rank": 2, "step": 13, "lag_ms": 302.0, "kind": "intermittent", "value": 300.0}
    ]
    # The per-step chart may draw another measure; the mark follows it.
    assert model.stall_marks(intermittent, "caused_wait_ms")["value"].tolist() == [290.0]


def test_a_persistent_straggler_marks_its_whole_row() -> None:
    report = _report(
        [_straggler(1, "persistent"), _straggler(2, "persistent", est_saving_ms_per_step=5.0)],
        _per_step(),
        joint=60.0,
    )
    marks = model.stall_marks(report)
    assert list(marks["rank"]) == [1, 2] and list(marks["kind"]) == ["persistent"] * 2
    assert marks["step"].isna().all() and marks["value"].isna().all()
    assert model.straggler_ranks(report) == [1, 2]
    assert model.headline_numbers(report)["straggler"] == "ranks 1, 2"
    assert model.joint_saving_sentence(report) == (
        "Fixing all 2 stragglers together would save ~60.0 ms/step: one what-if replay of the"
        " collectives, so each straggler's saving is its share of that figure, and the shares"
        " add up to it."
    )
    one = _report([_straggler(1, "persistent")], _per_step(), joint=55.0)
    assert model.joint_saving_sentence(one) is None  # its own saving says it already


def test_rotating_lateness_marks_each_stall_with_its_rank() -> None:
    per_step = _per_step()
    for row in per_step:
        if (row["rank"], row["step"]) in ((0, 10), (1, 12), (2, 14)):
            row["excess_ms"] = 60.0
    rot = rotating(
        {0: 1, 1: 1, 2: 1},
        [(10, 0, 61.0), (12, 1, 62.0), (14, 2, 63.0)],
        wait_fraction=0.3,
        est_saving_ms_per_step=30.0,
    )
    report = _report([], per_step, rot)
    marks = model.stall_marks(report)
    assert marks[["rank", "step", "lag_ms"]].astype(float).values.tolist() == [
        [0, 10, 61.0],
        [1, 12, 62.0],
        [2, 14, 63.0],
    ]
    assert set(marks["kind"]) == {"rotating"} and (marks["value"] == 60.0).all()
    assert model.straggler_sentence(report) is None
    assert model.rotating_sentence(report) == (
        "No single straggler: the lateness rotates between ranks 0, 1, 2 (see the rotating"
        " finding)."
    )
    assert model.rotating_sentence(_report([], per_step)) is None


def test_no_per_step_evidence_gives_empty_tables() -> None:
    report = _report([], [])
    assert model.per_step_frame(report).empty
    marks = model.stall_marks(report)
    assert marks.empty and list(marks.columns) == model.MARK_COLUMNS
    assert isinstance(marks, pd.DataFrame)
