"""Shape analysis results into the DataFrames the views draw; no metric is computed here.

Every function takes the report dict (``rankscope.report/1``), an ``Analysis`` or
one of its Tables, and returns a pandas DataFrame (or a sentence) in the shape a
chart wants: long form for stacked bars, rank x step for heatmaps. Values are
the engine's, only selected, renamed, pivoted or subtracted (deltas for
Compare). No streamlit import, so these are tested without a server.

Columns: ``breakdown_long`` -> rank, component, ms; ``steps_frame`` -> the
breakdown Table (rank, step, *_ms); ``rank_step_matrix`` -> index rank, columns
step; ``telemetry_frame`` -> rank, t_s (seconds since ``t0_ns``), the numeric
telemetry fields; ``utilisation_frame`` -> rank and one column per measure;
``compare_metrics`` -> metric, A, B, delta, delta_pct; ``compare_ranks`` ->
rank, metric, A, B, delta.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankscope.dashboard.ingest.table import Table

if TYPE_CHECKING:
    from rankscope.dashboard.ingest.run import Run

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
CAUSE_TEXT = {
    "data_loading": "data loading",
    "host": "host-side work",
    "gpu_compute": "more GPU compute",
    "communication": "communication (its collectives start late or run slowly)",
}
# The per-rank column that measures each straggler cause.
CAUSE_COLUMN = {"data_loading": "data_ms", "host": "host_ms", "gpu_compute": "compute_ms"}
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


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def straggler_sentence(report: dict[str, Any]) -> str | None:
    """ "Rank 1 is the straggler: data loading, ~43 ms/step more than ..." or None."""
    stragglers = report.get("stragglers") or []
    if not stragglers:
        return None
    s = stragglers[0]
    rank, cause = s["rank"], s["cause"]
    step_ms = report["run"].get("step_ms") or 0.0
    what = CAUSE_TEXT.get(cause, cause)
    extra = s.get("cause_excess_ms_per_step")
    if extra is not None:
        what += f", ~{extra:.0f} ms/step more than the other ranks"
    wait = s["caused_wait_ms_per_step"]
    share = f" ({100 * wait / step_ms:.0f}% of the {step_ms:.0f} ms step)" if step_ms else ""
    return (
        f"Rank {rank} is the straggler: {what}; the other ranks wait ~{wait:.0f} ms/step"
        f" for it{share}."
    )


def breakdown_long(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in report["ranks"]:
        for col, label in STEP_PARTS:
            rows.append({"rank": f"rank {r['rank']}", "component": label, "ms": _num(r[col])})
    return pd.DataFrame(rows, columns=["rank", "component", "ms"])


def ranks_frame(report: dict[str, Any]) -> pd.DataFrame:
    """One row per rank with the report's scalar per-rank fields."""
    keep = (
        [k for k, v in report["ranks"][0].items() if not isinstance(v, dict | list)]
        if report["ranks"]
        else []
    )
    df = pd.DataFrame([{k: r[k] for k in keep} for r in report["ranks"]], columns=keep)
    return df.astype({c: float for c in keep if c.endswith(("_ms", "_pct"))})


def steps_frame(breakdown: Table) -> pd.DataFrame:
    return breakdown.to_pandas()


def rank_step_matrix(breakdown: Table, column: str) -> pd.DataFrame:
    df = breakdown.to_pandas()
    return df.pivot_table(index="rank", columns="step", values=column, aggfunc="mean")


def table_matrix(table: Table, index: str, columns: str, values: str) -> pd.DataFrame:
    df = table.to_pandas()
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index=index, columns=columns, values=values, aggfunc="sum", fill_value=0)


def telemetry_frame(run: Run, t0_ns: int) -> pd.DataFrame:
    frames = []
    for rank, rd in sorted(run.ranks.items()):
        tel = rd.telemetry
        if not len(tel) or "ts_ns" not in tel:
            continue
        df = tel.to_pandas().drop(columns=["rank"], errors="ignore")
        df.insert(0, "t_s", (df["ts_ns"] - t0_ns) / 1e9)
        df.insert(0, "rank", rank)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def utilisation_frame(report: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in report["ranks"]:
        tel = r.get("telemetry") or {}

        def in_steps(field: str, tel: dict[str, Any] = tel) -> float:
            entry = tel.get(field) or {}
            return _num(entry.get("mean_in_steps", entry.get("mean")))

        rows.append(
            {
                "rank": r["rank"],
                "trace: GPU busy %": _num(r["gpu_busy_pct"]),
                "trace: SM efficiency % (est.)": _num(r["sm_efficiency_pct"]),
                "trace: achieved occupancy % (est.)": _num(r["achieved_occupancy_pct"]),
                "NVML: utilisation %": in_steps("gpu_util_pct"),
                "GPM: SM activity %": in_steps("gpm_sm_activity_pct"),
                "GPM: SM occupancy %": in_steps("gpm_sm_occupancy_pct"),
                "GPM: tensor activity %": in_steps("gpm_tensor_activity_pct"),
            }
        )
    df = pd.DataFrame(rows)
    # Drop measures no rank has: an empty column only says "not recorded".
    return df.loc[:, [c for c in df.columns if c == "rank" or df[c].notna().any()]]


def compare_metrics(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """Mean over ranks of each metric in A and B, their difference and relative change."""
    rows = []
    for key, label in COMPARE_METRICS:
        va = _mean([_num(r.get(key)) for r in a["ranks"]])
        vb = _mean([_num(r.get(key)) for r in b["ranks"]])
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


def compare_ranks(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    ra = {r["rank"]: r for r in a["ranks"]}
    rb = {r["rank"]: r for r in b["ranks"]}
    rows = []
    for rank in sorted(set(ra) | set(rb)):
        for key, label in COMPARE_METRICS:
            va = _num(ra[rank].get(key)) if rank in ra else np.nan
            vb = _num(rb[rank].get(key)) if rank in rb else np.nan
            rows.append({"rank": rank, "metric": label, "A": va, "B": vb, "delta": vb - va})
    return pd.DataFrame(rows, columns=["rank", "metric", "A", "B", "delta"])


def findings_frame(report: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "severity": f["severity"],
                "finding": f["title"],
                "saving ms/step": f["est_saving_ms_per_step"],
                "ranks": ", ".join(map(str, f["ranks"])),
            }
            for f in report["findings"]
        ],
        columns=["severity", "finding", "saving ms/step", "ranks"],
    )
