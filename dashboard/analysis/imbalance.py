"""Load imbalance across ranks and the stragglers that cause it.

``imbalance(per_rank, last_arrival)`` takes per-rank means (``RankBreakdown``,
ms/step) and gives an ``Imbalance``: per metric, max/mean, the coefficient of
variation and the rank with the maximum (``MetricSpread``).

``find_stragglers(matched, ranks, coverage, windows, n_steps, has_gpu)`` returns the
``Straggler``s of ``diagnosis.diagnose`` (persistent or intermittent, with
cause, confidence and what-if saving; the decision rule is documented there),
worst first, the wait each rank causes (``caused_wait_ms``: the time the
other ranks spend waiting in instances where it arrived last, merged per
waiting rank, averaged over the other ranks, per step) and the ``Diagnosis``.

``last_arrival_summary(matched, caused, step_ms)`` -> ``LastArrival`` or None.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.comms import last_arrivals, waited_ns_by
from rankscope.dashboard.analysis.diagnosis import (
    Coverage,
    Diagnosis,
    Verdict,
    diagnose,
)
from rankscope.dashboard.analysis.results import (
    Imbalance,
    LastArrival,
    MetricSpread,
    RankBreakdown,
    RotatingLateness,
    Straggler,
)
from rankscope.dashboard.analysis.wholerun import WholeRun
from rankscope.dashboard.ingest.table import Table, isin

NS_PER_MS = 1e6

IMBALANCE_METRICS = (
    "step_ms",
    "compute_ms",
    "data_ms",
    "host_ms",
    "comm_ms",
    "comm_wait_ms",
    "idle_ms",
)


def median(values: list[float]) -> float:
    """The median of a few numbers (np.median imports numpy.ma, ~25 ms of start-up)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        return float("nan")
    mid = n // 2
    return float(s[mid]) if n % 2 else (float(s[mid - 1]) + float(s[mid])) / 2.0


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
    per_rank: dict[int, RankBreakdown],
    last_arrival: LastArrival | None = None,
    joint_saving_ms_per_step: float | None = None,
    rotating: RotatingLateness | None = None,
    noise_ms: float | None = None,
) -> Imbalance:
    metrics = {}
    for metric in IMBALANCE_METRICS:
        spread = metric_spread(per_rank, metric)
        if spread is not None:
            metrics[metric] = spread
    return Imbalance(
        ranks=len(per_rank),
        metrics=metrics,
        last_arrival=last_arrival,
        joint_saving_ms_per_step=joint_saving_ms_per_step,
        rotating=rotating,
        noise_ms=noise_ms,
    )


def caused_wait_ms(matched: Table, ranks: list[int], n_steps: int) -> dict[int, float]:
    """Per rank, the mean wait per other rank per step it caused by arriving last."""
    if len(ranks) < 2:
        return dict.fromkeys(ranks, 0.0)
    total = dict.fromkeys(ranks, 0)
    if len(matched):
        # One merged wait per (waiting rank, rank waited for), all pairs in one pass.
        waiter, last = matched["rank"], matched["last_rank"]
        listed = np.asarray(sorted(ranks), dtype=np.int64)
        pair = isin(waiter, listed) & isin(last, listed) & (waiter != last)
        n = int(max(waiter.max(), last.max(), listed.max())) + 1
        groups, waited = waited_ns_by(matched.filter(pair), (last * n + waiter)[pair])
        for r, ns in zip((groups // n).tolist(), waited.tolist(), strict=True):
            total[r] += ns
    return {r: total[r] / NS_PER_MS / (len(ranks) - 1) / max(n_steps, 1) for r in ranks}


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


def _evidence(v: Verdict, last_count: int, of: int, caused: float, unit: str) -> str:
    parts = []
    if v.pattern == "intermittent":
        parts.append(wording.evidence_stalls([(st.step, st.lag_ms) for st in v.steps]))
    else:
        parts.append(wording.evidence_persistent(v.excess_ms_per_step, v.excess_ci_ms))
    parts.append(wording.evidence_breakdown(v.cause_breakdown, v.cause_detail))
    parts.append(wording.evidence_last_arrivals(last_count, of, unit))
    parts.append(wording.evidence_caused_wait(caused))
    return "; ".join(p for p in parts if p)


def to_straggler(
    v: Verdict, caused_ms: float, last_count: int, of: int, unit: str = "collectives"
) -> Straggler:
    """A diagnosis verdict as the report's ``Straggler``, with its evidence in words."""
    return Straggler(
        rank=v.rank,
        cause=v.cause,
        severity=v.severity,
        excess_ms_per_step=v.excess_ms_per_step,
        caused_wait_ms_per_step=round(caused_ms, 3),
        cause_excess_ms_per_step=v.cause_breakdown.get(v.cause),
        last_arrivals=last_count,
        evidence=_evidence(v, last_count, of, caused_ms, unit),
        pattern=v.pattern,
        cause_detail=v.cause_detail,
        cause_breakdown=v.cause_breakdown,
        confidence=v.confidence,
        p_value=v.p_value,
        excess_ci_ms=None if v.excess_ci_ms is None else list(v.excess_ci_ms),
        steps=v.steps,
        est_saving_ms_per_step=v.est_saving_ms_per_step,
        hint=v.hint,
        onset_step=v.onset_step,
        end_step=v.end_step,
        onset_s=v.onset_s,
        end_s=v.end_s,
        period_steps=v.period_steps,
        shared_contention=v.shared_contention,
        hidden_by_queue_ms=v.hidden_by_queue_ms,
    )


def find_stragglers(
    matched: Table,
    ranks: list[int],
    coverage: Mapping[int, Coverage],
    windows: dict[int, dict[int, tuple[int, int]]],
    n_steps: int,
    has_gpu: bool,
) -> tuple[list[Straggler], dict[int, float], Diagnosis]:
    """The stragglers (``diagnosis.diagnose``), worst first, and the wait each rank causes.

    ``coverage``: per rank, what it was doing (``digest.coverage_of``, or
    ``diagnosis.Components``); ``has_gpu``: whether any rank has GPU events.
    """
    caused = caused_wait_ms(matched, ranks, n_steps)
    diag = diagnose(matched, ranks, coverage, windows, has_gpu)
    last_counts = last_arrivals(matched)
    n_inst = sum(last_counts.values())
    out = [
        to_straggler(v, caused.get(v.rank, 0.0), last_counts.get(v.rank, 0), n_inst)
        for v in diag.stragglers
    ]
    return out, caused, diag


def whole_run_stragglers(whole: WholeRun) -> list[Straggler]:
    """The light layer's stragglers: what the others waited is the straggler's excess."""
    return [
        to_straggler(v, v.excess_ms_per_step, v.late_steps, whole.n_steps, "steps")
        for v in whole.diagnosis.stragglers
    ]
