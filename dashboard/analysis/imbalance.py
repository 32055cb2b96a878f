"""Load imbalance across ranks and the stragglers that cause it.

``imbalance(per_rank)`` takes per-rank means (ms/step) of the breakdown columns
and gives, per metric, max/mean, the coefficient of variation and the rank
with the maximum.

``find_stragglers(matched, per_rank, n_steps, step_ms)``: the wait a rank
*causes* is the time the other ranks spend waiting in collective instances
where it arrived last (merged per waiting rank, so overlapping collectives are
not counted twice), averaged over the other ranks, per step. A rank is a
straggler when that exceeds the median of the other ranks' caused wait by at
least ``STRAGGLER_MIN_FRACTION`` (5%) of the step time; severity is high from
20% of the step time, medium from 10%, low below. Its cause is the component
(data loading, host-only time, compute) by which it exceeds the other ranks'
median the most, or ``communication`` when none explains at least a quarter
of the excess (a slow link or an earlier collective).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.comms import last_arrivals, wait_intervals
from rankscope.dashboard.ingest.table import Table

NS_PER_MS = 1e6
STRAGGLER_MIN_FRACTION = 0.05
HIGH_FRACTION = 0.20
MEDIUM_FRACTION = 0.10

IMBALANCE_METRICS = (
    "step_ms",
    "compute_ms",
    "data_ms",
    "host_ms",
    "comm_ms",
    "comm_wait_ms",
    "idle_ms",
)
_CAUSE_COLUMNS = (("data_loading", "data_ms"), ("host", "host_ms"), ("gpu_compute", "compute_ms"))
_LABEL = {"data_ms": "data loading", "host_ms": "host-only time", "compute_ms": "compute"}


def median(values: list[float]) -> float:
    """The median of a few numbers (np.median imports numpy.ma, ~25 ms of start-up)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        return float("nan")
    mid = n // 2
    return float(s[mid]) if n % 2 else (float(s[mid - 1]) + float(s[mid])) / 2.0


def severity(ms: float, step_ms: float) -> str:
    frac = ms / step_ms if step_ms > 0 else 0.0
    if frac >= HIGH_FRACTION:
        return "high"
    if frac >= MEDIUM_FRACTION:
        return "medium"
    return "low"


def imbalance(per_rank: dict[int, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"ranks": len(per_rank)}
    ranks = sorted(per_rank)
    for metric in IMBALANCE_METRICS:
        vals = np.array([per_rank[r].get(metric, np.nan) for r in ranks], dtype=np.float64)
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        v = vals[ok]
        mean = float(v.mean())
        out[metric] = {
            "mean": round(mean, 3),
            "max": round(float(v.max()), 3),
            "min": round(float(v.min()), 3),
            "max_over_mean": round(float(v.max()) / mean, 3) if mean > 0 else None,
            "cv": round(float(v.std()) / mean, 3) if mean > 0 else None,
            "max_rank": int(np.array(ranks)[ok][int(v.argmax())]),
        }
    return out


def caused_wait_ms(matched: Table, ranks: list[int], n_steps: int) -> dict[int, float]:
    """Per rank, the mean wait per other rank per step it caused by arriving last."""
    out = {}
    for r in ranks:
        waits = wait_intervals(matched, by_last_rank=r)
        others = [o for o in ranks if o != r]
        if not others:
            out[r] = 0.0
            continue
        total = sum(iv.length(waits.get(o, iv.empty())) for o in others)
        out[r] = total / NS_PER_MS / len(others) / max(n_steps, 1)
    return out


def last_arrival_summary(
    matched: Table, caused: dict[int, float], step_ms: float
) -> dict[str, Any] | None:
    """The rank that arrives last most often, and what it costs the others.

    Reported whether or not it is a straggler, so a user can see why a rank that
    other tools name (HTA lists the top candidate) is below the threshold here.
    """
    if not len(matched) or len(caused) < 2:
        return None
    counts = last_arrivals(matched)
    if not counts:
        return None
    rank = max(counts, key=lambda r: (counts[r], -r))
    excess = caused[rank] - median([v for r, v in caused.items() if r != rank])
    return {
        "rank": rank,
        "count": counts[rank],
        "of": sum(counts.values()),
        "excess_ms_per_step": round(excess, 3),
        "excess_pct_of_step": round(100.0 * excess / step_ms, 2) if step_ms > 0 else None,
    }


def find_stragglers(
    matched: Table,
    per_rank: dict[int, dict[str, float]],
    n_steps: int,
    step_ms: float,
    has_gpu: bool,
) -> tuple[list[dict[str, Any]], dict[int, float]]:
    ranks = sorted(per_rank)
    caused = caused_wait_ms(matched, ranks, n_steps)
    if len(ranks) < 2 or step_ms <= 0 or not len(matched):
        return [], caused
    last_counts = last_arrivals(matched)
    n_inst = sum(last_counts.values())

    out: list[dict[str, Any]] = []
    for r in ranks:
        others = [caused[o] for o in ranks if o != r]
        excess = caused[r] - median(others)
        if excess < STRAGGLER_MIN_FRACTION * step_ms:
            continue
        deltas = {}
        for cause, col in _CAUSE_COLUMNS:
            other_vals = [per_rank[o].get(col, 0.0) for o in ranks if o != r]
            deltas[cause] = (
                per_rank[r].get(col, 0.0) - median(other_vals),
                col,
                median(other_vals),
            )
        if not has_gpu:
            # Without a GPU, "compute" is host work.
            deltas["host"] = max(deltas["host"], deltas.pop("gpu_compute"), key=lambda d: d[0])
        cause, (delta, col, others_median) = max(deltas.items(), key=lambda kv: kv[1][0])
        if delta < 0.25 * excess:
            cause = "communication"
        parts = []
        if cause != "communication":
            parts.append(
                f"{_LABEL[col]} {per_rank[r][col]:.1f} ms/step vs {others_median:.1f} ms"
                f" median of the other ranks (+{delta:.1f} ms)"
            )
        else:
            parts.append(
                "no compute, data-loading or host excess explains it: its collectives start late"
                " or run slowly"
            )
        for other_cause, (d, c, med) in deltas.items():
            if other_cause != cause and d >= 0.1 * excess and d > 0.5:
                parts.append(
                    f"also {_LABEL[c]} {per_rank[r][c]:.1f} ms/step vs {med:.1f} ms (+{d:.1f} ms)"
                )
        parts.append(f"arrives last at {last_counts.get(r, 0)} of {n_inst} collectives")
        parts.append(f"the other ranks wait {caused[r]:.1f} ms/step for it")
        out.append(
            {
                "rank": r,
                "cause": cause,
                "severity": severity(excess, step_ms),
                "excess_ms_per_step": round(excess, 3),
                "caused_wait_ms_per_step": round(caused[r], 3),
                # how much more of its cause this rank has than the others' median
                "cause_excess_ms_per_step": round(delta, 3) if cause != "communication" else None,
                "last_arrivals": last_counts.get(r, 0),
                "evidence": "; ".join(parts),
            }
        )
    out.sort(key=lambda s: -float(s["excess_ms_per_step"]))
    return out, caused
