"""Shape analysis results into the DataFrames the views draw; no metric is computed here.

Every function takes the report dict (``rankscope.report/1``), an ``Analysis``,
one of its typed results or Tables, and returns a pandas DataFrame (or a
sentence from ``wording``) in the shape a chart or table wants: long form for
stacked bars, rank x step for heatmaps. Values are the engine's, only selected,
renamed, pivoted, averaged over ranks for a headline or subtracted (deltas for
Compare). No streamlit import, so these are tested without a server; ``data``
caches them per selection.

Columns: ``breakdown_long`` -> rank, component, ms; ``steps_frame`` -> the
breakdown Table (rank, step, *_ms); ``rank_step_matrix`` -> index rank, columns
step; ``telemetry_frame`` -> rank, t_s (seconds since ``t0_ns``), the numeric
telemetry fields; ``utilisation_frame`` -> rank and one column per measure;
``compare_metrics`` -> metric, A, B, delta, delta_pct; ``compare_ranks`` ->
rank, metric, A, B, delta; ``collectives_frame`` -> one row per collective;
``collective_time_long`` -> rank, part, ms; ``kernels_frame`` -> one row per
kernel; ``imbalance_frame`` -> one row per metric; ``idle_long`` -> rank, why, ms;
``stragglers_frame`` -> one row per straggler; ``per_step_frame`` -> rank, step,
step_ms, excess_ms, caused_wait_ms, lag_ms (the diagnosis' per-step evidence);
``per_step_matrix`` -> index rank, columns step; ``stall_marks`` -> rank, step,
lag_ms, kind, value (what the diagnosis found, where charts mark it).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankscope.dashboard.analysis import timeline, wording
from rankscope.dashboard.analysis.activity import trace_span
from rankscope.dashboard.analysis.results import CollectiveSummary, Imbalance, KernelSummary
from rankscope.dashboard.ingest.table import Table

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis
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


def _stalls(straggler: dict[str, Any]) -> list[tuple[int, float]]:
    """An intermittent straggler's (step, lag_ms) stalls, as ``wording`` takes them."""
    return [(int(s["step"]), float(s["lag_ms"])) for s in straggler.get("steps") or []]


def straggler_sentence(report: dict[str, Any]) -> str | None:
    """ "Rank 1 is the straggler: data loading, ~43 ms/step more than ..." or None.

    An intermittent straggler reads "Rank 2 stalled ~302 ms at step 11: ...", never a mean.
    """
    stragglers = report.get("stragglers") or []
    if not stragglers:
        return None
    s = stragglers[0]
    return wording.straggler_headline(
        s["rank"],
        s["cause"],
        s.get("cause_excess_ms_per_step"),
        s["caused_wait_ms_per_step"],
        report["run"].get("step_ms") or 0.0,
        s.get("pattern", "persistent"),
        _stalls(s),
        s.get("cause_detail"),
    )


def straggler_next(report: dict[str, Any]) -> str | None:
    """Where to look next about the worst straggler (untraced host time), or None."""
    stragglers = report.get("stragglers") or []
    hint = stragglers[0].get("hint") if stragglers else None
    return wording.straggler_next(hint) if hint else None


def joint_saving_sentence(report: dict[str, Any]) -> str | None:
    """With two stragglers or more: what fixing them all together saves (one what-if)."""
    joint = report["imbalance"].get("joint_saving_ms_per_step")
    n = len(report.get("stragglers") or [])
    return wording.joint_saving_text(n, joint) if n > 1 and joint is not None else None


def rotating_sentence(report: dict[str, Any]) -> str | None:
    """With no straggler but stalls that move between ranks: the sentence that says so."""
    rotating = report["imbalance"].get("rotating")
    if report.get("stragglers") or not rotating:
        return None
    return wording.no_straggler_sentence(
        len(report["run"]["ranks"]), True, None, sorted(int(r) for r in rotating["counts"])
    )


STRAGGLER_COLUMNS = [
    "rank",
    "pattern",
    "cause",
    "confidence",
    "severity",
    "saving ms/step",
    "excess ms/step",
    "others wait ms/step",
    "stalls",
]


def stragglers_frame(report: dict[str, Any]) -> pd.DataFrame:
    """One row per straggler, worst first: how it is late, why, how sure, what fixing it saves.

    ``excess ms/step`` (a mean) stays empty for an intermittent straggler, whose
    ``stalls`` say where and how late instead; ``saving ms/step`` is its share of the
    joint what-if.
    """
    rows = []
    for s in report.get("stragglers") or []:
        intermittent = s.get("pattern") == "intermittent"
        rows.append(
            {
                "rank": s["rank"],
                "pattern": s.get("pattern", "persistent"),
                "cause": wording.cause_name(s["cause"], s.get("cause_detail")),
                "confidence": s.get("confidence"),
                "severity": s["severity"],
                "saving ms/step": _num(s.get("est_saving_ms_per_step")),
                "excess ms/step": np.nan if intermittent else _num(s["excess_ms_per_step"]),
                "others wait ms/step": _num(s["caused_wait_ms_per_step"]),
                "stalls": wording.stalls_text(_stalls(s)) if intermittent else None,
            }
        )
    return pd.DataFrame(rows, columns=STRAGGLER_COLUMNS)


def headline_numbers(report: dict[str, Any]) -> dict[str, str | None]:
    """The Overview's four figures, as text: step time, straggler, waiting, GPU busy."""
    run = report["run"]
    stragglers = report["stragglers"]
    waits = [r["comm_wait_ms"] for r in report["ranks"] if r["comm_wait_ms"] is not None]
    busy = [r["gpu_busy_pct"] for r in report["ranks"] if r["gpu_busy_pct"] is not None]
    return {
        "step": f"{run['step_ms']:.1f} ms" if run["step_ms"] is not None else "–",
        "straggler": _ranks_text([s["rank"] for s in stragglers]) if stragglers else "none",
        "straggler_cause": (
            wording.cause_name(stragglers[0]["cause"], stragglers[0].get("cause_detail"))
            if stragglers
            else None
        ),
        "wait": f"{_mean(waits):.1f} ms/step" if waits else "–",
        "busy": f"{_mean(busy):.0f}%" if busy else "no GPU",
    }


def _ranks_text(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


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


def rank_label(rank: int) -> str:
    return f"rank {rank}"


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


def compare_rank_matrix(per_rank: pd.DataFrame) -> pd.DataFrame:
    """``compare_ranks`` as rank x metric of deltas."""
    return per_rank.pivot_table(index="rank", columns="metric", values="delta", sort=False)


def compare_long(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.melt(
        id_vars="metric", value_vars=["A", "B"], var_name="side", value_name="value"
    )


# --- Communication ---

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


# --- Load imbalance, kernels, GPU ---


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
    columns = [f.name for f in KernelSummary.__dataclass_fields__.values()]
    df = pd.DataFrame([asdict(k) for k in kernels], columns=columns)
    df["kernel"] = [f"{i}. {short_name(n, 60)}" for i, n in enumerate(df["name"], 1)]
    return df


def short_name(name: str, limit: int = 70) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


IDLE_REASONS = {
    "host_wait_ms": "waiting for the host to launch",
    "kernel_wait_ms": "launch gaps",
    "other_ms": "other (syncs, dependencies)",
}


def idle_long(report: dict[str, Any]) -> pd.DataFrame:
    """rank (label), why (reason), ms: the GPU's idle time per step by reason."""
    rows = [
        {"rank": rank_label(r["rank"]), "why": IDLE_REASONS[k], "ms": v}
        for r in report["ranks"]
        if r.get("idle_breakdown")
        for k, v in r["idle_breakdown"].items()
    ]
    return pd.DataFrame(rows, columns=["rank", "why", "ms"])


def utilisation_long(util: pd.DataFrame) -> pd.DataFrame:
    long = util.melt(id_vars="rank", var_name="measure", value_name="pct").dropna()
    long["rank"] = long["rank"].map(rank_label)
    return long


def telemetry_start_ns(run: Run) -> int | None:
    """The first telemetry sample of any rank: time zero of the telemetry charts."""
    starts = [
        int(rd.telemetry["ts_ns"].min())
        for rd in run.ranks.values()
        if len(rd.telemetry) and "ts_ns" in rd.telemetry
    ]
    return min(starts) if starts else None


# Telemetry fields named as a chart legend names them (others keep their field name).
TELEMETRY_LABELS = {
    "gpu_util_pct": "NVML utilisation",
    "mem_util_pct": "NVML memory-bus utilisation",
    "gpm_sm_activity_pct": "GPM SM activity",
    "gpm_sm_occupancy_pct": "GPM SM occupancy",
    "gpm_tensor_activity_pct": "GPM tensor activity",
    "gpm_dram_bw_pct": "GPM DRAM bandwidth",
    "sm_clock_mhz": "SM clock",
    "mem_clock_mhz": "memory clock",
    "pcie_tx_kbs": "PCIe tx",
    "pcie_rx_kbs": "PCIe rx",
    "nvlink_tx_kbs": "NVLink tx",
    "nvlink_rx_kbs": "NVLink rx",
}


def telemetry_long(
    tel: pd.DataFrame, fields: tuple[str, ...], scale: float, labels: dict[str, str]
) -> pd.DataFrame:
    """rank (label), t_s, field (label), value (scaled) of the ``fields`` that were recorded."""
    present = [f for f in fields if f in tel.columns and tel[f].notna().any()]
    if not present:
        return pd.DataFrame(columns=["rank", "t_s", "field", "value"])
    long = (
        tel[["rank", "t_s", *present]]
        .melt(id_vars=["rank", "t_s"], var_name="field", value_name="value")
        .dropna()
    )
    long["value"] = long["value"] * scale
    long["field"] = long["field"].map(lambda f: labels.get(f, f))
    long["rank"] = long["rank"].map(rank_label)
    return long


def time_bands(
    a: Analysis, t0_ns: int, max_steps: int
) -> tuple[tuple[float, float] | None, list[tuple[float, float]]]:
    """(profiler window, every other analysed step) as seconds since ``t0_ns``."""
    spans = [s for s in (trace_span(rd) for rd in a.run.ranks.values()) if s is not None]
    window = None
    if spans:
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        window = ((lo - t0_ns) / 1e9, (hi - t0_ns) / 1e9)
    bands = []
    for i, step in enumerate([s for s in a.steps if s >= 0][:max_steps]):
        starts = [w[step][0] for w in a.windows.values() if step in w]
        ends = [w[step][1] for w in a.windows.values() if step in w]
        if starts and i % 2 == 0:
            bands.append(((min(starts) - t0_ns) / 1e9, (max(ends) - t0_ns) / 1e9))
    return window, bands


# --- the diagnosis' per-step evidence: the Overview's per-step chart, the heatmaps' marks ---

PER_STEP_COLUMNS = ["rank", "step", "step_ms", "excess_ms", "caused_wait_ms", "lag_ms"]
MARK_COLUMNS = ["rank", "step", "lag_ms", "kind", "value"]


def per_step_frame(report: dict[str, Any]) -> pd.DataFrame:
    """The report's ``per_step``, one row per (rank, step) sorted by rank then step."""
    df = pd.DataFrame(report.get("per_step") or [], columns=PER_STEP_COLUMNS)
    df = df.astype({"rank": "int64", "step": "int64"} | {c: float for c in PER_STEP_COLUMNS[2:]})
    return df.sort_values(["rank", "step"], ignore_index=True)


def per_step_matrix(report: dict[str, Any], column: str) -> pd.DataFrame:
    """rank x step of one ``per_step`` column (``excess_ms``, ...); empty without per_step."""
    df = per_step_frame(report)
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index="rank", columns="step", values=column, aggfunc="mean")


def straggler_ranks(report: dict[str, Any]) -> list[int]:
    """The stragglers' ranks, worst first: the lines the per-step chart highlights."""
    return [int(s["rank"]) for s in report.get("stragglers") or []]


def stall_marks(report: dict[str, Any], column: str = "excess_ms") -> pd.DataFrame:
    """Where the diagnosis says a rank held the others back, one row per mark.

    ``kind``: ``persistent`` (a straggler late at most steps: its whole row, ``step``
    missing), ``intermittent`` (one stall of an intermittent straggler) or ``rotating``
    (one stall of the rotating finding, with the rank that stalled). ``lag_ms``: how late
    it was there (missing for a whole row); ``value``: ``column`` of ``per_step`` at that
    rank and step, where the per-step chart draws the mark.
    """
    rows: list[dict[str, Any]] = []
    for s in report.get("stragglers") or []:
        if s.get("pattern") == "intermittent" and s.get("steps"):
            rows += [
                {
                    "rank": s["rank"],
                    "step": x["step"],
                    "lag_ms": x["lag_ms"],
                    "kind": "intermittent",
                }
                for x in s["steps"]
            ]
        else:
            rows.append({"rank": s["rank"], "step": None, "lag_ms": None, "kind": "persistent"})
    rotating = report.get("imbalance", {}).get("rotating") or {}
    rows += [
        {"rank": x["rank"], "step": x["step"], "lag_ms": x["lag_ms"], "kind": "rotating"}
        for x in rotating.get("steps") or []
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


# --- the whole run from the light layer: lateness per rank and step, step time, windows ---
#
# ``whole_run_heatmap`` -> index rank (drawing order), columns the first step of each
# column, values excess_ms (max over the column's steps); ``whole_run_steps`` -> step,
# last_step, step_ms, data_max_ms, data_median_ms; ``whole_run_telemetry`` -> rank
# (label), step (fractional), field (label), value; ``trace_windows`` -> first_step,
# last_step, auto, label; ``slow_steps`` -> step, rank, excess_ms, step_ms, window_first,
# window_last, label.

# Columns and rows a whole-run heatmap draws at most: a browser draws 600 x 64 cells
# quickly, and a stall of one step must never average away, so columns are max-pooled.
MAX_HEAT_COLUMNS = 600
MAX_HEAT_RANKS = 64
# Telemetry points per rank on a whole-run chart: one per column of the heatmap.
MAX_TELEMETRY_POINTS = MAX_HEAT_COLUMNS
# Pooled with the minimum, not the maximum: a clock dip is the event to keep.
POOL_MIN_FIELDS = ("sm_clock_mhz", "mem_clock_mhz")
WHOLE_RUN_STEP_COLUMNS = ["step", "last_step", "step_ms", "data_max_ms", "data_median_ms"]
WINDOW_COLUMNS = ["first_step", "last_step", "auto", "label"]
SLOW_STEP_COLUMNS = [
    "step",
    "rank",
    "excess_ms",
    "step_ms",
    "window_first",
    "window_last",
    "label",
]


def pool_width(n_steps: int, max_columns: int) -> int:
    """Steps per column so that ``n_steps`` fit in ``max_columns`` (at least 1)."""
    return max(1, -(-n_steps // max(1, max_columns)))


def max_pool(
    values: np.ndarray, steps: np.ndarray, max_columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """(values max-pooled along the last axis, each column's first step).

    Consecutive steps go into columns of ``pool_width`` steps, so at most
    ``max_columns`` remain and a spike at one step stays at full height in its
    column. NaN is ignored; a column of NaN only stays NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps)
    width = pool_width(len(steps), max_columns)
    if width == 1 or not len(steps):
        return values.copy(), steps.copy()
    starts = np.arange(0, len(steps), width)
    pooled = np.maximum.reduceat(np.where(np.isnan(values), -np.inf, values), starts, axis=-1)
    pooled[np.isneginf(pooled)] = np.nan
    return pooled, steps[starts]


def heatmap_ranks(
    excess: np.ndarray, ranks: list[int], first: list[int], max_ranks: int
) -> list[int]:
    """The rows to draw, in order: every rank by number up to ``max_ranks`` ranks.

    Beyond that, the ranks in ``first`` (the stragglers, worst first), then the
    others by their worst step (then their mean) lateness, ``max_ranks`` in all:
    the outliers a reader looks for are on top, the hundreds of quiet ranks left out.
    """
    if len(ranks) <= max_ranks:
        return sorted(ranks)
    finite = np.where(np.isnan(excess), -np.inf, excess)
    peak = finite.max(axis=1)
    mean = np.nanmean(np.where(np.isinf(finite), np.nan, finite), axis=1)
    order = sorted(range(len(ranks)), key=lambda i: (-peak[i], -mean[i], ranks[i]))
    chosen = [r for r in first if r in ranks]
    chosen += [ranks[i] for i in order if ranks[i] not in chosen]
    return chosen[:max_ranks]


def _whole_run_ranks(a: Analysis) -> list[int]:
    """The ranks of the whole run's rows (those with a step timer and a collective log)."""
    from rankscope.dashboard.analysis import wholerun

    return [lr.rank for lr in wholerun.light_ranks(a.run.ranks)]


def whole_run_heatmap(a: Analysis, max_columns: int, max_ranks: int) -> pd.DataFrame:
    """rank x step of the whole run's excess_ms, max-pooled and rank-limited; empty without one."""
    whole = a.whole_run
    if whole is None or whole.diagnosis.excess_ms is None:
        return pd.DataFrame()
    excess = whole.diagnosis.excess_ms
    ranks = _whole_run_ranks(a)
    steps = np.array([s.step for s in whole.steps], dtype=np.int64)
    first = [s.rank for s in a.whole_run_stragglers]
    rows = heatmap_ranks(excess, ranks, first, max_ranks)
    pooled, columns = max_pool(excess[[ranks.index(r) for r in rows]], steps, max_columns)
    return pd.DataFrame(pooled, index=pd.Index(rows, name="rank"), columns=columns.tolist())


def _data_wait_by_step(a: Analysis, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the longest and the median DataLoader wait over ranks (NaN unrecorded)."""
    waits = np.full((len(a.run.ranks), len(steps)), np.nan)
    for k, (_, rd) in enumerate(sorted(a.run.ranks.items())):
        marks = rd.step_marks
        if not len(marks) or "data_ns" not in marks:
            continue
        ms = marks["data_ns"].astype(np.float64) / 1e6
        ms[marks["data_ns"] < 0] = np.nan
        by_step = dict(zip(marks["step"].tolist(), ms.tolist(), strict=True))
        waits[k] = [by_step.get(int(s), np.nan) for s in steps]
    recorded = ~np.isnan(waits).all(axis=0)
    longest = np.full(len(steps), np.nan)
    median = np.full(len(steps), np.nan)
    longest[recorded] = np.nanmax(waits[:, recorded], axis=0)
    median[recorded] = np.nanmedian(waits[:, recorded], axis=0)
    return longest, median


def whole_run_steps(a: Analysis, max_columns: int) -> pd.DataFrame:
    """Step time (median over ranks) and DataLoader wait per step, max-pooled like the heatmap."""
    whole = a.whole_run
    if whole is None or not whole.steps:
        return pd.DataFrame(columns=WHOLE_RUN_STEP_COLUMNS)
    steps = np.array([s.step for s in whole.steps], dtype=np.int64)
    longest, median = _data_wait_by_step(a, steps)
    series = np.vstack([[s.step_ms for s in whole.steps], longest, median])
    pooled, first = max_pool(series, steps, max_columns)
    width = pool_width(len(steps), max_columns)
    last = steps[np.minimum(np.arange(len(first)) * width + width - 1, len(steps) - 1)]
    return pd.DataFrame(
        {
            "step": first,
            "last_step": last,
            "step_ms": pooled[0],
            "data_max_ms": pooled[1],
            "data_median_ms": pooled[2],
        }
    )


def _fractional_steps(
    step: np.ndarray, start: np.ndarray, end: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Each timestamp as step + fraction of that step done; NaN before the first step."""
    order = np.argsort(start, kind="stable")
    step, start, end = step[order], start[order], end[order]
    k = np.searchsorted(start, ts, side="right") - 1
    out = np.full(len(ts), np.nan)
    ok = k >= 0
    span = np.maximum(end[k[ok]] - start[k[ok]], 1).astype(np.float64)
    out[ok] = step[k[ok]] + np.clip((ts[ok] - start[k[ok]]) / span, 0.0, 1.0)
    return out


def whole_run_telemetry(
    a: Analysis, fields: tuple[str, ...], ranks: list[int], max_points: int
) -> pd.DataFrame:
    """rank (label), step (fractional), field (label), value of ``fields`` over the run.

    A sample's place on the step axis comes from its own rank's step timer (so the
    charts line up with the heatmap's columns without any cross-rank clock). Each
    rank's samples are pooled into at most ``max_points`` spans of steps: clocks by
    their minimum, everything else by its maximum.
    """
    rows = []
    for rank in ranks:
        rd = a.run.ranks.get(rank)
        if rd is None:
            continue
        tel, marks = rd.telemetry, rd.step_marks
        present = [f for f in fields if f in tel and not np.isnan(tel[f]).all()]
        if not present or "ts_ns" not in tel or not len(marks) or "start_ns" not in marks:
            continue
        x = _fractional_steps(marks["step"], marks["start_ns"], marks["end_ns"], tel["ts_ns"])
        df = pd.DataFrame({"step": x, **{f: tel[f] for f in present}}).dropna(subset=["step"])
        if df.empty:
            continue
        lo, hi = float(df["step"].min()), float(df["step"].max())
        width = max((hi - lo) / max(1, max_points), 1e-9)
        if len(df) > max_points:
            groups = df.groupby(((df["step"] - lo) // width).astype(np.int64))
            agg = {"step": "min"} | {f: ("min" if f in POOL_MIN_FIELDS else "max") for f in present}
            df = groups.agg(agg).reset_index(drop=True)
        long = df.melt(id_vars="step", var_name="field", value_name="value").dropna()
        long.insert(0, "rank", rank_label(rank))
        rows.append(long)
    if not rows:
        return pd.DataFrame(columns=["rank", "step", "field", "value"])
    out = pd.concat(rows, ignore_index=True)
    out["field"] = out["field"].map(lambda f: TELEMETRY_LABELS.get(f, f))
    return out


def trace_windows(a: Analysis) -> pd.DataFrame:
    """The run's trace windows (the manifests', else the traced steps' runs), labelled.

    ``auto``: auto-capture asked for it (its label then says what triggered it).
    """
    found: dict[tuple[int, int], dict[str, Any] | None] = {}
    ranks = (a.run.manifest or {}).get("ranks") or {}
    for meta in ranks.values():
        for w in (meta or {}).get("windows") or []:
            try:
                span = (int(w["first_step"]), int(w["last_step"]))
            except (KeyError, TypeError, ValueError):
                continue
            trigger = w.get("trigger") if isinstance(w.get("trigger"), dict) else None
            found[span] = found.get(span) or trigger
    if not found:  # a plain trace folder: each run of consecutive traced steps
        first = prev = None
        for s in [s for s in a.steps if s >= 0]:
            if prev is None or s != prev + 1:
                if first is not None and prev is not None:
                    found[(first, prev)] = None
                first = s
            prev = s
        if first is not None and prev is not None:
            found[(first, prev)] = None
    rows = [
        {
            "first_step": lo,
            "last_step": hi,
            "auto": trigger is not None,
            "label": wording.trace_window_label(lo, hi, trigger),
        }
        for (lo, hi), trigger in sorted(found.items())
    ]
    return pd.DataFrame(rows, columns=WINDOW_COLUMNS).astype(
        {"first_step": "int64", "last_step": "int64", "auto": bool}
    )


def covering_window(windows: pd.DataFrame, step: int) -> tuple[int, int] | None:
    """The shortest trace window holding ``step``, or None."""
    if windows.empty:
        return None
    spans = [
        (int(lo), int(hi))
        for lo, hi in zip(windows["first_step"], windows["last_step"], strict=True)
        if lo <= step <= hi
    ]
    return min(spans, key=lambda w: (w[1] - w[0], w[0])) if spans else None


def step_range_within(window: tuple[int, int], steps: list[int]) -> tuple[int, int] | None:
    """The analysable steps (the sidebar's choices) inside ``window``, as (first, last)."""
    inside = [s for s in steps if window[0] <= s <= window[1]]
    return (inside[0], inside[-1]) if inside else None


def slow_steps(a: Analysis, count: int = 10) -> pd.DataFrame:
    """The steps to pick on the whole-run page: every stall the whole-run diagnosis
    found (an intermittent straggler's, or rotating lateness'), or (none) the ``count``
    steps whose late rank was latest; each with the trace window that covers it, if any."""
    whole = a.whole_run
    if whole is None:
        return pd.DataFrame(columns=SLOW_STEP_COLUMNS)
    by_step = {s.step: s for s in whole.steps}
    picks = [(x.step, s.rank, x.lag_ms) for s in a.whole_run_stragglers for x in s.steps or []]
    rotating = whole.diagnosis.rotating
    if rotating is not None:
        picks += [
            (x.step, rank, x.lag_ms)
            for x, rank in zip(rotating.steps, rotating.ranks_by_step, strict=True)
            if x.step not in {p[0] for p in picks}
        ]
    if not picks:
        latest = sorted(whole.steps, key=lambda s: (-s.excess_ms, s.step))[:count]
        picks = [(s.step, s.late_rank, s.excess_ms) for s in latest]
    windows = trace_windows(a)
    rows = []
    for step, rank, lag in sorted(picks):
        covered = covering_window(windows, step)
        rows.append(
            {
                "step": step,
                "rank": rank,
                "excess_ms": lag,
                "step_ms": by_step[step].step_ms if step in by_step else np.nan,
                "window_first": covered[0] if covered else None,
                "window_last": covered[1] if covered else None,
                "label": wording.slow_step_label(step, rank, lag, covered),
            }
        )
    return pd.DataFrame(rows, columns=SLOW_STEP_COLUMNS).astype(
        {"step": "int64", "rank": "int64", "window_first": "Int64", "window_last": "Int64"}
    )


# --- many ranks: which ranks a chart draws one by one, and what summarises the rest ---
#
# Up to these many ranks every chart draws every rank, as it always did; beyond,
# the stragglers come first, then the ranks furthest from the others (the outliers
# a reader looks for), and the quiet majority is summarised (a median and a
# p10-p90 band, one "the other N ranks" bar, a table cut with a way to see all).
MAX_LINE_RANKS = 16  # lines on a chart with one line per rank (its legend names each)
MAX_BAR_RANKS = 32  # bars (or boxes) on a chart with one bar per rank
MAX_TABLE_RANKS = 64  # rows of a table or heatmap with one row per rank
MAX_EXTRA_LINES = 3  # beyond the stragglers: the outlying ranks drawn as lines
BAND_BINS = 200  # points of a median / p10-p90 band over time


def rank_of(label: str | int) -> int:
    """The rank of a label from ``rank_label`` ("rank 7" -> 7), or of a rank itself."""
    return label if isinstance(label, int | np.integer) else int(str(label).split()[-1])


def outlier_order(values: pd.DataFrame, first: list[int] | None = None) -> list[int]:
    """Every rank of ``values`` (index: rank, columns: numbers), the outliers first.

    The ranks in ``first`` (the stragglers, worst first) lead; then the others by
    how far they are from the median rank: the largest distance over the columns
    from that column's median, then the summed distance, then the rank. A missing
    value is no distance.
    """
    first = [int(r) for r in first or []]
    ranks = [int(r) for r in values.index]
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if x.ndim == 1:
        x = x[:, None]
    if x.size:
        with np.errstate(all="ignore"):
            median = np.nanmedian(x, axis=0) if len(x) else np.zeros(x.shape[1])
        dist = np.nan_to_num(np.abs(x - median), nan=0.0)
        peak, total = dist.max(axis=1, initial=0.0), dist.sum(axis=1)
    else:
        peak = total = np.zeros(len(ranks))
    order = sorted(range(len(ranks)), key=lambda i: (-peak[i], -total[i], ranks[i]))
    lead = [r for r in dict.fromkeys(first) if r in set(ranks)]
    return lead + [ranks[i] for i in order if ranks[i] not in lead]


def shown_ranks(values: pd.DataFrame, first: list[int] | None, limit: int) -> list[int]:
    """The ranks a per-rank chart draws: all, by number, up to ``limit``; beyond,
    ``limit`` of them in ``outlier_order`` (stragglers first)."""
    if len(values) <= limit:
        return sorted(int(r) for r in values.index)
    return outlier_order(values, first)[:limit]


def limit_matrix(
    matrix: pd.DataFrame, first: list[int] | None, limit: int = MAX_TABLE_RANKS
) -> pd.DataFrame:
    """A rank x something matrix cut to ``limit`` rows, outliers first (``shown_ranks``);
    unchanged (rows by rank) when it has no more rows than that."""
    if len(matrix) <= limit:
        return matrix
    return matrix.loc[shown_ranks(matrix, first, limit)]


def limit_rank_rows(
    df: pd.DataFrame, columns: list[str], first: list[int] | None, limit: int = MAX_TABLE_RANKS
) -> pd.DataFrame:
    """A table of one row per rank (column ``rank``), outliers by ``columns`` first and cut
    to ``limit`` rows; unchanged when it has no more rows than that."""
    if len(df) <= limit:
        return df
    values = df.set_index(df["rank"].map(rank_of))[columns]
    keep = shown_ranks(values, first, limit)
    ranks = df["rank"].map(rank_of)
    return df.set_index(ranks, drop=False).loc[keep].reset_index(drop=True)


def other_ranks_label(n: int, how: str) -> str:
    """The bar that stands for the ranks not drawn one by one: "other 480 ranks (median)"."""
    return f"other {n} ranks ({how})"


def drawn_ranks(long: pd.DataFrame) -> int:
    """How many ranks a cut frame (``limit_rank_bars``, ``limit_rank_boxes``) draws one by one."""
    return sum(1 for r in dict.fromkeys(long["rank"]) if str(r).startswith("rank "))


def limit_rank_bars(
    long: pd.DataFrame,
    value: str,
    part: str | None,
    first: list[int] | None,
    limit: int = MAX_BAR_RANKS,
    how: str = "median",
) -> tuple[pd.DataFrame, int]:
    """A per-rank bar chart's long frame (``rank`` a label, optional ``part``, ``value``)
    cut to ``limit`` ranks, outliers first, and one more bar for the rest.

    The rest's bar holds, per part, the ``how`` ("median" or "total") of the other
    ranks' values. Returns (frame, ranks in the input); the frame is the input
    itself with no more ranks than ``limit``.
    """
    labels = list(dict.fromkeys(long["rank"]))
    if len(labels) <= limit:
        return long, len(labels)
    key = long["rank"].map(rank_of)
    wide = (
        long.assign(rank=key).pivot_table(index="rank", columns=part, values=value, aggfunc="sum")
        if part
        else long.assign(rank=key).groupby("rank")[[value]].sum()
    )
    keep = shown_ranks(wide, first, limit)
    shown = long[key.isin(keep)].copy()
    order = {r: i for i, r in enumerate(keep)}
    shown = shown.iloc[np.argsort(shown["rank"].map(rank_of).map(order).to_numpy(), kind="stable")]
    rest = wide.drop(index=keep)
    agg = rest.median() if how == "median" else rest.sum()
    label = other_ranks_label(len(rest), how)
    if part:
        extra = pd.DataFrame({"rank": label, part: agg.index, value: agg.to_numpy()})
    else:
        extra = pd.DataFrame({"rank": [label], value: [float(agg[value])]})
    return pd.concat([shown, extra], ignore_index=True), len(labels)


def band(long: pd.DataFrame, x: str, value: str, bins: int | None = None) -> pd.DataFrame:
    """x, p10, median, p90 of ``value`` over the ranks at each ``x`` (in ``bins`` bins
    of x when given: samples of different ranks never share a timestamp)."""
    df = long[[x, value]].dropna()
    if df.empty:
        return pd.DataFrame(columns=[x, "p10", "median", "p90"])
    key = df[x]
    if bins:
        lo, hi = float(key.min()), float(key.max())
        width = max((hi - lo) / bins, 1e-12)
        key = lo + ((key - lo) // width).clip(upper=bins - 1) * width + width / 2
    groups = df[value].groupby(key.to_numpy())
    out = pd.DataFrame(
        {
            "p10": groups.quantile(0.1),
            "median": groups.median(),
            "p90": groups.quantile(0.9),
        }
    )
    out.index.name = x
    return out.reset_index()


def limit_rank_boxes(
    steps: pd.DataFrame, column: str, first: list[int] | None, limit: int = MAX_BAR_RANKS
) -> tuple[pd.DataFrame, int]:
    """``steps_by_rank`` cut to ``limit`` ranks for one box each (outliers by their median
    ``column`` first), the other ranks' steps pooled into one more box; (frame, ranks)."""
    labels = list(dict.fromkeys(steps["rank"]))
    if len(labels) <= limit:
        return steps, len(labels)
    key = steps["rank"].map(rank_of)
    medians = steps.assign(rank=key).groupby("rank")[[column]].median()
    keep = shown_ranks(medians, first, limit)
    order = {r: i for i, r in enumerate(keep)}
    inside = key.isin(keep)
    shown = steps[inside].iloc[np.argsort(key[inside].map(order).to_numpy(), kind="stable")]
    rest = steps[~inside].assign(rank=other_ranks_label(len(labels) - len(keep), "all steps"))
    return pd.concat([shown, rest], ignore_index=True), len(labels)
