"""Communication: the analysis' collective summaries and per-instance table, shaped to draw.

``collectives_frame`` -> one row per collective (name, process group, count,
message MB, transfer and wait ms/step, effective GB/s, last to arrive);
``collective_time_by_rank`` -> rank (label), transfer_ms, wait_ms, last_arrivals;
``collective_time_long`` -> rank, part, ms; ``arrival_lag_matrix`` -> rank x
collective instance (lag ms); ``last_arrival_matrix`` -> rank x step (count);
``pipeline_stages_long`` -> stage, part (busy | blocked), ms; ``pipeline_step_blocks``
-> one step's send/recv blocks per stage; ``groups_frame`` -> one row per process
group; ``group_lag_matrix`` -> process group x rank (mean lag ms).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankscope.dashboard.analysis import timeline
from rankscope.dashboard.analysis.groups import GroupSummary
from rankscope.dashboard.analysis.pipeline import Pipeline
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


# ---------------------------------------------------------------- pipelines and groups

PIPELINE_PARTS = {"busy_ms": "busy", "blocked_ms": "blocked on a neighbour"}


def pipeline_stages_long(p: Pipeline) -> pd.DataFrame:
    """stage (label "stage S (rank R)"), part (busy | blocked on a neighbour), ms per step."""
    rows = [
        {"stage": f"stage {s.stage} (rank {s.rank})", "part": label, "ms": getattr(s, col)}
        for s in p.stages
        for col, label in PIPELINE_PARTS.items()
    ]
    return pd.DataFrame(rows, columns=["stage", "part", "ms"])


def pipeline_step_blocks(
    collectives: Table, windows: dict[int, dict[int, tuple[int, int]]], p: Pipeline, step: int
) -> pd.DataFrame:
    """One step of the pipeline over time: per stage, each send/recv it was blocked in, as
    stage (label), kind, start_ms and ms from that stage's step start (``collectives``: the
    analysis' matched table, where each gloo send/recv is an instance of its own)."""
    cols = ["stage", "kind", "start_ms", "ms"]
    if not len(collectives):
        return pd.DataFrame(columns=cols)
    names = collectives.strings("name")
    rows = []
    for s in p.stages:
        window = windows.get(s.rank, {}).get(step)
        if window is None:
            continue
        m = (collectives["rank"] == s.rank) & (collectives["step"] == step)
        m &= np.isin(names, ("send", "recv", "isend", "irecv"))
        for kind, start, ms in zip(
            names[m].tolist(),
            collectives["start_ns"][m].tolist(),
            collectives["dur_ms"][m].tolist(),
            strict=True,
        ):
            rows.append(
                {
                    "stage": f"stage {s.stage} (rank {s.rank})",
                    "kind": kind.lstrip("i"),
                    "start_ms": (start - window[0]) / 1e6,
                    "ms": ms,
                }
            )
    return pd.DataFrame(rows, columns=cols)


def groups_frame(groups: list[GroupSummary]) -> pd.DataFrame:
    """One row per process group: its name, kind, members, instances, who it waits for."""
    rows = [
        {
            "process group": g.pg,
            "kind": g.desc or None,
            "ranks": ", ".join(map(str, g.ranks))
            if len(g.ranks) <= 16
            else f"{len(g.ranks)} ranks",
            "collectives": g.instances,
            "held back by": None if g.held_back_by is None else f"rank {g.held_back_by}",
            "its lag ms": None if g.held_back_by is None else g.mean_lag_ms[g.held_back_by],
        }
        for g in groups
    ]
    columns = ["process group", "kind", "ranks", "collectives", "held back by", "its lag ms"]
    return pd.DataFrame(rows, columns=columns).astype({"its lag ms": float})


def group_lag_matrix(groups: list[GroupSummary]) -> pd.DataFrame:
    """process group x rank: each member's mean arrival lag behind the group's first (ms);
    NaN where the rank is not a member."""
    data = {
        f"{g.pg} ({g.desc})" if g.desc else g.pg: {r: g.mean_lag_ms.get(r) for r in g.ranks}
        for g in groups
    }
    return pd.DataFrame(data).T.sort_index(axis=1).astype(float)
