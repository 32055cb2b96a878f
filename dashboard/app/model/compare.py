"""Compare two runs (A and B): each metric's mean over ranks, and per rank, with deltas.

``compare_metrics`` -> metric, A, B, delta, delta_pct; ``compare_ranks`` -> rank,
metric, A, B, delta; ``compare_rank_matrix`` -> rank x metric of deltas;
``compare_long`` -> metric, side, value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rankscope.dashboard.app.model.basics import finite_mean, num

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import RankRow, Report

# RankRow fields compared, with their names on the page.
COMPARE_METRICS = (
    ("step_ms", "step time"),
    ("compute_ms", "compute"),
    ("comm_ms", "communication"),
    ("comm_exposed_ms", "exposed communication"),
    ("comm_wait_ms", "waiting in collectives"),
    ("data_ms", "data loading"),
    ("data_exposed_ms", "data loading (exposed)"),
    ("host_ms", "host only"),
    ("idle_ms", "idle"),
    ("gpu_busy_pct", "GPU busy %"),
)


def _value(row: RankRow, key: str) -> float:
    return num(getattr(row, key))


def compare_metrics(a: Report, b: Report) -> pd.DataFrame:
    """Mean over ranks of each metric in A and B, their difference and relative change."""
    rows = []
    for key, label in COMPARE_METRICS:
        va = finite_mean([_value(r, key) for r in a.ranks])
        vb = finite_mean([_value(r, key) for r in b.ranks])
        if np.isnan(va) and np.isnan(vb):
            continue
        delta = vb - va
        rows.append(
            {
                "metric": label,
                "A": va,
                "B": vb,
                "delta": delta,
                "delta_pct": 100.0 * delta / va if va else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["metric", "A", "B", "delta", "delta_pct"])


def compare_ranks(a: Report, b: Report) -> pd.DataFrame:
    ra = {r.rank: r for r in a.ranks}
    rb = {r.rank: r for r in b.ranks}
    rows = []
    for rank in sorted(set(ra) | set(rb)):
        for key, label in COMPARE_METRICS:
            va = _value(ra[rank], key) if rank in ra else np.nan
            vb = _value(rb[rank], key) if rank in rb else np.nan
            rows.append({"rank": rank, "metric": label, "A": va, "B": vb, "delta": vb - va})
    return pd.DataFrame(rows, columns=["rank", "metric", "A", "B", "delta"])


def compare_rank_matrix(per_rank: pd.DataFrame) -> pd.DataFrame:
    """``compare_ranks`` as rank x metric of deltas."""
    return per_rank.pivot_table(index="rank", columns="metric", values="delta", sort=False)


def compare_long(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.melt(
        id_vars="metric", value_vars=["A", "B"], var_name="side", value_name="value"
    )
