"""The whole run from the light layer: lateness per rank and step, step time, trace windows.

``whole_run_heatmap`` -> index rank (drawing order), columns the first step of each
column, values excess_ms (max over the column's steps); ``whole_run_steps`` -> step,
last_step, step_ms, data_max_ms, data_median_ms; ``whole_run_telemetry`` -> rank
(label), step (fractional), field (label), value; ``trace_windows`` -> first_step,
last_step, auto, label; ``slow_steps`` -> step, rank, excess_ms, step_ms, window_first,
window_last, label. Each reads the ``Analysis`` (its ``whole_run``) and pools for drawing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankscope.dashboard.analysis import dataloader, wording
from rankscope.dashboard.app.model.basics import rank_label
from rankscope.dashboard.app.model.telemetry import TELEMETRY_LABELS

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis

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


def whole_run_steps(a: Analysis, max_columns: int) -> pd.DataFrame:
    """Step time (median over ranks) and DataLoader wait per step, max-pooled like the heatmap."""
    whole = a.whole_run
    if whole is None or not whole.steps:
        return pd.DataFrame(columns=WHOLE_RUN_STEP_COLUMNS)
    steps = np.array([s.step for s in whole.steps], dtype=np.int64)
    longest, median = dataloader.wait_by_step(a.run.ranks, steps)
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
