"""Communication: the analysis' collective summaries and per-instance table, shaped to draw.

``collectives_frame`` -> one row per collective (name, process group, count,
message MB, transfer and wait ms/step, effective GB/s, last to arrive);
``collective_time_by_rank`` -> rank (label), transfer_ms, wait_ms, last_arrivals;
``collective_time_long`` -> rank, part, ms; ``arrival_lag_matrix`` -> rank x
collective instance (lag ms); ``last_arrival_matrix`` -> rank x step (count).
"""

from __future__ import annotations

import pandas as pd

from rankscope.dashboard.analysis import timeline
from rankscope.dashboard.analysis.results import CollectiveSummary
from rankscope.dashboard.app.model.basics import rank_label
from rankscope.dashboard.app.model.steps import table_matrix
from rankscope.dashboard.ingest.table import Table

COLLECTIVE_PARTS = {"transfer_ms": "transfer", "wait_ms": "waiting for the last rank"}


MAX_LAST_NAMED = 8  # ranks a collective's "last to arrive" names; more are counted


def _last_to_arrive(counts: dict[int, int]) -> str:
    """ "rank 1: 22, rank 3: 2", most often last first; beyond ``MAX_LAST_NAMED`` ranks
    the rest are counted ("… and 40 more ranks: 48"), not listed."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    named = ", ".join(f"rank {k}: {v}" for k, v in ordered[:MAX_LAST_NAMED])
    rest = ordered[MAX_LAST_NAMED:]
    if not rest:
        return named
    return f"{named}, … and {len(rest)} more ranks: {sum(v for _, v in rest)}"


def collectives_frame(summaries: list[CollectiveSummary]) -> pd.DataFrame:
    rows = [
        {
            "collective": c.name,
            "process group": c.pg,
            "count": c.count,
            "message MB": None if c.bytes is None else c.bytes / 1e6,
            "transfer ms/step": c.transfer_ms,
            "wait ms/step/rank": c.wait_ms,
            "effective GB/s": c.effective_gbps,
            "last to arrive": _last_to_arrive(c.last_arrival_counts),
        }
        for c in summaries
    ]
    columns = [
        "collective",
        "process group",
        "count",
        "message MB",
        "transfer ms/step",
        "wait ms/step/rank",
        "effective GB/s",
        "last to arrive",
    ]
    df = pd.DataFrame(rows, columns=columns)
    return df.astype({c: float for c in ("message MB", "effective GB/s")})


def collective_time_by_rank(collectives: Table, n_steps: int) -> pd.DataFrame:
    """rank (label), transfer_ms, wait_ms, last_arrivals."""
    df = timeline.collective_time_by_rank(collectives, n_steps).to_pandas()
    df["rank"] = df["rank"].map(rank_label)
    return df


def collective_time_long(per_rank: pd.DataFrame) -> pd.DataFrame:
    """``collective_time_by_rank`` in long form: rank, part (transfer | waiting), ms."""
    long = per_rank.melt(
        id_vars="rank", value_vars=list(COLLECTIVE_PARTS), var_name="part", value_name="ms"
    )
    long["part"] = long["part"].map(COLLECTIVE_PARTS)
    return long


def arrival_lag_matrix(collectives: Table) -> pd.DataFrame:
    """rank x collective instance: how late each rank arrived (ms)."""
    return table_matrix(timeline.arrival_lag(collectives), "rank", "instance", "lag_ms")


def last_arrival_matrix(collectives: Table, ranks: list[int]) -> pd.DataFrame:
    """rank x step: collectives each rank arrived last at (every rank a row)."""
    last = timeline.last_arrivals_by_step(collectives)
    if not len(last):
        return pd.DataFrame()
    matrix = table_matrix(last, "rank", "step", "last_arrivals")
    return matrix.reindex(index=sorted(ranks), fill_value=0)
