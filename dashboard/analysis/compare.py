"""Compare two analysed runs (BASE, NEW): what got slower, on which rank, and why.

``compare_runs(base, new)`` takes two ``Analysis`` objects and returns a
``Comparison`` (``rankscope.compare/1``; ``json_schema()`` is
``docs/compare.schema.json``). Pure: nothing is read, printed or drawn here;
every sentence comes from ``compare_wording``.

The samples (``RankSamples``) are one row per analysed step of one rank, one
column per component, in ms:

- ``trace`` basis (both runs have a trace window): ``COMPONENTS`` from the
  step breakdown (``breakdown``): compute, communication (exposed, not
  waiting), waiting (for the last rank, at most the exposed communication),
  memcpy, data_loading (exposed), host, idle. They add up to the step.
- ``light`` basis (otherwise, from the collector's step timer over every
  step, warm-up and capture steps left out): data_loading (DataLoader wait)
  and untraced (the rest of the step). They add up to the step too.

Decomposition rule: per rank, the change of the mean step time is the sum of
the changes of the components' means (means are linear, the components of a
step add up to it, so the parts add up exactly); overall, the same over the
per-step means of the ranks both runs have.

Noise rule: a change is significant when the 90% bootstrap interval of the
difference of the means (``BOOTSTRAP`` resamples of the steps on each side,
fixed seed; a Welch normal interval past ``BOOTSTRAP_MAX_STEPS`` steps) leaves
out zero *and* it is at least ``NOISE_MS`` and ``NOISE_PCT`` % of BASE.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import msgspec
import numpy as np

from rankscope.dashboard.analysis import compare_wording as words
from rankscope.dashboard.analysis.analyse import parse_step_range
from rankscope.dashboard.analysis.wholerun import job_queue_ms, queue_by_step, queue_means

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis
    from rankscope.dashboard.analysis.report import Report

SchemaName = Literal["rankscope.compare/1"]
SCHEMA: SchemaName = "rankscope.compare/1"

Basis = Literal["trace", "light"]
Verdict = Literal["slower", "faster", "no_significant_change"]
Component = Literal[
    "compute", "communication", "waiting", "memcpy", "data_loading", "host", "idle", "untraced"
]
COMPONENTS: tuple[Component, ...] = get_args(Component)
TRACE_COMPONENTS: tuple[Component, ...] = COMPONENTS[:7]
LIGHT_COMPONENTS: tuple[Component, ...] = ("data_loading", "untraced")
# Where a slowdown can start: waiting, idle and untraced time are where another
# rank's slowdown lands, so they never name the origin.
ORIGIN_COMPONENTS: tuple[Component, ...] = (
    "compute",
    "communication",
    "memcpy",
    "data_loading",
    "host",
)
StragglerChangeKind = Literal["appeared", "gone", "changed", "same"]
MatchKind = Literal["matched", "added", "vanished"]
ConditionUnit = Literal["pct", "ms", "flag"]

NOISE_PCT = 5.0  # a change under 5% of BASE's step is no significant change
NOISE_MS = 1.0  # nor one under 1 ms
CONFIDENCE = 0.90
BOOTSTRAP = 1000
BOOTSTRAP_MAX_STEPS = 500
WARMUP_STEPS = 2  # light basis: the first steps (compilation, caches) are left out
ORIGIN_SHARE = 0.25  # an origin explains at least a quarter of the overall change
UNIFORM_RATIO = 1.25  # compute x1.25 (or /1.25) on every rank: the machine or all ranks' work
TOP = 10  # collectives and kernels listed, by the size of their change
CALLS_CHANGED = 0.10  # a kernel's calls per step moved by over 10%: the work changed


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """A comparison object: immutable, built by keyword, fields in JSON order."""


class Change(_Record, frozen=True):
    """One mean (ms per step) in BASE and NEW, its change and the change's 90% interval."""

    base_ms: float
    new_ms: float
    delta_ms: float
    delta_pct: float | None
    low_ms: float
    high_ms: float
    significant: bool


class ComponentChange(_Record, frozen=True):
    """One component of the step: its means, change and the change's 90% interval."""

    component: Component
    base_ms: float
    new_ms: float
    delta_ms: float
    low_ms: float
    high_ms: float


class RankComparison(_Record, frozen=True):
    rank: int
    base_steps: int
    new_steps: int
    step: Change
    components: list[ComponentChange]  # they add up to step.delta_ms


class Origin(_Record, frozen=True):
    """Where the change starts: the rank and component whose own work changed most."""

    rank: int
    component: Component
    delta_ms: float


class StragglerChange(_Record, frozen=True):
    rank: int
    kind: StragglerChangeKind
    base_cause: str | None
    base_pattern: str | None
    new_cause: str | None
    new_pattern: str | None
    sentence: str
    # the diagnosis' severity on each side ("low", "medium", "high"); None where not named
    base_severity: str | None = None
    new_severity: str | None = None


class CollectiveChange(_Record, frozen=True):
    """One collective (name, process group), per analysed step where counts are per run."""

    name: str
    pg: str
    kind: MatchKind
    base_count: int
    new_count: int
    base_bytes: int | None
    new_bytes: int | None
    base_transfer_ms: float
    new_transfer_ms: float
    base_wait_ms: float
    new_wait_ms: float
    delta_ms: float  # change of transfer + wait


class KernelChange(_Record, frozen=True):
    """One kernel or operator matched by name: ms and calls per step and rank."""

    name: str
    kind: MatchKind
    base_ms: float
    new_ms: float
    delta_ms: float
    base_calls: float = 0.0  # calls per step and rank (0 where the run has none)
    new_calls: float = 0.0


class Scope(_Record, frozen=True):
    """What the two runs share, and what they do not."""

    base_world_size: int
    new_world_size: int
    shared_ranks: list[int]
    base_only_ranks: list[int]
    new_only_ranks: list[int]
    base_steps: int  # analysed steps (per rank, the most)
    new_steps: int
    notes: list[str]


class Condition(_Record, frozen=True):
    """One ``--fail-if`` condition and whether it holds beyond noise."""

    text: str
    metric: str
    unit: ConditionUnit
    threshold: float
    value: float | None  # the change, in the condition's unit
    holds: bool
    sentence: str


class MachineChange(_Record, frozen=True):
    """The machine's part of a step change, from the step timer: how much longer (or
    shorter) a training thread waited for a CPU (run queue), and whether the job's own
    CPU time moved. ``discounted``: the change less that wait is no significant change,
    with the same CPU time, so the verdict is no significant change (docs/compare.md)."""

    rank: int  # the rank whose run-queue wait moved most the way the step did
    base_runq_ms: float  # its mean wait for a CPU a step
    new_runq_ms: float
    runq_delta_ms: float
    cpu_delta_ms: float  # the training threads' CPU time a step, change (mean over ranks)
    net_delta_ms: float  # the step change less the machine's part (at most all of it)
    discounted: bool
    # the job's wait for a CPU a step (at each step, the longest wait of any rank),
    # change: the machine's part where it moved more than runq_delta_ms
    job_runq_delta_ms: float | None = None


class Comparison(_Record, frozen=True, kw_only=True):
    schema: SchemaName = SCHEMA
    base: str
    new: str
    basis: Basis
    verdict: Verdict
    headline: str
    step: Change
    components: list[ComponentChange]  # overall; they add up to step.delta_ms
    origin: Origin | None
    sentences: list[str]  # the verdict's evidence, most important first
    ranks: list[RankComparison]
    stragglers: list[StragglerChange]
    collectives: list[CollectiveChange]
    kernels: list[KernelChange]
    scope: Scope
    conditions: list[Condition]
    regressed: bool  # some condition holds
    # NEW / BASE compute where compute moved by ``UNIFORM_RATIO`` or more the same way on
    # every shared rank (the machine, or heavier work everywhere); None otherwise
    uniform_compute_ratio: float | None = None
    # the training threads' wait for a CPU, where both runs' step timers recorded it
    machine: MachineChange | None = None


# ---------------------------------------------------------------- samples


@dataclass(frozen=True)
class RankSamples:
    """One rank's analysed steps: ``values[i, j]`` is component ``components[j]`` in step
    ``steps[i]`` (ms); the components of a step add up to its step time."""

    rank: int
    steps: np.ndarray
    components: tuple[Component, ...]
    values: np.ndarray

    @property
    def step_ms(self) -> np.ndarray:
        return np.asarray(self.values.sum(axis=1))


def trace_samples(breakdown: Mapping[str, np.ndarray]) -> dict[int, RankSamples]:
    """Per rank, the step breakdown's rows as ``TRACE_COMPONENTS`` (see module doc)."""
    if not len(breakdown["rank"]):
        return {}
    exposed = np.nan_to_num(breakdown["comm_exposed_ms"])
    waiting = np.clip(np.minimum(np.nan_to_num(breakdown["comm_wait_ms"]), exposed), 0, None)
    cols = {
        "compute": breakdown["compute_ms"],
        "communication": exposed - waiting,
        "waiting": waiting,
        "memcpy": breakdown["memcpy_ms"],
        "data_loading": breakdown["data_exposed_ms"],
        "host": breakdown["host_ms"],
    }
    parts = np.column_stack([np.nan_to_num(np.asarray(cols[c], float)) for c in cols])
    # idle closes the step, so that the parts add up to it exactly
    idle = np.asarray(breakdown["step_ms"], float) - parts.sum(axis=1)
    values = np.column_stack([parts, idle])
    out = {}
    for rank in np.unique(breakdown["rank"]):
        m = breakdown["rank"] == rank
        out[int(rank)] = RankSamples(
            int(rank), np.asarray(breakdown["step"][m]), TRACE_COMPONENTS, values[m]
        )
    return out


def light_samples(
    marks: Mapping[int, Mapping[str, np.ndarray]],
    lo: int | None = None,
    hi: int | None = None,
) -> dict[int, RankSamples]:
    """Per rank, the step timer's steps as ``LIGHT_COMPONENTS``: warm-up, capture and
    unfinished steps left out, only steps in [lo, hi]."""
    out = {}
    for rank, m in sorted(marks.items()):
        if not len(m.get("step", ())) or "start_ns" not in m or "end_ns" not in m:
            continue
        step = np.asarray(m["step"], np.int64)
        dur = (np.asarray(m["end_ns"], np.float64) - m["start_ns"]) / 1e6
        keep = dur > 0
        if "capture" in m:
            keep &= np.nan_to_num(np.asarray(m["capture"], float)) == 0
        if len(step) > 5 * WARMUP_STEPS:
            keep &= step >= np.sort(step)[WARMUP_STEPS]
        if lo is not None:
            keep &= step >= lo
        if hi is not None:
            keep &= step <= hi
        if not keep.any():
            continue
        data = np.asarray(m["data_ns"], np.float64) / 1e6 if "data_ns" in m else np.zeros(len(step))
        data = np.clip(np.where(data < 0, 0.0, data), 0, dur)
        values = np.column_stack([data[keep], dur[keep] - data[keep]])
        out[rank] = RankSamples(rank, step[keep], LIGHT_COMPONENTS, values)
    return out


def overall_samples(ranks: Sequence[RankSamples]) -> np.ndarray:
    """Per step number, the mean over ``ranks`` of each component (steps x components)."""
    steps = np.concatenate([r.steps for r in ranks])
    values = np.concatenate([r.values for r in ranks])
    uniq, inv = np.unique(steps, return_inverse=True)
    sums = np.zeros((len(uniq), values.shape[1]))
    np.add.at(sums, inv, values)
    counts = np.bincount(inv, minlength=len(uniq)).astype(float)
    return np.asarray(sums / counts[:, None])


# ---------------------------------------------------------------- the noise rule


def diff_interval(
    base: np.ndarray, new: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The 90% interval of mean(new) - mean(base) for each column (steps x columns)."""
    n, m = len(base), len(new)
    tail = (1 - CONFIDENCE) / 2
    if max(n, m) > BOOTSTRAP_MAX_STEPS or min(n, m) < 2:
        # Welch: the normal interval of a difference of means (ample steps; or too few
        # steps to resample, where a zero variance leaves the interval a point)
        se = np.sqrt(
            (base.var(axis=0, ddof=1) / n if n > 1 else 0.0)
            + (new.var(axis=0, ddof=1) / m if m > 1 else 0.0)
        )
        z = 1.6448536269514722  # the normal's 95th percentile
        d = new.mean(axis=0) - base.mean(axis=0)
        return d - z * se, d + z * se
    rng = np.random.default_rng(seed)
    bm = base[rng.integers(0, n, (BOOTSTRAP, n))].mean(axis=1)
    nm = new[rng.integers(0, m, (BOOTSTRAP, m))].mean(axis=1)
    diffs = nm - bm
    return np.quantile(diffs, tail, axis=0), np.quantile(diffs, 1 - tail, axis=0)


def is_significant(base_ms: float, delta_ms: float, low_ms: float, high_ms: float) -> bool:
    """The noise rule: the interval leaves out zero and the change is big enough to matter."""
    beyond = low_ms > 0 or high_ms < 0
    return beyond and abs(delta_ms) >= max(NOISE_MS, NOISE_PCT / 100 * abs(base_ms))


@dataclass(frozen=True)
class Decomposed:
    step: Change
    components: list[ComponentChange]


def _r(x: float) -> float:
    return round(float(x), 3)


def decompose(
    base: np.ndarray, new: np.ndarray, components: tuple[Component, ...], seed: int = 0
) -> Decomposed:
    """The change of the step and of each component (their columns) from BASE to NEW.

    Step time is the row sum; the component changes add up to the step's change.
    """
    b = np.column_stack([base, base.sum(axis=1)])
    n = np.column_stack([new, new.sum(axis=1)])
    lo, hi = diff_interval(b, n, seed)
    bmean, nmean = b.mean(axis=0), n.mean(axis=0)
    delta = nmean - bmean
    comps = [
        ComponentChange(
            component=c,
            base_ms=_r(bmean[j]),
            new_ms=_r(nmean[j]),
            delta_ms=_r(delta[j]),
            low_ms=_r(lo[j]),
            high_ms=_r(hi[j]),
        )
        for j, c in enumerate(components)
    ]
    base_ms, d = float(bmean[-1]), float(delta[-1])
    step = Change(
        base_ms=_r(base_ms),
        new_ms=_r(nmean[-1]),
        delta_ms=_r(d),
        delta_pct=_r(100 * d / base_ms) if base_ms > 0 else None,
        low_ms=_r(lo[-1]),
        high_ms=_r(hi[-1]),
        significant=is_significant(base_ms, d, float(lo[-1]), float(hi[-1])),
    )
    return Decomposed(step, comps)


def uniform_compute_ratio(ranks: Sequence[RankComparison], overall: Decomposed) -> float | None:
    """NEW / BASE compute overall, if every rank's compute changed that way by ``UNIFORM_RATIO``."""
    total = next((x for x in overall.components if x.component == "compute"), None)
    if total is None or abs(total.delta_ms) < NOISE_MS or total.low_ms <= 0 <= total.high_ms:
        return None  # compute hardly moved: nothing to say about it
    ratios = []
    for rc in [*ranks, None]:
        comps = overall.components if rc is None else rc.components
        c = next((x for x in comps if x.component == "compute"), None)
        if c is None or c.base_ms <= 0 or c.new_ms <= 0:
            return None
        ratios.append(c.new_ms / c.base_ms)
    if all(r >= UNIFORM_RATIO for r in ratios) or all(r <= 1 / UNIFORM_RATIO for r in ratios):
        return _r(ratios[-1])
    return None


def work_changes(kernels: Sequence[KernelChange]) -> list[KernelChange]:
    """The kernels (operators on CPU) whose calls a step changed, if they carry at least
    half of the listed kernels' change: the work itself changed, not only its speed.

    A kernel's calls changed where it was added or vanished, or its calls per step and
    rank moved by over ``CALLS_CHANGED`` (relative). Empty where the same kernels ran as
    often and only took longer or shorter (the machine, or larger inputs to them).
    """
    total = sum(abs(k.delta_ms) for k in kernels)
    changed = [
        k
        for k in kernels
        if k.kind != "matched"
        or abs(k.new_calls - k.base_calls) > CALLS_CHANGED * max(k.base_calls, 1e-9)
    ]
    if total <= 0 or sum(abs(k.delta_ms) for k in changed) < 0.5 * total:
        return []
    return sorted(changed, key=lambda k: -abs(k.delta_ms))


def origin_of(
    ranks: Sequence[RankComparison],
    slower: bool,
    overall_ms: float,
    named: Collection[int] = (),
) -> Origin | None:
    """The rank and own-work component (``ORIGIN_COMPONENTS``) where the change starts.

    The noise floor: a candidate's change has an interval that leaves out zero, and
    it stands out from the same component's change on the other ranks (their median)
    by at least ``ORIGIN_SHARE`` of the overall change and ``NOISE_MS``. A machine
    that got busier between the runs moves every rank's work alike: no origin.
    And the other ranks wait for it: their waiting (``untraced`` from the step timer)
    moved the same way by at least half of the candidate's change, as when ranks meet
    at every step's collectives; a few ms on one rank of a noisy machine does not
    pass. Of the candidates, the one that stands out most.

    ``idle`` (a trace's gaps: Python or I/O outside any traced op) is a rank's own
    work only on a rank in ``named`` (the diagnosis calls it a straggler in the slower
    run and not the same one in the other: its own confidence rules) and where the
    other ranks' waiting in collectives moved the same way by the floor and by at least
    half of that idle change: they wait for most of it. Otherwise idle is where
    another's slowdown lands (or a few ms of noise in a short step on a busy machine).
    """
    floor = max(NOISE_MS, ORIGIN_SHARE * abs(overall_ms))
    sign = 1.0 if slower else -1.0
    best: tuple[float, Origin] | None = None
    for rc in ranks:
        others_wait = _others_wait(ranks, rc.rank, sign)
        for cc in rc.components:
            if cc.component not in ORIGIN_COMPONENTS and not (
                cc.component == "idle" and rc.rank in named and others_wait is not None
            ):
                continue
            # the others wait for it (in a job whose ranks meet every step): most of a
            # rank's own change shows as the others' waiting; noise on one rank does not
            if others_wait is not None and others_wait < max(
                floor if cc.component == "idle" else 0.0, 0.5 * sign * cc.delta_ms
            ):
                continue
            d = sign * cc.delta_ms
            beyond = cc.low_ms > 0 if slower else cc.high_ms < 0
            others = [
                sign * x.delta_ms
                for o in ranks
                if o.rank != rc.rank
                for x in o.components
                if x.component == cc.component
            ]
            stands_out = d - (float(np.median(others)) if others else 0.0)
            if d < floor or not beyond or stands_out < floor:
                continue
            if best is None or stands_out > best[0]:
                best = (
                    stands_out,
                    Origin(rank=rc.rank, component=cc.component, delta_ms=cc.delta_ms),
                )
    return best[1] if best else None


def _others_wait(ranks: Sequence[RankComparison], rank: int, sign: float) -> float | None:
    """The median change (signed) of the time the ranks other than ``rank`` wait for
    others: ``waiting`` in a trace, ``untraced`` from the step timer (where the wait in
    collectives lies). None where there is no other rank."""
    waits = [
        sign * x.delta_ms
        for o in ranks
        if o.rank != rank
        for x in o.components
        if x.component in ("waiting", "untraced")
    ]
    if not any(o.rank != rank for o in ranks):
        return None
    return float(np.median(waits)) if waits else 0.0


# ---------------------------------------------------------------- the machine


def machine_change(
    base: Mapping[int, tuple[float, float]],
    new: Mapping[int, tuple[float, float]],
    step: Change,
    job_dq: float | None = None,
) -> MachineChange | None:
    """The machine's part of ``step`` (the overall change) from each shared rank's mean
    run-queue wait and CPU time a step (``queue_means``) on both sides.

    In a job whose ranks meet every step, the rank that waited longest for a CPU holds
    the others back, so the machine's part is the largest change of one rank's wait
    the way the step moved, or ``job_dq`` (the change of the job's wait a step:
    at each step the longest wait of any rank) where that moved further, since two
    ranks that queue at different steps each hold the others back in turn. It is
    discounted, and the verdict is no significant change,
    when the step change less it passes no noise rule (the interval shifted by it)
    and the training threads' CPU time did not move by the noise floor: the same work,
    on a busier (or quieter) machine.
    """
    ranks = sorted(set(base) & set(new))
    if not ranks:
        return None
    sign = 1.0 if step.delta_ms >= 0 else -1.0
    rank = max(ranks, key=lambda r: (sign * (new[r][0] - base[r][0]), -r))
    dq = new[rank][0] - base[rank][0]
    cpu = float(np.mean([new[r][1] - base[r][1] for r in ranks]))
    # the machine explains at most the whole change (a wait longer than the change
    # leaves nothing of it, not a change the other way)
    moved = max(sign * dq, sign * job_dq) if job_dq is not None else sign * dq
    part = sign * min(moved, sign * step.delta_ms)
    net = step.delta_ms - part
    same_work = abs(cpu) < max(NOISE_MS, NOISE_PCT / 100 * abs(step.base_ms))
    discounted = (
        step.significant
        and moved > 0
        and same_work
        and not is_significant(step.base_ms, net, step.low_ms - part, step.high_ms - part)
    )
    return MachineChange(
        rank=rank,
        base_runq_ms=_r(base[rank][0]),
        new_runq_ms=_r(new[rank][0]),
        runq_delta_ms=_r(dq),
        cpu_delta_ms=_r(cpu),
        net_delta_ms=_r(net),
        discounted=discounted,
        job_runq_delta_ms=_r(job_dq) if job_dq is not None else None,
    )


def _machine(
    sides: tuple[Side, Side], samples: tuple[dict[int, RankSamples], dict[int, RankSamples]],
    shared: Sequence[int], step: Change,
) -> MachineChange | None:  # fmt: skip
    means: list[dict[int, tuple[float, float]]] = []
    jobs: list[float | None] = []
    for side, got in zip(sides, samples, strict=True):
        out, by_step = {}, {}
        for r in shared:
            rd = side.analysis.run.ranks.get(r)
            marks = rd.step_marks.cols if rd is not None and len(rd.step_marks) else None
            m = queue_means(marks, got[r].steps)
            q = queue_by_step(marks, got[r].steps)
            if m is None or q is None:
                return None  # every shared rank on both sides, or no rule
            out[r], by_step[r] = m, q
        means.append(out)
        jobs.append(job_queue_ms(by_step))
    job_dq = jobs[1] - jobs[0] if jobs[0] is not None and jobs[1] is not None else None
    return machine_change(means[0], means[1], step, job_dq)


def _less(c: Change, ms: float) -> Change:
    """``c`` less ``ms`` (the machine's part): the change and its interval shifted."""
    return Change(
        base_ms=c.base_ms,
        new_ms=_r(c.new_ms - ms),
        delta_ms=_r(c.delta_ms - ms),
        delta_pct=_r(100 * (c.delta_ms - ms) / c.base_ms) if c.base_ms > 0 else None,
        low_ms=_r(c.low_ms - ms),
        high_ms=_r(c.high_ms - ms),
        significant=is_significant(c.base_ms, c.delta_ms - ms, c.low_ms - ms, c.high_ms - ms),
    )


# ---------------------------------------------------------------- matching by name


def straggler_changes(
    base: Report, new: Report, shared: Sequence[int] | None = None
) -> list[StragglerChange]:
    """Stragglers before and after, by rank (only ``shared`` ranks, where given)."""
    keep = set(shared) if shared is not None else None
    b = {s.rank: s for s in base.stragglers if keep is None or s.rank in keep}
    n = {s.rank: s for s in new.stragglers if keep is None or s.rank in keep}
    out = []
    for rank in sorted(set(b) | set(n)):
        sb, sn = b.get(rank), n.get(rank)
        kind: StragglerChangeKind
        if sb is None:
            kind = "appeared"
        elif sn is None:
            kind = "gone"
        elif (sb.cause, sb.pattern) != (sn.cause, sn.pattern):
            kind = "changed"
        else:
            kind = "same"
        out.append(
            StragglerChange(
                rank=rank,
                kind=kind,
                base_cause=sb.cause if sb else None,
                base_pattern=sb.pattern if sb else None,
                new_cause=sn.cause if sn else None,
                new_pattern=sn.pattern if sn else None,
                base_severity=sb.severity if sb else None,
                new_severity=sn.severity if sn else None,
                sentence=words.straggler_change(
                    rank,
                    kind,
                    (sb.cause, sb.pattern, sb.cause_detail) if sb else None,
                    (sn.cause, sn.pattern, sn.cause_detail) if sn else None,
                ),
            )
        )
    order = {"appeared": 0, "changed": 1, "gone": 2, "same": 3}
    return sorted(out, key=lambda s: (order[s.kind], s.rank))


def collective_changes(base: Report, new: Report) -> list[CollectiveChange]:
    """Collectives matched by (name, process group), the largest change first."""
    b = {(c.name, c.pg): c for c in base.collectives}
    n = {(c.name, c.pg): c for c in new.collectives}
    out = []
    for key in set(b) | set(n):
        cb, cn = b.get(key), n.get(key)
        kind: MatchKind = "matched" if cb and cn else ("added" if cn else "vanished")
        bt, bw = (cb.transfer_ms, cb.wait_ms) if cb else (0.0, 0.0)
        nt, nw = (cn.transfer_ms, cn.wait_ms) if cn else (0.0, 0.0)
        out.append(
            CollectiveChange(
                name=key[0],
                pg=key[1],
                kind=kind,
                base_count=cb.count if cb else 0,
                new_count=cn.count if cn else 0,
                base_bytes=cb.bytes if cb else None,
                new_bytes=cn.bytes if cn else None,
                base_transfer_ms=_r(bt),
                new_transfer_ms=_r(nt),
                base_wait_ms=_r(bw),
                new_wait_ms=_r(nw),
                delta_ms=_r(nt + nw - bt - bw),
            )
        )
    out.sort(key=lambda c: (-abs(c.delta_ms), c.name, c.pg))
    return out[:TOP]


def kernel_changes(base: Report, new: Report) -> list[KernelChange]:
    """Top kernels (operators by self time in CPU-only runs) matched by name, the largest
    change first."""
    gpu = bool(base.top_kernels or new.top_kernels)
    b = {k.name: k for k in (base.top_kernels if gpu else base.top_operators)}
    n = {k.name: k for k in (new.top_kernels if gpu else new.top_operators)}
    out = []
    for name in set(b) | set(n):
        kind: MatchKind = (
            "matched" if name in b and name in n else ("added" if name in n else "vanished")
        )
        kb, kn = b.get(name), n.get(name)
        vb, vn = (kb.ms_per_step if kb else 0.0), (kn.ms_per_step if kn else 0.0)
        out.append(
            KernelChange(
                name=name,
                kind=kind,
                base_ms=_r(vb),
                new_ms=_r(vn),
                delta_ms=_r(vn - vb),
                base_calls=kb.calls_per_step if kb else 0.0,
                new_calls=kn.calls_per_step if kn else 0.0,
            )
        )
    out.sort(key=lambda k: (-abs(k.delta_ms), k.name))
    return out[:TOP]


# ---------------------------------------------------------------- the gate


# ``--fail-if`` metrics: the step, and each component by its ms name
GATE_METRICS: dict[str, str] = {
    "step_ms": "step",
    **{f"{c}_ms": c for c in COMPONENTS},
    "wait_ms": "waiting",
    "data_ms": "data_loading",
    "comm_ms": "communication",
}
NEW_STRAGGLER = "new-straggler"


@dataclass(frozen=True)
class GateRule:
    """A parsed ``--fail-if``: METRIC>+N% or METRIC>+Nms, or ``new-straggler``."""

    text: str
    metric: str
    unit: ConditionUnit
    threshold: float


def parse_condition(text: str) -> GateRule:
    """``step_ms>+5%``, ``wait_ms>+2ms``, ``new-straggler``; ValueError with the reason."""
    t = text.strip().replace(" ", "")
    if t == NEW_STRAGGLER:
        return GateRule(text, NEW_STRAGGLER, "flag", 0.0)
    metric, sep, rest = t.partition(">")
    if not sep or metric not in GATE_METRICS:
        raise ValueError(words.bad_condition(text, sorted(GATE_METRICS)))
    unit: ConditionUnit = "pct" if rest.endswith("%") else "ms"
    number = rest[:-1] if unit == "pct" else rest.removesuffix("ms")
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(words.bad_condition(text, sorted(GATE_METRICS))) from None
    if not math.isfinite(threshold):
        raise ValueError(words.bad_condition(text, sorted(GATE_METRICS)))
    return GateRule(text, metric, unit, threshold)


def evaluate(
    rule: GateRule,
    step: Change,
    components: list[ComponentChange],
    stragglers: list[StragglerChange],
) -> Condition:
    """Does the condition hold beyond noise: the change passes its threshold and its
    90% interval leaves out zero (a new straggler: one the diagnosis names in NEW only,
    above low severity: a low one is within what a busy machine does to a balanced run)."""
    if rule.unit == "flag":
        appeared = [s.rank for s in stragglers if s.kind == "appeared"]
        real = [s.rank for s in stragglers if s.kind == "appeared" and s.new_severity != "low"]
        return Condition(
            text=rule.text,
            metric=rule.metric,
            unit=rule.unit,
            threshold=0.0,
            value=float(len(real)),
            holds=bool(real),
            sentence=words.new_straggler_condition(real, sorted(set(appeared) - set(real))),
        )
    name = GATE_METRICS[rule.metric]
    found: Change | ComponentChange | None = step
    if name != "step":
        found = next((c for c in components if c.component == name), None)
    if found is None:
        return Condition(
            text=rule.text,
            metric=rule.metric,
            unit=rule.unit,
            threshold=rule.threshold,
            value=None,
            holds=False,
            sentence=words.condition_not_measured(rule.text),
        )
    value = found.delta_ms
    if rule.unit == "pct":
        value = 100 * found.delta_ms / found.base_ms if found.base_ms > 0 else math.inf
    # beyond noise: the interval's lower end above zero, for a rise
    holds = value > rule.threshold and (found.low_ms > 0 or found.high_ms < 0)
    return Condition(
        text=rule.text,
        metric=rule.metric,
        unit=rule.unit,
        threshold=rule.threshold,
        value=_r(value) if math.isfinite(value) else None,
        holds=holds,
        sentence=words.condition_result(
            rule.text, found.delta_ms, found.low_ms, found.high_ms, holds, value > rule.threshold
        ),
    )


# ---------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class Side:
    """One run, as the comparison reads it: its analysis and report, and the step range."""

    analysis: Analysis
    report: Report
    step_range: str | None = None


def _samples(
    sides: tuple[Side, Side],
) -> tuple[Basis, dict[int, RankSamples], dict[int, RankSamples]]:
    traced = [trace_samples(s.analysis.breakdown.cols) for s in sides]
    if traced[0] and traced[1]:
        return "trace", traced[0], traced[1]
    light = []
    for s in sides:
        lo, hi = parse_step_range(s.step_range)
        marks = {r: rd.step_marks.cols for r, rd in s.analysis.run.ranks.items()}
        light.append(light_samples(marks, lo, hi))
    for s, got in zip(sides, light, strict=True):
        if not got:
            raise ValueError(words.nothing_to_compare(s.report.run.path))
    return "light", light[0], light[1]


def _scope(
    base: Side,
    new: Side,
    b: dict[int, RankSamples],
    n: dict[int, RankSamples],
    basis: Basis,
    traced: tuple[bool, bool],
) -> Scope:
    shared = sorted(set(b) & set(n))
    wb, wn = base.report.run.world_size, new.report.run.world_size
    nb = max((len(r.steps) for r in b.values()), default=0)
    nn = max((len(r.steps) for r in n.values()), default=0)
    notes = words.scope_notes(
        wb, wn, sorted(set(b) - set(n)), sorted(set(n) - set(b)), nb, nn, basis, traced
    )
    return Scope(
        base_world_size=wb,
        new_world_size=wn,
        shared_ranks=shared,
        base_only_ranks=sorted(set(b) - set(n)),
        new_only_ranks=sorted(set(n) - set(b)),
        base_steps=nb,
        new_steps=nn,
        notes=notes,
    )


def compare_runs(base: Side, new: Side, rules: Sequence[GateRule] = ()) -> Comparison:
    """The comparison of two runs; ValueError (a one-line reason) if they share nothing."""
    basis, b, n = _samples((base, new))
    shared = sorted(set(b) & set(n))
    if not shared:
        raise ValueError(words.no_shared_ranks(sorted(b), sorted(n)))
    comps = b[shared[0]].components
    ranks = []
    for rank in shared:
        d = decompose(b[rank].values, n[rank].values, comps, seed=rank)
        ranks.append(
            RankComparison(
                rank=rank,
                base_steps=len(b[rank].steps),
                new_steps=len(n[rank].steps),
                step=d.step,
                components=d.components,
            )
        )
    overall = decompose(
        overall_samples([b[r] for r in shared]), overall_samples([n[r] for r in shared]), comps
    )
    verdict: Verdict = "no_significant_change"
    machine = _machine((base, new), (b, n), shared, overall.step)
    if overall.step.significant and not (machine is not None and machine.discounted):
        verdict = "slower" if overall.step.delta_ms > 0 else "faster"
    # the gate judges the step less the machine's part where that part was discounted
    gate_step = overall.step
    if machine is not None and machine.discounted:
        gate_step = _less(overall.step, overall.step.delta_ms - machine.net_delta_ms)
    origin, uniform = None, None
    stragglers = straggler_changes(base.report, new.report, shared)
    if verdict != "no_significant_change":
        slower = verdict == "slower"
        # stragglers of the slower run (above low severity) the other did not have the same way
        moved = {s.rank for s in stragglers if s.kind != "same"}
        slow_side = new.report if slower else base.report
        named = {s.rank for s in slow_side.stragglers if s.severity != "low" and s.rank in moved}
        origin = origin_of(ranks, slower, overall.step.delta_ms, named)
        uniform = uniform_compute_ratio(ranks, overall)
    if uniform is not None and origin is not None and origin.component == "compute":
        origin = None  # compute moved on every rank: no rank is where it starts
    conditions = [evaluate(r, gate_step, overall.components, stragglers) for r in rules]
    traced = (bool(base.analysis.steps), bool(new.analysis.steps))
    scope = _scope(base, new, b, n, basis, traced)
    sentences = words.evidence(
        verdict,
        [(c.component, c.delta_ms) for c in overall.components],
        [(rc.rank, rc.step.delta_ms) for rc in ranks if rc.step.significant],
        [s.sentence for s in stragglers if s.kind != "same"],
    )
    kernels = kernel_changes(base.report, new.report) if basis == "trace" else []
    if uniform is not None:
        work = [(k.name, k.base_calls, k.new_calls, k.delta_ms) for k in work_changes(kernels)]
        sentences.insert(1, words.uniform_compute(uniform, work, basis == "trace"))
    if machine is not None:
        said = words.machine_sentence(
            verdict,
            machine.rank, machine.runq_delta_ms, machine.cpu_delta_ms, overall.step.delta_ms,
            machine.discounted, machine.job_runq_delta_ms,
        )  # fmt: skip
        if said:
            sentences.insert(0 if machine.discounted else len(sentences), said)
    return Comparison(
        base=base.report.run.path,
        new=new.report.run.path,
        basis=basis,
        verdict=verdict,
        headline=words.headline(
            verdict,
            overall.step.base_ms,
            overall.step.new_ms,
            overall.step.delta_ms,
            overall.step.delta_pct,
            overall.step.low_ms,
            overall.step.high_ms,
            (origin.rank, origin.component, origin.delta_ms) if origin else None,
            (machine.rank, machine.runq_delta_ms, machine.job_runq_delta_ms)
            if machine and machine.discounted
            else None,
        ),
        step=overall.step,
        components=overall.components,
        origin=origin,
        sentences=sentences,
        ranks=ranks,
        stragglers=stragglers,
        collectives=collective_changes(base.report, new.report) if basis == "trace" else [],
        kernels=kernels,
        scope=scope,
        conditions=conditions,
        regressed=any(c.holds for c in conditions),
        uniform_compute_ratio=uniform,
        machine=machine,
    )


# ---------------------------------------------------------------- JSON and its schema


def to_json(c: Comparison) -> str:
    """The comparison as ``rankscope.compare/1`` JSON (a NaN or infinity as null)."""
    return msgspec.json.format(msgspec.json.encode(c).decode(), indent=1) + "\n"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``Comparison`` (``docs/compare.schema.json``)."""
    from rankscope.dashboard.analysis.report import _nullable_numbers

    _, defs = msgspec.json.schema_components([Comparison])
    out = _nullable_numbers(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": SCHEMA,
            "$ref": "#/$defs/Comparison",
            "$defs": dict(sorted(defs.items())),
        }
    )
    assert isinstance(out, dict)
    return out


def schema_text() -> str:
    """``json_schema()`` as the committed file holds it."""
    import json

    return json.dumps(json_schema(), indent=1) + "\n"
