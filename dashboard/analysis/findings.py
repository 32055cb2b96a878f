"""Findings: plain-language statements, each with evidence and an estimated saving.

``findings(facts)`` runs every rule in ``RULES`` over one ``RunFacts`` (the
per-rank means, the stragglers, GPU utilisation, the mean step time) and
returns ``Finding``s in one order (``finding_order``, named to users by
``wording.FINDINGS_ORDER``): a missing trace first (it qualifies every other
number), then by severity (high, medium, low), then by the step time they would
save, largest first, so a [high] never follows a [low]. A rule is a function
``RunFacts -> list[Finding]`` (zero or more); its wording lives in ``wording``.
Severity follows the saving as a share of the step: high from 20%, medium from
10%, low below (a straggler's is its diagnosis' severity, a low-GPU finding's its
busy share). Savings are estimates of what the *step* would gain, not sums over
ranks, so they can be compared with each other. Memory findings (``memory``'s
rules) save no step time: their severity is how near they bring a rank to running
out (near the limit: high from ``MEMORY_HIGH_PCT``; imbalance: medium on a GPU
``MEMORY_TIGHT_PCT`` reserved or more, else low; growth: medium).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.diagnosis import MIN_MS, severity
from rankscope.dashboard.analysis.imbalance import median
from rankscope.dashboard.analysis.memory import MemoryResult
from rankscope.dashboard.analysis.pipeline import Pipeline
from rankscope.dashboard.analysis.results import (
    CollectiveSummary,
    Finding,
    FindingKind,
    GpuUtilisation,
    RankBreakdown,
    RotatingLateness,
    Severity,
    Straggler,
)

MIN_SHARE = 0.05  # findings that would save less than 5% of the step are not worth a line
# The slowest link a transfer is taken to run at (10 GbE is ~1.25 GB/s): exposed time
# beyond what the bytes need at this rate is not transfer (a rank not running, a busy host).
FLOOR_GBPS = 1.0
LOW_GPU_BUSY_PCT = 50.0
COMPUTE_IMBALANCE_RATIO = 1.2
MEMORY_HIGH_PCT = 95.0
MEMORY_TIGHT_PCT = 75.0


@dataclass(frozen=True)
class RunFacts:
    """What the rules read: the analysis results, never the raw traces."""

    per_rank: dict[int, RankBreakdown]
    stragglers: list[Straggler]
    utilisation: dict[int, GpuUtilisation]
    has_gpu: bool
    step_ms: float
    rotating: RotatingLateness | None = None
    # ranks with no trace beside traced ones (``per_rank`` holds only the traced):
    # rank -> its mean step time from the step timer (NaN without one)
    missing_trace: dict[int, float] = field(default_factory=dict)
    whole_run_ranks: list[int] = field(default_factory=list)  # ranks the light layer covers
    collectives: list[CollectiveSummary] = field(default_factory=list)  # sizes and counts
    n_steps: int = 0  # analysed steps (``collectives`` counts instances over them)
    # rank -> its training thread's run-queue wait, ms per step over the analysed steps
    # (light layer; empty without it): time it was ready but not scheduled
    queued_ms: dict[int, float] = field(default_factory=dict)
    pipelines: list[Pipeline] = field(default_factory=list)  # analysis.pipeline
    memory: MemoryResult | None = None  # analysis.memory

    @property
    def ranks(self) -> list[int]:
        return sorted(self.per_rank)

    @property
    def non_stragglers(self) -> list[int]:
        """The ranks that are no straggler (every rank when all are)."""
        slow = {s.rank for s in self.stragglers}
        return [r for r in self.ranks if r not in slow] or self.ranks

    def mean_over_ranks(self, column: str) -> float:
        """Mean over ranks of one breakdown column, ranks without it left out."""
        finite = [v for v in (self.per_rank[r].value(column) for r in self.ranks) if v == v]
        return float(np.mean(finite)) if finite else float("nan")


Rule = Callable[[RunFacts], list[Finding]]


def finding(
    kind: FindingKind, text: tuple[str, str], ranks: list[int], saving: float, step_ms: float
) -> Finding:
    title, detail = text
    return Finding(
        kind=kind,
        severity=severity(saving, step_ms),
        title=title,
        detail=detail,
        ranks=ranks,
        est_saving_ms_per_step=round(saving, 2),
    )


def straggler_rule(f: RunFacts) -> list[Finding]:
    """Each straggler: its saving is its share of the what-if, its severity the straggler's."""
    n_others = len(f.ranks) - 1
    out = []
    for s in f.stragglers:
        title, detail = wording.straggler_finding(
            s.rank,
            s.cause,
            n_others,
            s.caused_wait_ms_per_step,
            s.evidence,
            s.pattern,
            s.cause_detail,
            s.hint,
        )
        out.append(
            Finding(
                kind="straggler",
                severity=s.severity,  # the same number as the saving, so they never disagree
                title=title,
                detail=detail,
                ranks=[s.rank],
                est_saving_ms_per_step=round(s.est_saving_ms_per_step, 2),
            )
        )
    return out


def missing_trace_rule(f: RunFacts) -> list[Finding]:
    """Ranks that left step timings but no trace: the picture is incomplete.

    Saves nothing by itself; it comes first because every other number was measured
    without those ranks (their waiting may hide inside the traced ranks' transfer time).
    """
    if not f.missing_trace:
        return []
    traced_step = [v for r in f.ranks if (v := f.per_rank[r].step_ms) == v]
    title, detail = wording.missing_trace_finding(
        f.missing_trace,
        f.ranks,
        float(np.mean(traced_step)) if traced_step else None,
        f.mean_over_ranks("comm_wait_ms") if len(f.ranks) > 1 else float("nan"),
        [r for r in f.missing_trace if r in f.whole_run_ranks],
    )
    return [
        Finding(
            kind="missing_trace",
            severity="high",
            title=title,
            detail=detail,
            ranks=sorted(f.missing_trace),
            est_saving_ms_per_step=0.0,
        )
    ]


def rotating_rule(f: RunFacts) -> list[Finding]:
    """Lateness that moves between ranks: no straggler, yet a large share of waiting."""
    rot = f.rotating
    if rot is None:
        return []
    entries = [(st.step, r, st.lag_ms) for st, r in zip(rot.steps, rot.ranks_by_step, strict=True)]
    text = wording.rotating_finding(rot.counts, entries, 100 * rot.wait_fraction)
    return [finding("rotating", text, sorted(rot.counts), rot.est_saving_ms_per_step, f.step_ms)]


def plausible_transfer_ms(f: RunFacts) -> float | None:
    """ms per step the collectives' bytes need at ``FLOOR_GBPS`` (None: sizes unknown).

    A ring all-reduce sends and receives ~2(n-1)/n of the message per rank; every
    collective is counted so (an upper bound for the others), point-to-point once.
    """
    if f.n_steps <= 0 or not f.collectives:
        return None
    n = max(len(f.ranks), 2)
    total = 0.0
    for c in f.collectives:
        if c.bytes is None:
            return None
        factor = 1.0 if c.name in ("send", "recv", "isend", "irecv") else 2 * (n - 1) / n
        total += factor * c.bytes * c.count / f.n_steps
    return total / (FLOOR_GBPS * 1e9) * 1e3


def exposed_communication_rule(f: RunFacts) -> list[Finding]:
    """Communication that nothing hides, beyond the waiting a straggler already explains.

    Only on positive evidence that the exposed time is transfer: the bytes moved
    must need that long at ``FLOOR_GBPS``; the saving is capped there, so time a
    collective spent stretched by a rank that was not running is never called
    transfer.
    """
    exposed = f.mean_over_ranks("comm_exposed_ms")
    transfer = exposed - f.mean_over_ranks("comm_wait_ms")
    if not transfer >= MIN_SHARE * f.step_ms:
        return []
    plausible = plausible_transfer_ms(f)
    if plausible is None:
        return []
    transfer = min(transfer, plausible)
    if not transfer >= MIN_SHARE * f.step_ms:
        return []
    text = wording.exposed_communication_finding(
        exposed, f.mean_over_ranks("comm_ms"), transfer, len(f.ranks) > 1, sorted(f.missing_trace)
    )
    return [finding("exposed_communication", text, f.ranks, transfer, f.step_ms)]


def data_loading_rule(f: RunFacts) -> list[Finding]:
    """Data loading every rank pays (a straggler's own share is its straggler finding):
    the typical rank's (median) must pass the floor, so one rank's wait, unnamed as a
    straggler in a short window, is not called every rank's."""
    others = f.non_stragglers
    waits = [f.per_rank[r].data_exposed_ms for r in others]
    exposed = float(np.mean(waits))
    if not (exposed >= MIN_SHARE * f.step_ms and median(waits) >= MIN_SHARE * f.step_ms):
        return []
    text = wording.data_loading_finding(exposed, f.mean_over_ranks("data_ms"))
    return [finding("data_loading", text, others, exposed, f.step_ms)]


def host_bound_rule(f: RunFacts) -> list[Finding]:
    """Host-only time on the ranks that are no straggler, when there is a GPU to starve."""
    others = f.non_stragglers
    host = float(np.mean([f.per_rank[r].host_ms for r in others]))
    if not (f.has_gpu and host >= MIN_SHARE * f.step_ms):
        return []
    return [finding("host_bound", wording.host_bound_finding(host), others, host, f.step_ms)]


def compute_imbalance_rule(f: RunFacts) -> list[Finding]:
    """Uneven compute: the slowest rank's extra compute is time everyone waits for."""
    if len(f.ranks) < 2:
        return []
    comp = {r: f.per_rank[r].compute_ms for r in f.ranks}
    med = median(list(comp.values()))
    worst = max(comp, key=lambda r: comp[r])
    if any(worst in p.ranks for p in f.pipelines):
        return []  # a pipeline's stages are compared with each other (pipeline_rule)
    extra = comp[worst] - med
    if worst in f.queued_ms:
        # Operators stretched while the thread waited for a CPU: the host's, not the work's.
        others = median([v for r, v in f.queued_ms.items() if r != worst])
        queued_extra = max(f.queued_ms[worst] - others, 0.0) if others == others else 0.0
        extra = max(extra - queued_extra, 0.0)
    # the straggler rule's floor: scheduling noise on a busy host stays under MIN_MS
    floor = max(MIN_SHARE * f.step_ms, MIN_MS)
    if not (med > 0 and extra >= floor and med + extra >= COMPUTE_IMBALANCE_RATIO * med):
        return []
    text = wording.compute_imbalance_finding(worst, comp[worst], med)
    return [finding("compute_imbalance", text, [worst], extra, f.step_ms)]


def pipeline_rule(f: RunFacts) -> list[Finding]:
    """Per pipeline: the bottleneck stage with its rebalancing saving, else a large bubble
    with what twice the micro-batches would save (the schedule's ideal at 2m)."""
    out = []
    for p in f.pipelines:
        shape, ideal = wording.pipeline_texts(
            p.ranks, p.micro_batches, p.ideal_bubble, p.order_source
        )
        if p.bottleneck_stage is not None and p.bottleneck_rank is not None:
            st = p.stages[p.bottleneck_stage]
            med = median([s.busy_ms for s in p.stages])
            text = wording.pipeline_bottleneck_finding(
                st.stage, st.rank, st.busy_ms, med, shape, p.bubble, ideal
            )
            out.append(
                finding("pipeline_bottleneck", text, [st.rank], p.saving_ms_per_step, f.step_ms)
            )
            continue
        if p.bubble < MIN_SHARE * 3:
            continue
        doubled, saving = None, 0.0
        if p.micro_batches and p.ideal_bubble is not None:
            n = len(p.ranks) - 1
            doubled = n / (2 * p.micro_batches + n)
            saving = max(p.ideal_bubble - doubled, 0.0) * p.step_ms
        text = wording.pipeline_bubble_finding(shape, p.bubble, ideal, doubled)
        out.append(finding("pipeline_bubble", text, list(p.ranks), saving, f.step_ms))
    return out


def low_gpu_utilisation_rule(f: RunFacts) -> list[Finding]:
    """GPUs idle most of the step. It saves nothing by itself: the other findings say where."""
    if not f.has_gpu:
        return []
    busy = [u.gpu_busy_pct for r in f.ranks if (u := f.utilisation[r]).gpu_busy_pct is not None]
    if not busy or float(np.mean(busy)) >= LOW_GPU_BUSY_PCT:
        return []
    mean_busy = float(np.mean(busy))
    idle_ms = f.step_ms * (1 - mean_busy / 100.0)
    title, detail = wording.low_gpu_utilisation_finding(mean_busy, idle_ms)
    return [
        Finding(
            kind="low_gpu_utilisation",
            severity="medium" if mean_busy >= 20 else "high",
            title=title,
            detail=detail,
            ranks=f.ranks,
            est_saving_ms_per_step=0.0,
        )
    ]


def _memory_finding(
    kind: FindingKind, severity: Severity, text: tuple[str, str], ranks: list[int]
) -> Finding:
    """A memory finding: it saves no step time, so its severity is given (module docstring)."""
    title, detail = text
    return Finding(kind, severity, title, detail, ranks, est_saving_ms_per_step=0.0)


def memory_rule(f: RunFacts) -> list[Finding]:
    """A GPU near its memory limit (one finding for all such ranks), each rank whose peak
    stands out from the others', each rank whose memory grows from step to step."""
    m = f.memory
    if m is None:
        return []
    out = []
    if m.near_limit:
        top = max(m.near_limit, key=lambda d: d.reserved_pct or 0.0)
        pct = top.reserved_pct or 0.0
        ranks = sorted({d.rank for d in m.near_limit})
        text = wording.memory_near_limit_finding(
            ranks, pct, top.peak_reserved_b or 0, top.capacity_b or 0, top.headroom_b or 0
        )
        severity: Severity = "high" if pct >= MEMORY_HIGH_PCT else "medium"
        out.append(_memory_finding("memory_near_limit", severity, text, ranks))
    for imb in m.imbalance:
        tight = imb.reserved_pct is not None and imb.reserved_pct >= MEMORY_TIGHT_PCT
        text = wording.memory_imbalance_finding(
            imb.rank,
            imb.device,
            imb.peak_allocated_b,
            imb.others_median_b,
            imb.ratio,
            imb.source,
            imb.reserved_pct,
        )
        out.append(
            _memory_finding("memory_imbalance", "medium" if tight else "low", text, [imb.rank])
        )
    for g in m.growth:
        text = wording.memory_growth_finding(
            g.rank,
            g.device,
            g.first_step,
            g.last_step,
            g.start_b,
            g.end_b,
            g.rising_steps,
            g.of_steps,
        )
        out.append(_memory_finding("memory_growth", "medium", text, [g.rank]))
    return out


RULES: tuple[Rule, ...] = (
    missing_trace_rule,
    straggler_rule,
    rotating_rule,
    exposed_communication_rule,
    data_loading_rule,
    host_bound_rule,
    compute_imbalance_rule,
    pipeline_rule,
    low_gpu_utilisation_rule,
    memory_rule,
)


SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


def finding_order(f: Finding) -> tuple[bool, int, float, str]:
    """The sort key of every findings list: missing trace, then severity, then saving."""
    # an incomplete picture first: it qualifies every finding below it
    return (
        f.kind != "missing_trace",
        SEVERITY_ORDER.get(f.severity, len(SEVERITY_ORDER)),
        -f.est_saving_ms_per_step,
        f.title,
    )


def findings(facts: RunFacts, rules: tuple[Rule, ...] = RULES) -> list[Finding]:
    """Every rule's findings, in ``finding_order``; none for a run without a step time."""
    if facts.step_ms <= 0:
        return []
    return sorted((f for rule in rules for f in rule(facts)), key=finding_order)
