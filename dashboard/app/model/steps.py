"""Steps: the per-(rank, step) breakdown Table and the diagnosis' per-step evidence.

``steps_frame`` -> the breakdown Table (rank, step, *_ms); ``steps_by_rank`` -> the
same with rank labels; ``step_rows`` -> one step, one row per rank;
``rank_step_matrix`` -> index rank, columns step; ``per_step_frame`` -> rank, step,
step_ms, excess_ms, caused_wait_ms, lag_ms (the report's ``per_step``);
``per_step_matrix`` -> index rank, columns step; ``stall_marks`` -> rank, step,
lag_ms, kind, value (what the diagnosis found, where charts mark it);
``finding_step`` -> the step the Timeline opens at from a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankscope.dashboard.app.model.basics import rank_label
from rankscope.dashboard.ingest.table import Table

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import Report
    from rankscope.dashboard.analysis.results import StepRank


def steps_frame(breakdown: Table) -> pd.DataFrame:
    return breakdown.to_pandas()


def steps_by_rank(breakdown: Table) -> pd.DataFrame:
    """The breakdown Table with ``rank`` as a label ("rank 0"), for one box per rank."""
    df = breakdown.to_pandas()
    df["rank"] = df["rank"].map(rank_label)
    return df


def step_rows(breakdown: Table, step: int) -> pd.DataFrame:
    """One step's breakdown, one row per rank (ms)."""
    df = breakdown.to_pandas()
    return df[df["step"] == step].drop(columns=["step"])


def slowest_step(breakdown: Table, steps: list[int]) -> int:
    """The step whose slowest rank took longest (a straggler shows most there)."""
    if not len(breakdown) or not steps:
        return steps[0] if steps else -1
    step_ms = breakdown["step_ms"]
    step = int(breakdown["step"][int(np.argmax(step_ms))])
    return step if step in steps else steps[0]


def rank_step_matrix(breakdown: Table, column: str) -> pd.DataFrame:
    df = breakdown.to_pandas()
    return df.pivot_table(index="rank", columns="step", values=column, aggfunc="mean")


def table_matrix(table: Table, index: str, columns: str, values: str) -> pd.DataFrame:
    df = table.to_pandas()
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index=index, columns=columns, values=values, aggfunc="sum", fill_value=0)


# --- the diagnosis' per-step evidence: the Overview's per-step chart, the heatmaps' marks ---

PER_STEP_COLUMNS = ["rank", "step", "step_ms", "excess_ms", "caused_wait_ms", "lag_ms"]
MARK_COLUMNS = ["rank", "step", "lag_ms", "kind", "value"]


def per_step_frame(report: Report) -> pd.DataFrame:
    """The report's ``per_step``, one row per (rank, step) sorted by rank then step."""
    rows = [
        (r.rank, r.step, r.step_ms, r.excess_ms, r.caused_wait_ms, r.lag_ms)
        for r in report.per_step
    ]
    df = pd.DataFrame(rows, columns=PER_STEP_COLUMNS)
    df = df.astype({"rank": "int64", "step": "int64"} | {c: float for c in PER_STEP_COLUMNS[2:]})
    return df.sort_values(["rank", "step"], ignore_index=True)


def per_step_matrix(report: Report, column: str) -> pd.DataFrame:
    """rank x step of one ``per_step`` column (``excess_ms``, ...); empty without per_step."""
    df = per_step_frame(report)
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index="rank", columns="step", values=column, aggfunc="mean")


def stall_marks(report: Report, column: str = "excess_ms") -> pd.DataFrame:
    """Where the diagnosis says a rank held the others back, one row per mark.

    ``kind``: ``persistent`` (a straggler late at most steps: its whole row, ``step``
    missing), ``intermittent`` (one stall of an intermittent straggler) or ``rotating``
    (one stall of the rotating finding, with the rank that stalled). ``lag_ms``: how late
    it was there (missing for a whole row); ``value``: ``column`` of ``per_step`` at that
    rank and step, where the per-step chart draws the mark.
    """
    rows: list[dict[str, Any]] = []
    for s in report.stragglers:
        if s.pattern == "intermittent" and s.steps:
            rows += [
                {"rank": s.rank, "step": x.step, "lag_ms": x.lag_ms, "kind": "intermittent"}
                for x in s.steps
            ]
        else:
            rows.append({"rank": s.rank, "step": None, "lag_ms": None, "kind": "persistent"})
    rotating = report.imbalance.rotating
    rows += [
        {"rank": x.rank, "step": x.step, "lag_ms": x.lag_ms, "kind": "rotating"}
        for x in (rotating.steps if rotating else [])
    ]
    marks = pd.DataFrame(rows, columns=MARK_COLUMNS[:4]).astype(
        {"rank": "int64", "step": "Int64", "lag_ms": "float64"}
    )
    evidence = per_step_frame(report).set_index(["rank", "step"])[column]
    marks["value"] = [
        np.nan if pd.isna(step) else float(evidence.get((rank, int(step)), np.nan))
        for rank, step in zip(marks["rank"], marks["step"], strict=True)
    ]
    return marks


def finding_step(
    per_step: Sequence[StepRank], ranks: Sequence[int], steps: list[int], fallback: int
) -> int:
    """The analysed step that shows a finding best: where its first rank's own work
    stood out most (its excess over the others' median), else ``fallback`` (the
    slowest step)."""
    if not ranks:
        return fallback
    rows = [p for p in per_step if p.rank == ranks[0] and p.step in steps]
    if not rows:
        return fallback
    best = max(rows, key=lambda p: (p.excess_ms, p.lag_ms))
    return best.step if best.excess_ms > 0 else fallback
