"""Who holds the others back, when, and why: the diagnosis, built per collective instance.

Input: the matched collectives (``comms.match_collectives``: one row per
(instance, rank) with ``start_ns``, ``dur_ms``, ``transfer_ms``, ``wait_ms``,
``step``) and, per rank, what it was doing (``Components``: disjoint interval
sets for data loading, other communication, GPU compute and traced host
operators; the rest of its time is *untraced*). Output: ``Diagnosis``.

The evidence is each rank's **gap** before each collective instance: the time
from the end of its previous collective to the start of this one, on its own
clock (so clock skew never enters). A collective ends when its last rank
arrives plus the transfer, so the rank with the longest gap arrives last and
everyone else waits for it. Per step, ``excess[r, s]`` is rank r's gap time in
step s minus the median of the other ranks'.

Decision rule (thresholds are the module constants):

- **persistent** straggler: its excess is positive at two steps in three or
  more, *and* the 90% bootstrap interval over steps of its mean excess lies
  above ``max(5% of the median step, 5 ms)``. Noise makes each rank late now
  and then, and a rank a little late every step is within the spread between
  ranks; only a consistent, material excess passes both. ``p_value`` is the
  bootstrap share of resampled means under that threshold; ``confidence`` is
  high with 5+ steps and p <= 0.01, medium with p <= 0.05, else low.
- **intermittent** straggler: not persistent, but late by a large margin at a
  few steps (at most half): a *stall* is an excess of at least a whole step
  without stalls, 8 robust standard deviations of all excesses and 50 ms. It
  lists those steps and the lag at each.
- **rotating** (a run-level finding, no straggler): stalls at 3+ steps, at
  least two on each of 2+ ranks, no rank holding 75% of them, while waiting is
  >= 20% of the step. (A straggler's stalls beside one stray hiccup elsewhere
  stay intermittent stragglers.)

When a rank is late (by the persistent threshold) **every Nth step** (N = 2..8,
by step number, 4+ times, with a clear contrast to its other steps) it is an
intermittent straggler with ``period_steps`` N; periodic ranks on 2+ ranks are
a rotation candidate instead. When its lateness **starts or stops** inside the
steps (a stretch of 8+ steps that passes the persistent test alone, edges at the
mean shift, 3+ quiet steps outside, 3 standard errors of contrast) it is a
persistent straggler with ``onset_step``/``end_step``, its excess measured over
that stretch. Order: period, then onset, then persistent, then stalls.

Each straggler's cause is read from what *its* gaps held beyond the other ranks'
at its late steps (``cause_breakdown``, ms per step by component):
``data_loading``, ``gpu_compute``, ``cpu_compute`` (operators on a CPU-only
run), ``host`` (host operators beside a GPU; ``cause_detail`` "untraced" when
the excess is time with no traced op at all: Python outside torch ops, sleeps,
I/O, GC), ``communication`` (only on positive evidence: its other collectives),
else ``unknown``. The top component must hold half of the excess.

A straggler whose cause is ``host_contention`` (light layer: its thread waited
for a CPU) keeps its name but is severity low unless that contention is its own
(the others queue less than half as much) and holds at half the steps or more:
a busy host deschedules some rank now and then, which is no code straggler.

Savings are a **what-if replay** of the collective dependencies: with the gaps
of the ranks fixed cut to the median of the others', each instance ends at its
last arrival plus the transfer, so the run shortens by ``sum_i max_r gap -
sum_i max_r gap'``. Several stragglers are fixed together (``joint_saving``),
never summed; each straggler's own ``est_saving_ms_per_step`` is its Shapley
share of that joint saving (the average of what fixing it adds over every
order of fixing), so the shares add up to the joint figure. Severity is that
same saving as a share of the step: high from 20%, medium from 10%.

No ``np.median``/``np.quantile`` here: they import numpy.ma (~25 ms of start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from math import factorial
from typing import Protocol

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.results import (
    Cause,
    CauseDetail,
    Confidence,
    Pattern,
    RotatingLateness,
    Severity,
    StepRank,
    StepStall,
)
from rankscope.dashboard.ingest.table import Table, distinct, isin

NS_PER_MS = 1e6
MIN_FRACTION = 0.05  # a persistent straggler's excess: at least 5% of the step ...
MIN_MS = 5.0  # ... and at least 5 ms (systematic scheduling noise on a busy host stays under it)
MIN_LATE_SHARE = 2 / 3  # ... late (positive excess) at two steps in three or more
SPIKE_FRACTION = 1.0  # a stall: at least as long as a step without stalls ...
SPIKE_SIGMAS = 8.0  # ... and 8 robust standard deviations of all excesses ...
SPIKE_MIN_MS = 50.0  # ... and 50 ms (scheduler hiccups on a busy host stay under it)
# Recurring bursts: at least BURST_MIN_RUNS runs of BURST_MIN_RUN or more consecutive
# steps, each late by the persistent threshold and BURST_SIGMAS robust standard
# deviations (a rank that checkpoints, evaluates or collects garbage for a few steps
# now and then: too short for a stall, not one phase of a period, not most steps).
BURST_MIN_RUN = 3
BURST_MIN_RUNS = 2
BURST_SIGMAS = 6.0
ROTATING_MIN_SPIKES = 3
ROTATING_MIN_REPEATS = 2  # stalls per rank, on 2+ ranks: one stray hiccup is not a pattern
ROTATING_MAX_SHARE = 0.75
ROTATING_MIN_WAIT_FRACTION = 0.20
HIGH_FRACTION = 0.20
MEDIUM_FRACTION = 0.10
CAUSE_MIN_SHARE = 0.5
BOOTSTRAP_SAMPLES = 2000
MIN_STEPS_FOR_PERSISTENT = 3
HIGH_CONFIDENCE_STEPS = 5
SHAPLEY_MAX = 6  # exact shares up to 6 stragglers (64 replays)
ONSET_MIN_STEPS = 8  # a pattern that starts (or stops) inside the run lasts 8+ steps ...
ONSET_MIN_OUTSIDE = 3  # ... and leaves 3+ steps outside it to compare with
ONSET_CLIP = 4.0  # edges are searched on the excess clipped at 4 thresholds
# ... outside it the rank is not late (median under the threshold), or late by under a
# quarter of its lateness inside (seen: 3 ranks on 2 cores, rank 1 ~5 ms late before a
# busy loop shared its CPU from step 15, ~46 ms after: that is where it starts)
ONSET_OUTSIDE_SHARE = 0.25
ONSET_NOISE_SIGMAS = 3.0  # ... and its mean beats the outside's by 3 standard errors
PERIOD_MAX = 8  # periods looked for: every 2nd .. every 8th step
PERIOD_MIN_REPEATS = 4  # a period is seen 4+ times ...
PERIOD_HIT_SHARE = 0.8  # ... late by the persistent threshold at 80% of its phase's steps ...
PERIOD_SIGMAS = 4.0  # ... by more than the threshold and 4 robust sigmas of the other steps
# ... or, with more repeats, 6 standard errors of the difference of the two medians (the
# phase's and the other steps'): 10 repeats on a loaded host (sigma 4.6 ms) are a period
# at 18 ms, under 4 sigmas; 4 repeats still need ~4 sigmas
PERIOD_STANDARD_ERRORS = 6.0
SHARED_CONTENTION = 0.5  # the others' run-queue wait is half the rank's or more: the host's load
CONTENTION_MIN_SHARE = 0.5  # contention over less than half the steps: the host's noise

COMPONENTS = ("data_loading", "communication", "gpu_compute", "ops", "untraced")
UNTRACED_HINT = (
    "time with no traced op: Python outside torch ops, sleeps, I/O, logging or GC;"
    " profile with with_stack=True or sample the rank with py-spy to see it"
)


@dataclass(frozen=True)
class Components:
    """One rank's activity as disjoint merged interval sets (ns, its own clock)."""

    data_loading: iv.Intervals
    communication: iv.Intervals
    gpu_compute: iv.Intervals
    ops: iv.Intervals  # traced host operators not in the sets above

    @staticmethod
    def build(
        data: iv.Intervals, comm: iv.Intervals, gpu_compute: iv.Intervals, host_ops: iv.Intervals
    ) -> Components:
        """Make the sets disjoint, in priority order data > comm > GPU compute > host ops."""
        comm_only = iv.subtract(comm, data)
        taken = iv.combine(data, comm_only)
        gpu_only = iv.subtract(gpu_compute, taken)
        taken = iv.combine(taken, gpu_only)
        return Components(data, comm_only, gpu_only, iv.subtract(host_ops, taken))

    def covered(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """ns of component ``name`` inside each [lo, hi]."""
        u: iv.Intervals = getattr(self, name)
        return np.clip(coverage_upto(u, hi) - coverage_upto(u, lo), 0, None)


COMPONENT_NAMES = ("data_loading", "communication", "gpu_compute", "ops")


class Coverage(Protocol):
    """What the diagnosis reads of a rank's activity: ns of a component inside intervals
    (``Components``, or a rank digest's precomputed lookup)."""

    def covered(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Gaps:
    """Per rank and complete collective instance, the rank's own work before it.

    ``gap_ms[k, i]``: rank ``ranks[k]``, the i-th instance (of step ``step[i]``);
    ``lo_ns``/``hi_ns`` bound that gap on the rank's own clock. Instances are those
    every rank saw (and that have a previous collective on every rank), in launch order.
    """

    ranks: np.ndarray
    step: np.ndarray
    lo_ns: np.ndarray
    hi_ns: np.ndarray
    gap_ms: np.ndarray
    wait_ms: np.ndarray
    # the training thread's run-queue wait in each gap's step (light layer; None: unknown)
    queued_ms: np.ndarray | None = None


@dataclass
class Verdict:
    """One straggler: the evidence behind it, its cause and what fixing it would save."""

    rank: int
    pattern: Pattern
    cause: Cause
    cause_detail: CauseDetail | None
    cause_breakdown: dict[str, float]  # ms per step of excess, by cause
    confidence: Confidence
    p_value: float | None
    excess_ms_per_step: float
    excess_ci_ms: tuple[float, float] | None
    late_steps: int
    steps: list[StepStall]
    est_saving_ms_per_step: float = 0.0
    severity: Severity = "low"
    hint: str | None = None
    # when the pattern started and stopped inside the analysed steps (None: before / after them)
    onset_step: int | None = None
    end_step: int | None = None
    period_steps: int | None = None  # late every Nth step
    shared_contention: bool = False  # its run-queue wait is the host's load, not its own
    onset_s: float | None = None  # the same, in seconds from the first step (light layer)
    end_s: float | None = None
    # the other ranks' run-queue wait (ms a step) that hid its lateness (light layer)
    hidden_by_queue_ms: float | None = None


@dataclass
class Diagnosis:
    stragglers: list[Verdict]
    rotating: RotatingLateness | None
    joint_saving_ms_per_step: float
    per_step: list[StepRank]
    noise_ms: float  # robust standard deviation of the per-step excesses
    n_steps: int
    excess_ms: np.ndarray | None = None  # ranks x steps: own work beyond the others' median


# ---------------------------------------------------------------- small numerics


def _median_rows(a: np.ndarray) -> np.ndarray:
    """Median over axis 0 of a 2-D array, NaN-free (no numpy.ma)."""
    s = np.sort(a, axis=0)
    n = s.shape[0]
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def _median(v: np.ndarray) -> float:
    return float(_median_rows(np.asarray(v, dtype=np.float64).reshape(-1, 1))[0]) if len(v) else 0.0


def _median_of_others(x: np.ndarray) -> np.ndarray:
    """For each row r of x (ranks x columns), the median of the other rows."""
    n = x.shape[0]
    if n == 1:
        return np.zeros_like(x)
    if n > 16:  # one more value hardly moves a median of many: skip the O(n^2) work
        return np.broadcast_to(_median_rows(x), x.shape).copy()
    out = np.empty_like(x)
    for r in range(n):
        out[r] = _median_rows(np.delete(x, r, axis=0))
    return out


def _bootstrap_means(x: np.ndarray) -> np.ndarray:
    """Sorted means of ``BOOTSTRAP_SAMPLES`` resamples of ``x``; seeded, so reports repeat."""
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(x, size=(BOOTSTRAP_SAMPLES, len(x)), replace=True).mean(axis=1))


def _interval(means: np.ndarray, level: float = 0.90) -> tuple[float, float]:
    """The percentile interval of sorted bootstrap means."""
    lo = means[int((1 - level) / 2 * (len(means) - 1))]
    hi = means[int((1 + level) / 2 * (len(means) - 1))]
    return float(lo), float(hi)


def _share_below(means: np.ndarray, threshold: float) -> float:
    """Share of bootstrap means below ``threshold`` (a one-sided p-value), at least 1/B."""
    return max(float((means < threshold).mean()), 1.0 / len(means))


def coverage_upto(u: iv.Intervals, t: np.ndarray) -> np.ndarray:
    """Length of merged set ``u`` in (-inf, t] for each t (vectorised, prefix sums)."""
    s, e = u
    t = np.asarray(t, dtype=np.int64)
    if len(s) == 0:
        return np.zeros(len(t), dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(e - s)])
    k = np.searchsorted(e, t, side="left")  # intervals [0, k) end at or before t
    part = np.zeros(len(t), dtype=np.int64)
    inside = k < len(s)
    kk = k[inside]
    part[inside] = np.clip(t[inside] - s[kk], 0, None)
    return cum[k] + part


# ---------------------------------------------------------------- evidence


def build_gaps(
    matched: Table,
    ranks: list[int],
    windows: dict[int, dict[int, tuple[int, int]]] | None = None,
) -> Gaps | None:
    """The gap matrix of the instances every rank saw; None with fewer than 2 ranks.

    A rank's first collective in the window has no previous one: its gap starts
    at the start of its step window (from ``windows``: rank -> step -> (start, end)).
    """
    if len(ranks) < 2 or not len(matched):
        return None
    rank_col = matched["rank"]
    inst_col = matched["instance"]
    start = matched["start_ns"]
    end = start + np.rint(matched["dur_ms"] * NS_PER_MS).astype(np.int64)
    # Each row's previous collective on the same rank (any instance, complete or not).
    order = np.lexsort((start, rank_col))
    prev_end = np.full(len(matched), np.iinfo(np.int64).min, dtype=np.int64)
    same = rank_col[order][1:] == rank_col[order][:-1]
    prev_end[order[1:][same]] = end[order][:-1][same]
    if windows:
        first = np.flatnonzero(prev_end == np.iinfo(np.int64).min)
        for j in first.tolist():
            w = windows.get(int(rank_col[j]), {}).get(int(matched["step"][j]))
            if w is not None and w[0] <= start[j]:
                prev_end[j] = w[0]

    ids = distinct(inst_col)
    n = len(ranks)
    pos_rank = {r: k for k, r in enumerate(ranks)}
    col_of = {int(i): j for j, i in enumerate(ids.tolist())}
    lo = np.full((n, len(ids)), np.iinfo(np.int64).min, dtype=np.int64)
    hi = np.zeros((n, len(ids)), dtype=np.int64)
    wait = np.zeros((n, len(ids)), dtype=np.float64)
    seen = np.zeros((n, len(ids)), dtype=bool)
    steps = np.zeros(len(ids), dtype=np.int64)
    rows = np.array([pos_rank.get(int(r), -1) for r in rank_col.tolist()], dtype=np.int64)
    cols = np.array([col_of[int(i)] for i in inst_col.tolist()], dtype=np.int64)
    ok = rows >= 0
    lo[rows[ok], cols[ok]] = prev_end[ok]
    hi[rows[ok], cols[ok]] = start[ok]
    wait[rows[ok], cols[ok]] = matched["wait_ms"][ok]
    seen[rows[ok], cols[ok]] = True
    steps[cols[ok]] = matched["step"][ok]
    complete = seen.all(axis=0) & (lo > np.iinfo(np.int64).min).all(axis=0)
    if not complete.any():
        return None
    lo, hi, wait = lo[:, complete], hi[:, complete], wait[:, complete]
    gap = np.clip((hi - lo) / NS_PER_MS, 0.0, None)  # overlapping collectives: no own work
    lo = np.minimum(lo, hi)
    return Gaps(
        ranks=np.asarray(ranks, dtype=np.int64),
        step=steps[complete],
        lo_ns=lo,
        hi_ns=hi,
        gap_ms=gap,
        wait_ms=wait,
    )


def component_ms(gaps: Gaps, components: Mapping[int, Coverage]) -> dict[str, np.ndarray]:
    """ms of each component inside each gap (ranks x instances); ``untraced`` is the rest."""
    shape = gaps.gap_ms.shape
    out = {c: np.zeros(shape) for c in COMPONENTS}
    for k, r in enumerate(gaps.ranks.tolist()):
        comp = components.get(int(r))
        lo, hi = gaps.lo_ns[k], gaps.hi_ns[k]
        traced = np.zeros(shape[1])
        if comp is not None:
            for name in COMPONENT_NAMES:
                ms = comp.covered(name, lo, hi) / NS_PER_MS
                out[name][k] = ms
                traced += ms
        out["untraced"][k] = np.clip(gaps.gap_ms[k] - traced, 0.0, None)
    return out


def what_if(gaps: Gaps, fixed: list[int], n_steps: int) -> float:
    """ms per step the run would save if ``fixed`` ranks' gaps were the others' median."""
    if not fixed or n_steps <= 0:
        return 0.0
    g = gaps.gap_ms
    mask = isin(gaps.ranks, np.asarray(fixed, dtype=gaps.ranks.dtype))
    if mask.all():
        return 0.0
    others = _median_rows(g[~mask])
    g2 = g.copy()
    g2[mask] = np.minimum(g[mask], others)
    return float((g.max(axis=0).sum() - g2.max(axis=0).sum()) / n_steps)


def shapley_savings(gaps: Gaps, ranks: list[int], n_steps: int) -> tuple[dict[int, float], float]:
    """Each rank's share of the joint what-if saving, and the joint saving itself.

    A rank's share is the average of what fixing it adds over every order of
    fixing them (its Shapley value): shares add up to the joint saving, the
    worst straggler gets the largest, and a second straggler hidden behind
    the first still gets its part. Beyond ``SHAPLEY_MAX`` ranks, each one's
    increment in order of its own saving.
    """
    if not ranks:
        return {}, 0.0
    cache: dict[frozenset[int], float] = {}

    def value(subset: frozenset[int]) -> float:
        if subset not in cache:
            cache[subset] = what_if(gaps, sorted(subset), n_steps)
        return cache[subset]

    joint = value(frozenset(ranks))
    k = len(ranks)
    shares = dict.fromkeys(ranks, 0.0)
    if k > SHAPLEY_MAX:
        before = 0.0
        fixed: set[int] = set()
        for r in sorted(ranks, key=lambda r: -value(frozenset([r]))):
            fixed.add(r)
            after = value(frozenset(fixed))
            shares[r] = max(after - before, 0.0)
            before = after
        return shares, joint
    for r in ranks:
        rest = [o for o in ranks if o != r]
        for size in range(len(rest) + 1):
            weight = factorial(size) * factorial(k - size - 1) / factorial(k)
            for subset in combinations(rest, size):
                s = frozenset(subset)
                shares[r] += weight * (value(s | {r}) - value(s))
    return {r: max(v, 0.0) for r, v in shares.items()}, joint


def uniform_what_if(gaps: Gaps, n_steps: int) -> float:
    """ms per step saved if every rank's work before each collective were the median rank's."""
    if n_steps <= 0:
        return 0.0
    g = gaps.gap_ms
    return float((g.max(axis=0) - _median_rows(g)).sum() / n_steps)


def severity(saving_ms: float, step_ms: float) -> Severity:
    frac = saving_ms / step_ms if step_ms > 0 else 0.0
    if frac >= HIGH_FRACTION:
        return "high"
    if frac >= MEDIUM_FRACTION:
        return "medium"
    return "low"


# ---------------------------------------------------------------- the diagnosis


def _per_step(gaps: Gaps, values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Sum ``values`` (ranks x instances) per step: ranks x len(steps)."""
    col = np.searchsorted(steps, gaps.step)
    out = np.zeros((values.shape[0], len(steps)))
    for k in range(values.shape[0]):
        out[k] = np.bincount(col, weights=values[k], minlength=len(steps))
    return out


_REPORTED: dict[str, Cause] = {
    "data_loading": "data_loading",
    "communication": "communication",
    "gpu_compute": "gpu_compute",
    "untraced": "host",
    # evidence without a trace (the light layer): throttled GPU, or nothing to tell
    "hardware": "hardware",
    # runnable but not running (run-queue wait): another process or CPU throttling
    "host_contention": "host_contention",
    "other": "unknown",
}


def _cause(
    breakdown: dict[str, float], has_gpu: bool
) -> tuple[Cause, CauseDetail | None, dict[str, float]]:
    """The cause whose component holds at least half of the positive excess.

    ``breakdown`` is ms per step by component; the result's breakdown is by cause
    name (host operators and untraced time both read ``host``).
    """
    pos = {c: max(ms, 0.0) for c, ms in breakdown.items()}
    total = sum(pos.values())
    by_cause: dict[str, float] = {}
    for comp, ms in pos.items():
        name = _REPORTED.get(comp) or ("host" if has_gpu else "cpu_compute")
        if ms > 0:
            by_cause[name] = round(by_cause.get(name, 0.0) + ms, 3)
    if total <= 0:
        return "unknown", None, by_cause
    top = max(pos, key=lambda c: pos[c])
    if pos[top] < CAUSE_MIN_SHARE * total:
        return "unknown", None, by_cause
    if top == "untraced":
        return "host", "untraced", by_cause
    return _REPORTED.get(top) or ("host" if has_gpu else "cpu_compute"), None, by_cause


def _verdict(
    rank: int,
    pattern: Pattern,
    sel: np.ndarray,
    k: int,
    comp_excess: dict[str, np.ndarray],
    n_steps: int,
    has_gpu: bool,
    **evidence: object,
) -> Verdict:
    breakdown = {c: float(v[k][sel].sum()) / n_steps for c, v in comp_excess.items()}
    cause, detail, by_cause = _cause(breakdown, has_gpu)
    return Verdict(
        rank=rank,
        pattern=pattern,
        cause=cause,
        cause_detail=detail,
        cause_breakdown=by_cause,
        hint=UNTRACED_HINT if detail == "untraced" else None,
        **evidence,  # type: ignore[arg-type]
    )


def _persistent(e: np.ndarray, threshold: float) -> tuple[float, tuple[float, float], str] | None:
    """The persistent test on one rank's excess per step: (p-value, 90% interval, confidence).

    Late at two steps in three or more, and the bootstrap interval of its mean
    excess above ``threshold``; None when it fails.
    """
    n = len(e)
    if n < MIN_STEPS_FOR_PERSISTENT or int((e > 0).sum()) < MIN_LATE_SHARE * n:
        return None
    means = _bootstrap_means(e)
    lo, hi = _interval(means, 0.90)
    if lo < threshold:
        return None
    # One-sided bootstrap p-value of "its mean excess is below the threshold".
    p = _share_below(means, threshold)
    confidence = (
        "high" if n >= HIGH_CONFIDENCE_STEPS and p <= 0.01 else "medium" if p <= 0.05 else "low"
    )
    return p, (lo, hi), confidence


def _robust_sigma(v: np.ndarray) -> float:
    return 1.4826 * _median(np.abs(v - _median(v))) if len(v) else 0.0


def _segment(e: np.ndarray, threshold: float) -> tuple[int, int]:
    """The run of steps [a, b) where ``e - threshold / 2`` adds up to the most.

    Steps late by more than half the threshold add to it, others take away: the
    stretch where a rank is clearly late, however long (maximum subarray, via
    prefix sums).
    """
    prefix = np.concatenate([[0.0], np.cumsum(e - threshold / 2)])
    low_so_far = np.minimum.accumulate(prefix)
    b = int(np.argmax(prefix - low_so_far))
    a = int(np.flatnonzero(prefix[: b + 1] == low_so_far[b])[-1])
    return a, b


def _split(x: np.ndarray) -> int:
    """The t in 1..len-1 where the means of x[:t] and x[t:] differ most (the CUSUM change
    point: t (n - t) / n times the squared difference)."""
    n = len(x)
    if n < 2:
        return 0
    t = np.arange(1, n)
    prefix = np.cumsum(x)[:-1]
    diff = (x.sum() - prefix) / (n - t) - prefix / t
    return int(t[np.argmax(t * (n - t) / n * diff**2)])


def _onset(e: np.ndarray, threshold: float) -> tuple[int, int] | None:
    """Where a rank's lateness starts and stops inside the steps: [a, b), or None.

    The stretch of ``_segment`` counts when it is a part of the run, 8+ steps
    long, passes the persistent test on its own, leaves 3+ steps before its
    start (or after its end) where the rank was not late (median excess under
    the threshold, or under a quarter of the stretch's mean excess), and its mean
    excess beats that outside by the threshold and by 3 standard errors of that
    difference (robust sigmas over root counts).
    """
    n = len(e)
    # Where, not how much: a few huge excesses (a stall, a burst of load) must not place
    # the edges, so both searches read the excess clipped at +-4 thresholds.
    clipped = np.clip(e, -ONSET_CLIP * threshold, ONSET_CLIP * threshold)
    a, b = _segment(clipped, threshold)
    # Its edges where the mean shifts most (a low threshold lets noise stretch the stretch).
    if a > 0:
        a = _split(clipped[:b])
    if b < n:
        b = a + _split(clipped[a:])
    if b - a < ONSET_MIN_STEPS or (a < ONSET_MIN_OUTSIDE and n - b < ONSET_MIN_OUTSIDE):
        return None
    a = a if a >= ONSET_MIN_OUTSIDE else 0  # a few steps before it say nothing of a start
    b = b if n - b >= ONSET_MIN_OUTSIDE else n
    inside = e[a:b]
    outside = np.concatenate([e[:a], e[b:]])
    before = _median(outside)
    if _persistent(inside, threshold) is None:
        return None
    if before >= threshold and before > ONSET_OUTSIDE_SHARE * float(inside.mean()):
        return None  # late outside too, by more than a small part of it: no start or end
    contrast = float(inside.mean()) - _median(outside)
    spread = np.hypot(
        _robust_sigma(outside) / len(outside) ** 0.5, _robust_sigma(inside) / len(inside) ** 0.5
    )
    if contrast < max(threshold, ONSET_NOISE_SIGMAS * spread):
        return None
    return a, b


def _period(e: np.ndarray, steps: np.ndarray, threshold: float) -> tuple[int, np.ndarray] | None:
    """The shortest period (every Nth step, by step number) at which a rank is late.

    A phase ``step % N == f`` counts when the rank is late by ``threshold`` at 80%
    of its steps (4 or more), its median excess beats the other steps' by the
    threshold and by 4 robust sigmas of theirs or 6 standard errors of the two
    medians' difference (whichever is less: many repeats make a smaller contrast
    sure), and the phase passes the persistent test. Returns N and the steps of
    that phase.
    """
    hit = e >= threshold
    for period in range(2, PERIOD_MAX + 1):
        if len(e) < PERIOD_MIN_REPEATS * period:
            break
        phase = steps % period
        for f in range(period):
            at = phase == f
            if int(at.sum()) < PERIOD_MIN_REPEATS or at.all():
                continue
            rest = e[~at]
            contrast = _median(e[at]) - _median(rest)
            if (
                float(hit[at].mean()) >= PERIOD_HIT_SHARE
                and contrast >= max(threshold, _period_noise(e[at], rest))
                and _persistent(e[at], threshold) is not None
            ):
                return period, at
    return None


def _period_noise(phase: np.ndarray, rest: np.ndarray) -> float:
    """The contrast a phase must pass: 4 robust sigmas of the other steps, or 6 standard
    errors of the difference of the medians (1.2533 sigma / root n each), the less."""
    sigmas = PERIOD_SIGMAS * _robust_sigma(rest)
    se = 1.2533 * float(
        np.hypot(_robust_sigma(phase) / len(phase) ** 0.5, _robust_sigma(rest) / len(rest) ** 0.5)
    )
    return min(sigmas, PERIOD_STANDARD_ERRORS * se)


def _span(at: np.ndarray, e: np.ndarray, threshold: float) -> tuple[int, int] | None:
    """The first and last late step of a periodic pattern, [a, b), when it is a part of the run."""
    late = np.flatnonzero(at & (e >= threshold))
    a, b = int(late[0]), int(late[-1]) + 1
    before = np.flatnonzero(at[:a])
    after = np.flatnonzero(at[b:])
    if len(before) < 2 and len(after) < 2:  # phase steps it missed at the edges: noise
        return None
    return (a if len(before) >= 2 else 0), (b if len(after) >= 2 else len(e))


def _bursts(e: np.ndarray, level: float) -> np.ndarray | None:
    """The steps of a rank's recurring bursts of lateness (``BURST_*``), or None.

    Late (``e >= level``) in at least ``BURST_MIN_RUNS`` runs of ``BURST_MIN_RUN`` or
    more consecutive steps; at most half the steps; and late outside those runs at no
    more than half as many steps as inside them (stray spikes are not bursts).
    """
    late = e >= level
    edges = np.flatnonzero(np.diff(np.concatenate(([0], late.astype(np.int8), [0]))))
    starts, ends = edges[0::2], edges[1::2]
    long = (ends - starts) >= BURST_MIN_RUN
    if int(long.sum()) < BURST_MIN_RUNS:
        return None
    sel = np.zeros(len(e), dtype=bool)
    for a, b in zip(starts[long].tolist(), ends[long].tolist(), strict=True):
        sel[a:b] = True
    inside = int(sel.sum())
    if inside > len(e) // 2 or int((late & ~sel).sum()) > inside // 2:
        return None
    return sel


def _stalls(steps: np.ndarray, e: np.ndarray, at: np.ndarray) -> list[StepStall]:
    """A rank's late steps ``at`` (a mask over ``steps``), each with its excess in ms."""
    return [StepStall(int(steps[j]), round(float(e[j]), 3)) for j in np.flatnonzero(at)]


def _stall_period(stall_steps: list[int]) -> int | None:
    """N when 3+ stalls come exactly every N steps."""
    if len(stall_steps) < 3:
        return None
    d = np.diff(np.asarray(sorted(stall_steps)))
    return int(d[0]) if d[0] > 1 and bool((d == d[0]).all()) else None


def _bounds(steps: np.ndarray, seg: tuple[int, int] | None) -> dict[str, int | None]:
    """``onset_step``/``end_step`` of a segment [a, b) of ``steps`` (None: at the edge)."""
    if seg is None:
        return {}
    a, b = seg
    return {
        "onset_step": int(steps[a]) if a > 0 else None,
        "end_step": int(steps[b - 1]) if b < len(steps) else None,
    }


def diagnose(
    matched: Table,
    ranks: list[int],
    components: Mapping[int, Coverage],
    windows: dict[int, dict[int, tuple[int, int]]],
    has_gpu: bool,
) -> Diagnosis:
    """The diagnosis of a trace window: gaps from the matched collectives, components
    from each rank's traced activity."""
    gaps = build_gaps(matched, ranks, windows)
    if gaps is None:
        return Diagnosis([], None, 0.0, [], 0.0, 0)
    steps = distinct(gaps.step)
    step_ms = np.array([_step_length_ms(windows, int(s)) for s in steps])
    return decide(gaps, component_ms(gaps, components), step_ms, has_gpu)


def decide(
    gaps: Gaps,
    comps: dict[str, np.ndarray],
    step_ms: np.ndarray,
    has_gpu: bool,
    step_rows: bool = True,
) -> Diagnosis:
    """The decision rule over any evidence: persistent and intermittent stragglers,
    rotating lateness, savings and per-step rows.

    ``comps`` maps component names (``COMPONENTS``, or ``other`` and ``hardware``
    for evidence without a trace) to ranks x instances ms inside each gap;
    ``step_ms`` is the length of each distinct step of ``gaps.step`` (NaN: unknown).
    ``step_rows=False`` leaves out the per (rank, step) rows (long runs keep
    ``excess_ms`` instead).
    """
    ranks = [int(r) for r in gaps.ranks.tolist()]
    steps = distinct(gaps.step)
    n_steps = len(steps)
    finite = step_ms[np.isfinite(step_ms)]
    median_step = _median(finite) if len(finite) else _median(gaps.gap_ms.max(axis=0))

    gs = _per_step(gaps, gaps.gap_ms, steps)
    excess = gs - _median_of_others(gs)
    noise = 1.4826 * _median(np.abs(excess - _median(excess.ravel())).ravel())
    comp_excess = {c: _per_step(gaps, v - _median_of_others(v), steps) for c, v in comps.items()}

    persistent_min = max(MIN_FRACTION * median_step, MIN_MS)
    # A step without its stall: the step minus the largest excess in it.
    base_step = (
        _median(
            np.clip(step_ms - np.clip(excess, 0, None).max(axis=0), 0, None)[np.isfinite(step_ms)]
        )
        if len(finite)
        else median_step
    )
    spike_min = max(SPIKE_FRACTION * base_step, SPIKE_SIGMAS * noise, SPIKE_MIN_MS)
    latest = gs.argmax(axis=0)

    verdicts: list[Verdict] = []
    selected: dict[int, np.ndarray] = {}  # rank -> the steps its verdict is about
    periodic_verdicts: list[Verdict] = []
    spikes: dict[int, list[StepStall]] = {}
    everything = np.ones(n_steps, dtype=bool)
    for k, r in enumerate(ranks):
        e = excess[k]
        periodic = _period(e, steps, persistent_min)
        if periodic is not None:
            period, at = periodic
            sel = at & (e >= persistent_min)
            test = _persistent(e[at], persistent_min)
            assert test is not None
            periodic_verdicts.append(
                _verdict(
                    r,
                    "intermittent",
                    sel,
                    k,
                    comp_excess,
                    n_steps,
                    has_gpu,
                    confidence=test[2],
                    p_value=round(test[0], 4),
                    excess_ms_per_step=round(float(e[sel].sum()) / n_steps, 3),
                    excess_ci_ms=None,
                    late_steps=int(sel.sum()),
                    steps=_stalls(steps, e, sel),
                    period_steps=period,
                    **_bounds(steps, _span(at, e, persistent_min)),
                )
            )
            selected[r] = sel
            continue
        seg = _onset(e, persistent_min)
        if seg is not None:  # late from some step on (or until some step), not outside it
            a, b = seg
            test = _persistent(e[a:b], persistent_min)
            assert test is not None
            p, ci, confidence = test
            sel = np.zeros(n_steps, dtype=bool)
            sel[a:b] = True
            verdicts.append(
                _verdict(
                    r,
                    "persistent",
                    sel,
                    k,
                    comp_excess,
                    b - a,
                    has_gpu,
                    confidence=confidence,
                    p_value=round(p, 4),
                    # while the pattern holds (the saving below is over every step)
                    excess_ms_per_step=round(float(e[a:b].mean()), 3),
                    excess_ci_ms=(round(ci[0], 3), round(ci[1], 3)),
                    late_steps=int((latest[a:b] == k).sum()),
                    steps=[],
                    **_bounds(steps, seg),
                )
            )
            selected[r] = sel
            continue
        test = _persistent(e, persistent_min)
        if test is not None:
            p, ci, confidence = test
            verdicts.append(
                _verdict(
                    r,
                    "persistent",
                    everything,
                    k,
                    comp_excess,
                    n_steps,
                    has_gpu,
                    confidence=confidence,
                    p_value=round(p, 4),
                    excess_ms_per_step=round(float(e.mean()), 3),
                    excess_ci_ms=(round(ci[0], 3), round(ci[1], 3)),
                    late_steps=int((latest == k).sum()),
                    steps=[],
                )
            )
            selected[r] = everything
            continue
        burst = _bursts(e, max(persistent_min, BURST_SIGMAS * noise))
        if burst is not None:
            # Like a period: on two ranks or more, lateness that moves (a rotation
            # candidate below), on one a straggler late at those steps.
            periodic_verdicts.append(
                _verdict(
                    r,
                    "intermittent",
                    burst,
                    k,
                    comp_excess,
                    n_steps,
                    has_gpu,
                    confidence="high" if float(e[burst].min()) >= 2 * persistent_min else "medium",
                    p_value=None,
                    excess_ms_per_step=round(float(e[burst].sum()) / n_steps, 3),
                    excess_ci_ms=None,
                    late_steps=int(burst.sum()),
                    steps=_stalls(steps, e, burst),
                )
            )
            selected[r] = burst
            continue
        hit = e >= spike_min
        if 0 < int(hit.sum()) <= max(1, n_steps // 2):
            spikes[r] = _stalls(steps, e, hit)
    if len(periodic_verdicts) >= 2:
        # Several ranks late at their own phase: lateness that moves between ranks,
        # a rotation candidate, not one straggler per rank.
        for v in periodic_verdicts:
            spikes[v.rank] = v.steps
    all_spikes = sum(len(v) for v in spikes.values())
    wait_fraction = (
        float(gaps.wait_ms.sum(axis=1).mean()) / n_steps / median_step if median_step > 0 else 0.0
    )
    rotating: RotatingLateness | None = None
    if (
        not verdicts
        and sum(len(v) >= ROTATING_MIN_REPEATS for v in spikes.values()) >= 2
        and all_spikes >= ROTATING_MIN_SPIKES
        and max(len(v) for v in spikes.values()) <= ROTATING_MAX_SHARE * all_spikes
        and wait_fraction >= ROTATING_MIN_WAIT_FRACTION
    ):
        entries = sorted((st.step, r, st.lag_ms) for r, v in spikes.items() for st in v)
        rotating = RotatingLateness(
            counts={r: len(v) for r, v in sorted(spikes.items())},
            steps=[StepStall(step, lag) for step, _, lag in entries],
            ranks_by_step=[r for _, r, _ in entries],
            wait_fraction=round(wait_fraction, 3),
            est_saving_ms_per_step=round(uniform_what_if(gaps, n_steps), 3),
        )
    else:
        if len(periodic_verdicts) >= 2:
            for v in periodic_verdicts:
                del spikes[v.rank]
        verdicts += periodic_verdicts
        for r, stalls in sorted(spikes.items()):
            k = ranks.index(r)
            sel = isin(steps, np.array([s.step for s in stalls], dtype=steps.dtype))
            smallest = min(s.lag_ms for s in stalls)
            selected[r] = sel
            verdicts.append(
                _verdict(
                    r,
                    "intermittent",
                    sel,
                    k,
                    comp_excess,
                    n_steps,
                    has_gpu,
                    period_steps=_stall_period([st.step for st in stalls]),
                    confidence="high" if smallest >= 2 * spike_min else "medium",
                    p_value=None,
                    excess_ms_per_step=round(float(excess[k][sel].sum()) / n_steps, 3),
                    excess_ci_ms=None,
                    late_steps=len(stalls),
                    steps=stalls,
                )
            )

    shares, joint = shapley_savings(gaps, [v.rank for v in verdicts], n_steps)
    queued = comps.get("host_contention")
    queued_ps = _per_step(gaps, queued, steps) if queued is not None else None
    raw_ps = _per_step(gaps, gaps.queued_ms, steps) if gaps.queued_ms is not None else None
    for v in verdicts:
        v.est_saving_ms_per_step = round(shares[v.rank], 3)
        v.severity = severity(v.est_saving_ms_per_step, median_step)
        if raw_ps is not None and v.cause in ("unknown", "host_contention"):
            # Late while the other ranks queued for a CPU about as long: the whole host
            # was descheduling (another job, a burst of load), not this rank's code.
            k = ranks.index(v.rank)
            sel = selected[v.rank]
            own_q = float(raw_ps[k][sel].mean())
            others_q = float(_median_rows(np.delete(raw_ps, k, axis=0)[:, sel]).mean())
            late = float(excess[k][sel].mean())
            if own_q >= CAUSE_MIN_SHARE * late and others_q >= SHARED_CONTENTION * own_q:
                v.cause, v.cause_detail, v.hint = "host_contention", None, None
                v.shared_contention = True
                v.severity = "low"
                continue
        if v.cause == "host_contention" and queued_ps is not None:
            k = ranks.index(v.rank)
            sel = selected[v.rank]
            own = float(queued_ps[k][sel].mean())
            others = float(_median_rows(np.delete(queued_ps, k, axis=0)[:, sel]).mean())
            v.shared_contention = others >= SHARED_CONTENTION * own
            if v.shared_contention or float(sel.mean()) < CONTENTION_MIN_SHARE:
                # Descheduled beside ranks that are too, or for a stretch, not most of the
                # run: the host's load, not this rank's code; named, but no alarm.
                v.severity = "low"
    verdicts.sort(key=lambda v: (-v.est_saving_ms_per_step, v.rank))

    return Diagnosis(
        stragglers=verdicts,
        rotating=rotating,
        joint_saving_ms_per_step=round(joint, 3),
        per_step=_step_rows(gaps, steps, step_ms, excess) if step_rows else [],
        noise_ms=round(noise, 3),
        n_steps=n_steps,
        excess_ms=excess,
    )


def _step_length_ms(windows: dict[int, dict[int, tuple[int, int]]], step: int) -> float:
    """The median over ranks of the step's window length (NaN when no rank has it)."""
    lengths = [(w[step][1] - w[step][0]) / NS_PER_MS for w in windows.values() if step in w]
    return _median(np.asarray(lengths)) if lengths else float("nan")


def _step_rows(
    gaps: Gaps, steps: np.ndarray, step_ms: np.ndarray, excess: np.ndarray
) -> list[StepRank]:
    """Per rank and step: step time, excess, the wait it caused, its lag at the last collective."""
    n = len(gaps.ranks)
    wait = gaps.wait_ms
    last = wait.argmin(axis=0)  # the last to arrive waited least
    others_mean = (wait.sum(axis=0) - wait.min(axis=0)) / max(n - 1, 1)
    caused = np.zeros(wait.shape)
    caused[last, np.arange(wait.shape[1])] = others_mean
    caused_ps = _per_step(gaps, caused, steps)
    lag = wait.max(axis=0) - wait  # behind the first to arrive
    col = np.searchsorted(steps, gaps.step)
    last_inst = np.full(len(steps), -1)
    for i, c in enumerate(col.tolist()):
        last_inst[c] = i  # instances are in launch order: the last one wins
    rows = []
    for k, r in enumerate(gaps.ranks.tolist()):
        for j, s in enumerate(steps.tolist()):
            i = last_inst[j]
            rows.append(
                StepRank(
                    rank=int(r),
                    step=int(s),
                    step_ms=round(float(step_ms[j]), 3)
                    if np.isfinite(step_ms[j])
                    else float("nan"),
                    excess_ms=round(float(excess[k, j]), 3),
                    caused_wait_ms=round(float(caused_ps[k, j]), 3),
                    lag_ms=round(float(lag[k, i]), 3) if i >= 0 else 0.0,
                )
            )
    return rows
