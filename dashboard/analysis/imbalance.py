"""Load imbalance across ranks and the stragglers that cause it.

``imbalance(per_rank, last_arrival)`` takes per-rank means (``RankBreakdown``,
ms/step) and gives an ``Imbalance``: per metric, max/mean, the coefficient of
variation and the rank with the maximum (``MetricSpread``).

``find_stragglers(matched, per_rank, n_steps, step_ms, has_gpu)`` returns
``Straggler``s, worst first, and the wait each rank causes: the time the other
ranks spend waiting in collective instances where it arrived last (merged per
waiting rank, so overlapping collectives are not counted twice), averaged over
the other ranks, per step. A rank is a straggler when that exceeds the median
of the other ranks' caused wait by at least ``STRAGGLER_MIN_FRACTION`` (5%) of
the step time; severity is high from 20% of the step time, medium from 10%,
low below. Its cause is the component (data loading, host-only time, compute)
by which it exceeds the other ranks' median the most, or ``communication`` when
none explains at least a quarter of the excess (a slow link or an earlier
collective).

``last_arrival_summary(matched, caused, step_ms)`` -> ``LastArrival`` or None.
"""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.comms import last_arrivals, wait_intervals
from rankscope.dashboard.analysis.results import (
    Imbalance,
    LastArrival,
    MetricSpread,
    RankBreakdown,
    Straggler,
)
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


def metric_spread(per_rank: dict[int, RankBreakdown], metric: str) -> MetricSpread | None:
    """One metric across ranks; None when no rank measured it."""
    ranks = sorted(per_rank)
    vals = np.array([per_rank[r].value(metric) for r in ranks], dtype=np.float64)
    ok = ~np.isnan(vals)
    if not ok.any():
        return None
    v = vals[ok]
    mean = float(v.mean())
    return MetricSpread(
        mean=round(mean, 3),
        max=round(float(v.max()), 3),
        min=round(float(v.min()), 3),
        max_over_mean=round(float(v.max()) / mean, 3) if mean > 0 else None,
        cv=round(float(v.std()) / mean, 3) if mean > 0 else None,
        max_rank=int(np.array(ranks)[ok][int(v.argmax())]),
    )


def imbalance(
    per_rank: dict[int, RankBreakdown], last_arrival: LastArrival | None = None
) -> Imbalance:
    metrics = {}
    for metric in IMBALANCE_METRICS:
        spread = metric_spread(per_rank, metric)
        if spread is not None:
            metrics[metric] = spread
    return Imbalance(ranks=len(per_rank), metrics=metrics, last_arrival=last_arrival)


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
) -> LastArrival | None:
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
    return LastArrival(
        rank=rank,
        count=counts[rank],
        of=sum(counts.values()),
        excess_ms_per_step=round(excess, 3),
        excess_pct_of_step=round(100.0 * excess / step_ms, 2) if step_ms > 0 else None,
    )


# cause -> (this rank's excess over the others' median, its column, that median)
CauseDeltas = dict[str, tuple[float, str, float]]


def cause_deltas(per_rank: dict[int, RankBreakdown], rank: int, has_gpu: bool) -> CauseDeltas:
    """How much more of each candidate cause ``rank`` has than the other ranks' median."""
    ranks = sorted(per_rank)
    deltas: CauseDeltas = {}
    for cause, col in _CAUSE_COLUMNS:
        others_median = median([per_rank[o].value(col) for o in ranks if o != rank])
        deltas[cause] = (per_rank[rank].value(col) - others_median, col, others_median)
    if not has_gpu:
        # Without a GPU, "compute" is host work.
        deltas["host"] = max(deltas["host"], deltas.pop("gpu_compute"), key=lambda d: d[0])
    return deltas


def _evidence(
    per_rank: dict[int, RankBreakdown],
    rank: int,
    cause: str,
    deltas: CauseDeltas,
    excess: float,
    last_count: int,
    n_inst: int,
    caused: float,
) -> str:
    parts = []
    if cause != "communication":
        delta, col, others_median = deltas[cause]
        parts.append(wording.evidence_excess(col, per_rank[rank].value(col), others_median, delta))
    else:
        parts.append(wording.EVIDENCE_COMMUNICATION)
    for other_cause, (d, c, med) in deltas.items():
        if other_cause != cause and d >= 0.1 * excess and d > 0.5:
            parts.append(wording.evidence_also(c, per_rank[rank].value(c), med, d))
    parts.append(wording.evidence_last_arrivals(last_count, n_inst))
    parts.append(wording.evidence_caused_wait(caused))
    return "; ".join(parts)


def find_stragglers(
    matched: Table,
    per_rank: dict[int, RankBreakdown],
    n_steps: int,
    step_ms: float,
    has_gpu: bool,
) -> tuple[list[Straggler], dict[int, float]]:
    ranks = sorted(per_rank)
    caused = caused_wait_ms(matched, ranks, n_steps)
    if len(ranks) < 2 or step_ms <= 0 or not len(matched):
        return [], caused
    last_counts = last_arrivals(matched)
    n_inst = sum(last_counts.values())

    out: list[Straggler] = []
    for r in ranks:
        excess = caused[r] - median([caused[o] for o in ranks if o != r])
        if excess < STRAGGLER_MIN_FRACTION * step_ms:
            continue
        deltas = cause_deltas(per_rank, r, has_gpu)
        cause, (delta, _col, _median) = max(deltas.items(), key=lambda kv: kv[1][0])
        if delta < 0.25 * excess:
            cause = "communication"
        out.append(
            Straggler(
                rank=r,
                cause=cause,
                severity=severity(excess, step_ms),
                excess_ms_per_step=round(excess, 3),
                caused_wait_ms_per_step=round(caused[r], 3),
                cause_excess_ms_per_step=round(delta, 3) if cause != "communication" else None,
                last_arrivals=last_counts.get(r, 0),
                evidence=_evidence(
                    per_rank, r, cause, deltas, excess, last_counts.get(r, 0), n_inst, caused[r]
                ),
            )
        )
    out.sort(key=lambda s: -s.excess_ms_per_step)
    return out, caused
