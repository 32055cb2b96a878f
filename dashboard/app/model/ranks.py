"""Per rank: the report's rank rows, imbalance, kernels and GPU measures, shaped to draw.

``breakdown_long`` -> rank, component, ms (the parts of a step, for stacked bars);
``ranks_frame`` -> one row per rank with its scalar fields; ``utilisation_frame``
-> rank and one column per measure; ``utilisation_long`` -> rank, measure, pct;
``idle_long`` -> rank, why, ms; ``imbalance_frame`` -> one row per metric;
``kernels_frame`` -> one row per kernel.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TYPE_CHECKING

import pandas as pd

from rankscope.dashboard.analysis.results import Imbalance, KernelSummary
from rankscope.dashboard.app.model.basics import num, rank_label, short_name

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import RankRow, RankTelemetry, Report

# The six parts of a step; they add up to step_ms (see rankscope.dashboard.analysis.breakdown).
STEP_PARTS = (
    ("compute_ms", "compute"),
    ("comm_exposed_ms", "exposed communication"),
    ("memcpy_ms", "memcpy"),
    ("data_exposed_ms", "data loading (exposed)"),
    ("host_ms", "host only"),
    ("idle_ms", "idle"),
)
PART_COLOURS = {
    "compute": "#2e7d32",
    "exposed communication": "#c62828",
    "memcpy": "#6a1b9a",
    "data loading (exposed)": "#ef6c00",
    "host only": "#1565c0",
    "idle": "#bdbdbd",
}
# A rank row's fields that hold more than one number: not columns of ``ranks_frame``.
_NESTED = ("temporal_breakdown", "streams", "idle_breakdown", "telemetry", "files")


def breakdown_long(report: Report) -> pd.DataFrame:
    rows = []
    for r in report.ranks:
        for col, label in STEP_PARTS:
            rows.append(
                {"rank": rank_label(r.rank), "component": label, "ms": num(getattr(r, col))}
            )
    return pd.DataFrame(rows, columns=["rank", "component", "ms"])


def _scalar_fields(row_type: type[RankRow]) -> list[str]:
    return [f for f in row_type.__struct_fields__ if f not in _NESTED]


def ranks_frame(report: Report) -> pd.DataFrame:
    """One row per rank with the report's scalar per-rank fields."""
    if not report.ranks:
        return pd.DataFrame()
    keep = _scalar_fields(type(report.ranks[0]))
    df = pd.DataFrame([{k: getattr(r, k) for k in keep} for r in report.ranks], columns=keep)
    return df.astype({c: float for c in keep if c.endswith(("_ms", "_pct"))})


def utilisation_frame(report: Report) -> pd.DataFrame:
    """The trace's and the telemetry's GPU measures per rank (telemetry: mean in the steps)."""
    rows = []
    for r in report.ranks:
        tel = r.telemetry

        def in_steps(field: str, tel: RankTelemetry | None = tel) -> float:
            return num(tel.in_steps(field) if tel is not None else None)

        rows.append(
            {
                "rank": r.rank,
                "trace: GPU busy %": num(r.gpu_busy_pct),
                "trace: SM efficiency % (est.)": num(r.sm_efficiency_pct),
                "trace: achieved occupancy % (est.)": num(r.achieved_occupancy_pct),
                "NVML: utilisation %": in_steps("gpu_util_pct"),
                "GPM: SM activity %": in_steps("gpm_sm_activity_pct"),
                "GPM: SM occupancy %": in_steps("gpm_sm_occupancy_pct"),
                "GPM: tensor activity %": in_steps("gpm_tensor_activity_pct"),
            }
        )
    df = pd.DataFrame(rows)
    # Drop measures no rank has: an empty column only says "not recorded".
    return df.loc[:, [c for c in df.columns if c == "rank" or df[c].notna().any()]]


def utilisation_long(util: pd.DataFrame) -> pd.DataFrame:
    long = util.melt(id_vars="rank", var_name="measure", value_name="pct").dropna()
    long["rank"] = long["rank"].map(rank_label)
    return long


IDLE_REASONS = {
    "host_wait_ms": "waiting for the host to launch",
    "kernel_wait_ms": "launch gaps",
    "other_ms": "other (syncs, dependencies)",
}


def idle_long(report: Report) -> pd.DataFrame:
    """rank (label), why (reason), ms: the GPU's idle time per step by reason."""
    rows = [
        {"rank": rank_label(r.rank), "why": why, "ms": getattr(r.idle_breakdown, field)}
        for r in report.ranks
        if r.idle_breakdown is not None
        for field, why in IDLE_REASONS.items()
    ]
    return pd.DataFrame(rows, columns=["rank", "why", "ms"])


def imbalance_frame(imbalance: Imbalance) -> pd.DataFrame:
    rows = [
        {
            "metric": metric,
            **{k: v for k, v in asdict(spread).items() if k != "max_rank"},
            "max rank": spread.max_rank,
        }
        for metric, spread in imbalance.metrics.items()
    ]
    columns = ["metric", "mean", "max", "min", "max_over_mean", "cv", "max rank"]
    df = pd.DataFrame(rows, columns=columns)
    return df.astype({c: float for c in ("mean", "max", "min", "max_over_mean", "cv")})


def kernels_frame(kernels: list[KernelSummary]) -> pd.DataFrame:
    """One row per kernel; ``kernel`` is a short, numbered label (long names share prefixes)."""
    columns = [f.name for f in fields(KernelSummary)]
    df = pd.DataFrame([asdict(k) for k in kernels], columns=columns)
    df["kernel"] = [f"{i}. {short_name(n, 60)}" for i, n in enumerate(df["name"], 1)]
    return df
