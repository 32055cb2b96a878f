"""The whole run from the light layer: every step of every rank, no trace needed.

Input, per rank (``LightRank``): the collector's step timer (``step``,
``start_ns``, ``end_ns``, ``data_ns``, the time spent in the DataLoader's
``__next__`` in that step, and ``capture``, the phase of the collector's own
profiler window that touched the step: 0 none, k = ``rundir.CAPTURE_PHASES[k-1]``),
the flight recorder's collective log (``pg``, ``seq``, ``enqueue_ns``: when the
rank issued each collective) and NVML samples (``ts_ns``, ``throttle_reasons``).
Output: a ``WholeRun``: the same ``diagnosis.Diagnosis`` the trace windows
get, over every step the ranks share, plus one row per step.

The evidence per (rank, step) is the rank's own work before its last
collective of the step: ``last enqueue - step start``, both on its own clock,
so clock skew never enters (in synchronous training every rank starts a step
when the previous step's collectives released it). Where the step's run-queue
wait ``runq_ns`` is longer, the evidence is that wait: a rank descheduled after
its collective released it starts its next step late, and the others wait for
it at the next collective. ``diagnosis.decide`` then
applies the one decision rule (persistent / intermittent / rotating, what-if
savings). Causes from the light layer: ``data_loading`` (``data_ns``),
``hardware`` (the rank's GPU reported a throttle reason during the step, bit 0
"idle" aside), ``host_contention`` (``runq_ns``: the training thread was
runnable but not scheduled, beyond what its CPU time ``cpu_ns`` would queue at
the other ranks' rate), in a run with no GPU ``cpu_compute`` (``cpu_ns`` beyond
the step's median over the others: more work on its own thread; a GPU job's
thread spins while it waits for the GPU, so there it says nothing), else
``unknown``: capture a trace window to see more.

A window's edges are the collector's own footprint: its start, its stop (torch
post-processes every event on the training thread) and the trace's export cost
the job a lump of time, most on the rank with the larger trace. Steps one of
those phases (``LEFT_OUT``) touched on any rank get no verdict: ``decide`` sees
only the other steps; their ``StepSummary`` carries ``capture`` (the phase),
``late_rank`` -1 and no excess or data wait, their column of
``diagnosis.excess_ms`` is NaN, and ``WholeRun.capture_steps`` counts them. The
recorded steps inside a window ("window") are judged as usual and labelled: the
profiler's overhead there grows with each rank's own work, and they are the
steps a window was taken to explain (attach and auto-capture aim it at a stall).

Collectives are matched across ranks by (process group, sequence number) to
check that the ranks' logs agree (``matched_collectives`` /
``unmatched_collectives``: a ring buffer that overflowed, a rank that died).
Where one rank's sequence numbers are another's plus a constant at the same
steps (``seq_shifts``: a log altered after the run, or ranks that issued
different collectives), nothing is matched by number: no arrival lags, no GPU
times; the evidence stays each rank's own work before its last collective, and
``WholeRun.seq_shifts`` names the ranks for the report's warnings.

NCCL with ``TORCH_NCCL_ENABLE_TIMING=1``: the enqueue time says when the CPU
issued a collective, but a GPU job's CPU runs ahead of its GPU, so a rank whose
GPU is late looks on time. Each rank's ``duration_ms`` (NCCL's GPU time from the
start to the end event of that instance) is its wait plus the transfer, and the
instance ends for every rank together, so per instance (logged with a GPU time
by every rank) ``transfer = min over ranks``, ``wait[r] = duration[r] - transfer``
and the rank that waited least arrived last: no clock enters. In a step where
every rank has such instances, ``wait_ms`` is each rank's GPU wait summed over
them and its evidence is ``min over ranks of the enqueue gap + (most wait - its
wait)``: how much later than the earliest rank its GPU arrived, on the scale of
the step's own work (``Gaps.lo_ns``/``hi_ns`` stay the enqueue-based bounds).
Other steps, and gloo runs, keep the enqueue evidence (``WholeRun.gpu_steps``
counts the GPU ones; ``WholeRun.gpu_split`` totals transfer and wait per rank).
NCCL's ``start_ns``/``end_ns`` are when its watchdog *noticed* the events (every
~100 ms), too coarse for this.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from rankscope.dashboard.analysis.arrivals import arrival_gaps
from rankscope.dashboard.analysis.diagnosis import (
    CAUSE_MIN_SHARE,
    Diagnosis,
    Gaps,
    Verdict,
    decide,
)
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import distinct, isin
from rankscope.profiler.rundir import CAPTURE_PHASES

NS_PER_MS = 1e6
LIGHT_HINT = (
    "from the light layer alone; capture a trace window of those steps"
    " (`rankscope attach RUN --steps N`, or run with --auto-capture) to see what it was doing"
)


@dataclass(frozen=True)
class LightRank:
    """One rank's light-layer records as arrays (ns on its own clock)."""

    rank: int
    step: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    data_ns: np.ndarray  # -1: not recorded
    coll_key: np.ndarray  # ``coll_keys``: process group code, p2p bit, sequence number
    enqueue_ns: np.ndarray
    tel_ts_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    throttle: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    capture: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per step
    duration_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # by coll_key; NaN
    # the training thread's run-queue wait per step (ns, -1: not recorded), by step row
    runq_ns: np.ndarray | None = None
    cpu_ns: np.ndarray | None = None  # its CPU time per step (ns, -1: not recorded)
    clock_offset_ns: int = 0  # this rank's clock minus rank 0's (its manifest)
    # by coll_key row: a send or receive (its seq counts apart from the collectives')
    p2p: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    pg_names: tuple[str, ...] = ()  # process group code -> its name (every rank's the same)


@dataclass(frozen=True)
class SeqShift:
    """A rank whose sequence numbers in a process group are another rank's plus ``offset``
    at the same steps' collectives (``seq_shifts``): they cannot be matched by number."""

    pg: str
    rank: int
    reference: int  # the rank it is compared with (the lowest of those that agree)
    offset: int  # its seq minus the reference's at the same step's first collective
    steps: int  # shared steps that show this offset
    compared: int  # shared steps compared


@dataclass(frozen=True)
class GpuSplit:
    """NCCL's GPU times over the instances every rank timed: transfer vs wait (ms, totals)."""

    instances: int
    transfer_ms: float  # sum over instances of the shortest duration (skew-free)
    wait_ms: dict[int, float]  # per rank: sum of its duration minus the transfer
    last_arrivals: dict[int, int]  # per rank: instances at which it waited least


@dataclass(frozen=True)
class StepSummary:
    """One step of the whole run: how long it took and who held it back."""

    step: int
    step_ms: float
    late_rank: int  # the rank with the most own work before its last collective
    excess_ms: float  # how much more than the median of the others
    data_ms: float  # the late rank's DataLoader wait in that step (NaN: not recorded)
    # The collector's own capture phase in this step on some rank ("" none); at a
    # window's edges (LEFT_OUT) no verdict is drawn (late_rank -1, excess/data 0).
    capture: str = ""


# A shift is named when at least this many shared steps, and SHIFT_SHARE of them, show
# the same offset (a ring that lost a step's first entry on one rank moves one step).
MIN_SHIFT_STEPS = 3
SHIFT_SHARE = 0.75
# A collective's key across ranks (``coll_keys``): its group's code, whether it is a
# send/receive (their seq counts a group's p2p operations apart from its collectives,
# so p2p #5 and all_reduce #5 of one group are different instances) and its seq.
PG_SHIFT = 41
P2P_BIT = 1 << 40
_SEQ_MASK = P2P_BIT - 1


def coll_keys(pg: np.ndarray, seq: np.ndarray, p2p: np.ndarray | None = None) -> np.ndarray:
    """``(pg << PG_SHIFT) | (P2P_BIT if p2p) | seq``, one int64 per collective."""
    key = (np.asarray(pg, np.int64) << PG_SHIFT) | np.asarray(seq, np.int64)
    if p2p is not None and len(p2p) == len(key):
        key = key | np.where(np.asarray(p2p, bool), np.int64(P2P_BIT), np.int64(0))
    return key


def _first_seq_per_step(r: LightRank, pg: int) -> tuple[np.ndarray, np.ndarray]:
    """(step, smallest seq issued in it) of rank r's collectives in group ``pg``, by step.

    Sends and receives are left out: their seq counts a rank's own p2p operations,
    which differ between the ranks of a pipeline.
    """
    mine = (r.coll_key >> PG_SHIFT) == pg
    if len(r.p2p) == len(r.coll_key):
        mine &= ~r.p2p
    idx = _step_index(r, r.enqueue_ns[mine])
    ok = idx >= 0
    first = np.full(len(r.step), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, idx[ok], (r.coll_key[mine] & _SEQ_MASK)[ok])
    has = first < np.iinfo(np.int64).max
    step, first = r.step[has], first[has]
    order = np.argsort(step, kind="stable")
    return step[order], first[order]


def _usual_offset(diff: np.ndarray) -> tuple[int, int]:
    """The most frequent value of ``diff`` and how often it occurs (the smaller on a tie)."""
    values = np.sort(diff)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    k = int(counts.argmax())
    return int(values[starts[k]]), int(counts[k])


def seq_shifts(ranks: list[LightRank]) -> list[SeqShift]:
    """Ranks whose collective sequence numbers do not line up with the others'.

    In one process group every member's n-th collective has the same seq (torch
    counts them per group), so the first collective each rank issued in a step
    carries the same number on every rank. Per group, each member's offset to the
    lowest member is the offset seen at most shared steps (``MIN_SHIFT_STEPS`` and
    ``SHIFT_SHARE`` of them at least; else 0: a few lost entries are no shift). The
    largest set of members with one offset (the lowest member's on a tie) is the
    reference; every other member is a ``SeqShift``: a file altered after the run
    (its seq ids moved), or ranks that issued different collectives. Either way,
    matching its collectives by (group, seq) would pair different ones.
    """
    ranks = sorted(ranks, key=lambda r: r.rank)
    if len(ranks) < 2:
        return []
    names = next((r.pg_names for r in ranks if r.pg_names), ())
    out = []
    for pg in distinct(np.concatenate([r.coll_key >> PG_SHIFT for r in ranks])).tolist():
        firsts = [(r.rank, *_first_seq_per_step(r, pg)) for r in ranks]
        firsts = [f for f in firsts if len(f[1])]
        if len(firsts) < 2:
            continue
        _, ref_steps, ref_seqs = firsts[0]
        offsets = {firsts[0][0]: (0, 0, 0)}  # rank -> (offset, steps showing it, compared)
        for rank, steps, seqs in firsts[1:]:
            common = ref_steps[isin(ref_steps, steps)]
            if not len(common):
                continue
            diff = (
                seqs[np.searchsorted(steps, common)] - ref_seqs[np.searchsorted(ref_steps, common)]
            )
            value, count = _usual_offset(diff)
            if value and count >= MIN_SHIFT_STEPS and count >= SHIFT_SHARE * len(common):
                offsets[rank] = (value, count, len(common))
            else:
                offsets[rank] = (0, count, len(common))
        by_offset: dict[int, list[int]] = {}
        for rank, (value, _, _) in offsets.items():
            by_offset.setdefault(value, []).append(rank)
        usual = max(by_offset, key=lambda v: (len(by_offset[v]), v == 0))
        reference = min(by_offset[usual])
        name = names[pg] if pg < len(names) else str(pg)
        for rank, (value, count, compared) in sorted(offsets.items()):
            if value == usual:
                continue
            if rank == firsts[0][0]:  # the lowest member is the odd one: as its reference saw it
                count, compared = offsets[reference][1:]
            out.append(SeqShift(name, rank, reference, value - usual, count, compared))
    return out


@dataclass
class WholeRun:
    diagnosis: Diagnosis
    first_step: int
    last_step: int
    n_steps: int
    steps: list[StepSummary]
    matched_collectives: int  # instances every rank logged
    unmatched_collectives: int  # instances some rank did not log (ring overflow, a lost rank)
    hint: str = LIGHT_HINT
    gpu_steps: int = 0  # steps whose evidence is NCCL's GPU time (the rest: enqueue times)
    gpu_split: GpuSplit | None = None  # None: no instance with a GPU time on every rank
    capture_steps: int = 0  # steps left out of the verdicts: a window's start, stop or export
    # run-queue wait inside each rank's gap (ms, ``ranks`` x ``steps_index``): the evidence
    # a trace window's verdict is checked against (``verdict``)
    ranks: list[int] = field(default_factory=list)
    queued_ms: np.ndarray | None = None
    steps_index: np.ndarray | None = None
    wait_share: float | None = None  # the ranks' mean wait for the latest / the step
    # ranks whose collective seq ids do not line up (``seq_shifts``): nothing was matched
    # by seq (no arrival lags, no GPU times), and the match counts above pair by number
    seq_shifts: list[SeqShift] = field(default_factory=list)


def _step_index(r: LightRank, ts: np.ndarray) -> np.ndarray:
    """Index into r's steps of the step containing each timestamp, -1 outside every step."""
    order = np.argsort(r.start_ns, kind="stable")
    starts = r.start_ns[order]
    k = np.searchsorted(starts, ts, side="right") - 1
    ok = k >= 0
    idx = np.full(len(ts), -1, dtype=np.int64)
    idx[ok] = order[k[ok]]
    inside = ok.copy()
    inside[ok] = ts[ok] < r.end_ns[idx[ok]]
    idx[~inside] = -1
    return idx


def _timed_keys(ranks: list[LightRank]) -> np.ndarray | None:
    """The instances (``coll_key``) every rank logged with a GPU time, sorted; None if none."""
    keys = None
    for r in ranks:
        if len(r.duration_ms) != len(r.coll_key):
            return None
        k = distinct(r.coll_key[np.isfinite(r.duration_ms)])
        keys = k if keys is None else keys[isin(keys, k)]
    return keys if keys is not None and len(keys) else None


def _gpu_pass(
    ranks: list[LightRank], steps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, GpuSplit | None]:
    """NCCL's GPU times over the instances every rank timed (two passes, O(instances) memory).

    Returns each rank's wait (ms) summed per step of ``steps`` (by the step it issued
    the instance in), the steps where every rank has such an instance, and the split.
    """
    n, m = len(ranks), len(steps)
    wait, count = np.zeros((n, m)), np.zeros((n, m), dtype=np.int64)
    keys = _timed_keys(ranks) if n >= 2 else None
    if keys is None:
        return wait, np.zeros(m, dtype=bool), None

    def timed(r: LightRank) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok = np.isfinite(r.duration_ms) & isin(r.coll_key, keys)
        return np.searchsorted(keys, r.coll_key[ok]), r.duration_ms[ok], r.enqueue_ns[ok]

    transfer = np.full(len(keys), np.inf)
    for r in ranks:
        pos, dur, _ = timed(r)
        np.minimum.at(transfer, pos, dur)
    last = np.full(len(keys), -1, dtype=np.int64)  # the first rank with the least wait
    totals = {}
    for k, r in enumerate(ranks):
        pos, dur, enq = timed(r)
        w = dur - transfer[pos]
        totals[r.rank] = round(float(w.sum()), 3)
        first = (w == 0) & (last[pos] < 0)
        last[pos[first]] = k
        if m:
            idx = _step_index(r, enq)
            step = np.where(idx >= 0, r.step[np.maximum(idx, 0)], -1)
            col = np.clip(np.searchsorted(steps, step), 0, m - 1)
            ok = steps[col] == step
            np.add.at(wait[k], col[ok], w[ok])
            np.add.at(count[k], col[ok], 1)
    arrivals = np.bincount(last[last >= 0], minlength=n)
    split = GpuSplit(
        instances=len(keys),
        transfer_ms=round(float(transfer.sum()), 3),
        wait_ms=totals,
        last_arrivals={r.rank: int(arrivals[k]) for k, r in enumerate(ranks)},
    )
    return wait, np.asarray((count > 0).all(axis=0), dtype=bool), split


def gpu_split(ranks: list[LightRank]) -> GpuSplit | None:
    """Transfer and wait over every instance all ranks timed on the GPU (NCCL), or None."""
    return _gpu_pass(sorted(ranks, key=lambda r: r.rank), np.zeros(0, dtype=np.int64))[2]


def light_gaps(
    ranks: list[LightRank], seq_aligned: bool = True, shifts: list[SeqShift] | None = None
) -> tuple[Gaps, dict[str, np.ndarray], np.ndarray, tuple[int, int]] | None:
    """Gaps (one per rank and shared step), components, step lengths and match counts.

    Without ``seq_aligned`` (``seq_shifts`` found ranks whose sequence numbers do not
    line up), nothing is matched across ranks by (group, seq): no arrival lags, no
    NCCL GPU times; each rank's evidence is its own work before its last collective.
    ``shifts``: those ranks' offsets, taken off in the match counts (``_match_counts``).
    """
    if len(ranks) < 2:
        return None
    common = None
    for r in ranks:
        s = distinct(r.step)
        common = s if common is None else common[isin(common, s)]
    if common is None or not len(common):
        return None
    n, m = len(ranks), len(common)
    lo = np.zeros((n, m), dtype=np.int64)
    hi = np.zeros((n, m), dtype=np.int64)
    data = np.zeros((n, m))
    runq = np.zeros((n, m))
    cpu = np.zeros((n, m))
    throttled = np.zeros((n, m), dtype=bool)
    has = np.ones(m, dtype=bool)
    lengths = np.zeros((n, m))
    for k, r in enumerate(ranks):
        pos = np.searchsorted(r.step, common) if np.all(np.diff(r.step) >= 0) else None
        if pos is None:
            order = np.argsort(r.step, kind="stable")
            pos = order[np.searchsorted(r.step[order], common)]
        start, end = r.start_ns[pos], r.end_ns[pos]
        lengths[k] = (end - start) / NS_PER_MS
        # The last collective each rank issued in each step.
        idx = _step_index(r, r.enqueue_ns)
        last = np.full(len(r.step), np.iinfo(np.int64).min, dtype=np.int64)
        ok = idx >= 0
        np.maximum.at(last, idx[ok], r.enqueue_ns[ok])
        last_c = last[pos]
        has &= last_c > np.iinfo(np.int64).min
        lo[k], hi[k] = start, np.maximum(last_c, start)
        d = r.data_ns[pos].astype(np.float64)
        data[k] = np.where(d >= 0, d / NS_PER_MS, 0.0)
        if r.runq_ns is not None:
            q = r.runq_ns[pos].astype(np.float64)
            runq[k] = np.where(q >= 0, q / NS_PER_MS, 0.0)
        if r.cpu_ns is not None:
            c = r.cpu_ns[pos].astype(np.float64)
            cpu[k] = np.where(c >= 0, c / NS_PER_MS, 0.0)
        if len(r.tel_ts_ns):
            t_idx = _step_index(r, r.tel_ts_ns)
            bad = (r.throttle & ~1) != 0
            hit = np.zeros(len(r.step), dtype=bool)
            hit[t_idx[(t_idx >= 0) & bad]] = True
            throttled[k] = hit[pos]
    if not has.any():
        return None
    lo, hi, data, runq, cpu, throttled, lengths = (
        lo[:, has],
        hi[:, has],
        data[:, has],
        runq[:, has],
        cpu[:, has],
        throttled[:, has],
        lengths[:, has],
    )
    steps = common[has]
    gap = (hi - lo) / NS_PER_MS
    # many collectives a step (FSDP): arrival lags
    lagged = arrival_gaps(ranks, steps) if seq_aligned else None
    if lagged is not None:
        gap = lagged
    # Run-queue wait beyond the gap fell after the rank's last collective: woken when the
    # collective released it, it waited for a CPU before its next step could start. That
    # delay is its own, and the others pay it at the next collective: it counts.
    gap = gap + np.clip(runq - gap, 0.0, None)
    wait = gap.max(axis=0) - gap  # the others wait for the latest (no end times needed)
    gpu_wait, gpu, _ = _gpu_pass(ranks if seq_aligned else [], steps)
    if gpu.any():
        # NCCL's GPU times (module docstring): the rank that waited least arrived last.
        late = gpu_wait[:, gpu].max(axis=0) - gpu_wait[:, gpu]
        gap[:, gpu] = gap[:, gpu].min(axis=0) + late
        wait[:, gpu] = gpu_wait[:, gpu]
    data = np.minimum(data, gap)
    hardware = np.where(throttled, gap - data, 0.0)
    # Runnable but not running: the step's run-queue wait beyond what the rank's CPU time
    # would queue at the other ranks' rate (on a loaded host more work queues more: that
    # part is the work's), at most what the gap holds beside data loading and the GPU.
    contention = np.clip(
        np.minimum(runq - cpu * _others_queue_rate(runq, cpu), gap - data - hardware), 0.0, None
    )
    # More CPU time on the training thread than the step's others (their median), at
    # most what the gap holds beside the causes above: more work of its own. Only a run
    # with no GPU keeps it (``whole_run``): a GPU job's thread spins in synchronize.
    cpu_work = np.clip(
        np.minimum(cpu - _others_median(cpu), gap - data - hardware - contention), 0.0, None
    )
    comps = {
        "data_loading": data,
        "hardware": hardware,
        "host_contention": contention,
        CPU_WORK: cpu_work,
        "other": gap - data - hardware - contention - cpu_work,
    }
    gaps = Gaps(
        ranks=np.array([r.rank for r in ranks], dtype=np.int64),
        step=steps.astype(np.int64),
        lo_ns=lo,
        hi_ns=hi,
        gap_ms=gap,
        wait_ms=wait,
        queued_ms=runq,
    )
    step_ms = np.array([float(np.sort(col)[len(col) // 2]) for col in lengths.T])
    return gaps, comps, step_ms, _match_counts(ranks, shifts)


CPU_WORK = "cpu_work"  # the component of extra CPU time (reported as cpu_compute)


def _others_median(v: np.ndarray) -> np.ndarray:
    """Per rank and step (ranks x steps), the step's median over the ranks: over the
    other rank where there are two, over all of them otherwise (one rank moves a
    median of three or more little, and a per-rank median of the others costs n^2)."""
    n = v.shape[0]
    if n == 2:
        return v[::-1]
    s = np.sort(v, axis=0)
    mid = n // 2
    med = s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2
    return np.broadcast_to(med, v.shape)


def _others_queue_rate(runq: np.ndarray, cpu: np.ndarray) -> np.ndarray:
    """Per rank (as a column), the median over the other ranks of run-queue ms per CPU ms."""
    busy = cpu.sum(axis=1)
    rate = np.where(busy > 0, runq.sum(axis=1) / np.where(busy > 0, busy, 1.0), 0.0)
    n = len(rate)
    others = [_median(np.delete(rate, k)) if n > 1 else 0.0 for k in range(n)]
    return np.asarray(others)[:, None]


def _median(v: np.ndarray) -> float:
    """(np.median imports numpy.ma, ~25 ms of start-up.)"""
    s = np.sort(v)
    mid = len(s) // 2
    return float(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2)


def _match_counts(ranks: list[LightRank], shifts: list[SeqShift] | None = None) -> tuple[int, int]:
    """Instances (process group, seq) every member of their group logged, and those only
    some did. A group's members are the ranks that logged any of its instances: a
    subgroup's collectives (a data-parallel group of a pipeline, a tensor-parallel pair)
    are never "missing" on the ranks outside it. A group only one rank logged (of two
    or more) is all "only some ranks": its partner's log is gone.

    ``shifts``: each shifted rank's collectives in that group count with its offset
    taken off (its n-th collective is the others' n-th), not by the numbers it logged,
    which would pair different collectives and call every shifted one unmatched.
    """
    keys = [distinct(r.coll_key) for r in ranks]
    for sh in shifts or []:
        at = next((i for i, r in enumerate(ranks) if r.rank == sh.rank), None)
        if at is None:
            continue
        names = ranks[at].pg_names
        code = names.index(sh.pg) if sh.pg in names else int(sh.pg) if sh.pg.isdigit() else -1
        own = keys[at]
        hit = ((own >> PG_SHIFT) == code) & ((own & P2P_BIT) == 0)
        keys[at] = distinct(np.where(hit, own - sh.offset, own))
    matched = unmatched = 0
    codes = (
        distinct(np.concatenate([k >> PG_SHIFT for k in keys])) if keys else np.zeros(0, np.int64)
    )
    for code in codes.tolist():
        mine = [k[(k >> PG_SHIFT) == code] for k in keys]
        members = [k for k in mine if len(k)]
        if len(members) == 1 and len(keys) > 1:
            # one rank alone logged the group: its partners' logs are gone (a killed
            # rank's is empty), for a collective has two members at least
            unmatched += len(distinct(members[0]))
            continue
        everyone = members[0]
        for k in members[1:]:
            everyone = everyone[isin(everyone, k)]
        anyone = distinct(np.concatenate(members))
        matched += len(everyone)
        unmatched += len(anyone) - len(everyone)
    return matched, unmatched


def light_ranks(ranks: dict[int, RankData]) -> list[LightRank]:
    """The ranks with both a step timer and a collective log, as ``LightRank``s."""
    pgs = sorted({p for rd in ranks.values() for p in rd.light_comms.vocab.get("pg", [])})
    pg_code = {p: i for i, p in enumerate(pgs)}
    out = []
    for r, rd in sorted(ranks.items()):
        # sends and receives are analysis.pipeline's (``light_pipelines``)
        marks, comms = rd.step_marks, rd.light_collectives
        if not len(marks) or not len(comms) or "start_ns" not in marks or "end_ns" not in marks:
            continue
        codes = np.array([pg_code[p] for p in comms.vocab["pg"]], dtype=np.int64)
        tel = rd.telemetry
        has_throttle = len(tel) and "throttle_reasons" in tel and "ts_ns" in tel
        throttle = tel["throttle_reasons"] if has_throttle else np.zeros(0)
        out.append(
            LightRank(
                rank=r,
                step=marks["step"],
                start_ns=marks["start_ns"],
                end_ns=marks["end_ns"],
                data_ns=marks["data_ns"] if "data_ns" in marks else np.full(len(marks), -1),
                # NaN (a step written without it) reads as "not recorded"
                runq_ns=np.nan_to_num(marks["runq_ns"], nan=-1).astype(np.int64)
                if "runq_ns" in marks
                else None,
                cpu_ns=np.nan_to_num(marks["cpu_ns"], nan=-1).astype(np.int64)
                if "cpu_ns" in marks
                else None,
                coll_key=coll_keys(
                    codes[comms["pg"]], comms["seq"], comms["p2p"] != 0 if "p2p" in comms else None
                ),
                enqueue_ns=comms["enqueue_ns"],
                tel_ts_ns=tel["ts_ns"] if has_throttle else np.zeros(0, np.int64),
                # NaN (a sample without the field) reads as "no throttle reason"
                throttle=np.nan_to_num(throttle, nan=0.0).astype(np.int64),
                duration_ms=comms["duration_ms"] if "duration_ms" in comms else np.zeros(0),
                capture=(
                    np.nan_to_num(marks["capture"], nan=0.0).astype(np.int64)
                    if "capture" in marks
                    else np.zeros(len(marks), np.int64)
                ),
                clock_offset_ns=_clock_offset(rd),
                p2p=comms["p2p"] != 0 if "p2p" in comms else np.zeros(len(comms), dtype=bool),
                pg_names=tuple(pgs),
            )
        )
    return out


def _clock_offset(rd: RankData) -> int:
    """The rank's clock minus rank 0's, from its manifest (0 when not measured)."""
    offset = (rd.meta.get("manifest") or {}).get("clock_offset_ns")
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else 0


def absent_reason(ranks: dict[int, RankData], ring_ranks: Collection[int] = ()) -> str | None:
    """Why a run has no whole-run verdict, for the report (called when it has none).

    Where a rank logged no collective, its manifest's ``collectives.absent`` (the
    collector's reason: no buffer, no dump function, no process group, a failed
    source) is quoted, except that a rank in ``ring_ranks`` (its hang evidence holds
    the ring) is not said to have had no collective.
    """
    usable = light_ranks(ranks)
    if len(usable) >= 2 and not any((_step_index(r, r.enqueue_ns) >= 0).any() for r in usable):
        # Steps and collectives, but never a collective inside a step: a pipeline's
        # send/recv on gloo (its flight recorder logs collectives only), or a job whose
        # only collectives come before its first step or after its last.
        logged = sorted(
            {str(n) for r in usable for n in ranks[r.rank].light_comms.vocab.get("name", [])}
        )
        timed = any(
            "wait_start_ns" in (c := ranks[r.rank].light_comms) and (c["wait_start_ns"] >= 0).any()
            for r in usable
        )
        p2p = (
            "the collector timed the ranks' sends and receives, but they form no pipeline"
            " (a chain or loop of ranks, each exchanging 3 operations or more with at most two"
            " others)"
            if timed
            else "a pipeline's send/recv are not collectives (gloo's flight recorder does not"
            " log them, and this run's collector did not time them)"
        )
        return (
            f"the ranks' collective logs hold no collective inside a step (only"
            f" {', '.join(logged[:4]) or 'none'}, before or after the steps), so no step"
            f" shows who arrived last; {p2p}: capture a trace window (`--profile`) to see"
            " the stages and their waits"
        )
    if len(usable) >= 2:
        # Logs enough, yet no verdict: say so rather than drop the section unnamed.
        return (
            f"ranks {', '.join(str(r.rank) for r in usable[:8])}"
            f"{' ...' if len(usable) > 8 else ''} have a step timer and a collective log,"
            " but no step that two of them both cover and that a profiler window left alone"
            " (steps out of order, collective sequence numbers that do not line up, or every"
            " step touched by a capture)"
        )
    reasons = []
    for r, rd in sorted(ranks.items()):
        info = (rd.meta.get("manifest") or {}).get("collectives") or {}
        why = info.get("absent") if isinstance(info, dict) else None
        if not len(rd.light_comms) and isinstance(why, str):
            if r in ring_ranks and why.startswith("no collective in the flight recorder"):
                # the log was still empty when the rank last wrote it; its hang evidence,
                # read at the stall or on the way down, holds the ring
                why = (
                    "its collective log is empty (the ring was not written before it"
                    " stopped), but its hang evidence holds the flight recorder's entries"
                )
            reasons.append(f"rank {r}: {why}")
    said = f" ({'; '.join(reasons[:3])})" if reasons else ""
    if len(ranks) < 2:
        return f"the whole-run verdict compares ranks; this run has {len(ranks)}{said}"
    return (
        f"the whole-run verdict needs two ranks with a step timer and a collective log;"
        f" {len(usable)} of {len(ranks)} have both{said}"
    )


# When ranks disagree on a step's phase, the label names the costliest one.
_CAPTURE_RANK = {"stop": 4, "start": 3, "export": 2, "window": 1}
# The phases whose steps carry no verdict (see the module docstring).
LEFT_OUT = ("start", "stop", "export")


def capture_labels(ranks: list[LightRank], steps: np.ndarray) -> list[str]:
    """Per step of ``steps``: the capture phase that touched it on any rank, else ""."""
    codes = np.zeros((len(ranks), len(steps)), dtype=np.int64)
    for k, r in enumerate(ranks):
        if len(r.capture) != len(r.step) or not r.capture.any():
            continue
        by_step = dict(zip(r.step.tolist(), r.capture.tolist(), strict=True))
        codes[k] = [by_step.get(s, 0) for s in steps.tolist()]
    out = []
    for column in codes.T:
        names = [
            CAPTURE_PHASES[c - 1] for c in set(column.tolist()) if 0 < c <= len(CAPTURE_PHASES)
        ]
        out.append(max(names, key=_CAPTURE_RANK.__getitem__) if names else "")
    return out


def capture_spans(steps: list[StepSummary]) -> list[tuple[int, int]]:
    """Runs of consecutive steps left out for capture (``LEFT_OUT``), as (first, last)."""
    spans: list[tuple[int, int]] = []
    for s in steps:
        if s.capture not in LEFT_OUT:
            continue
        if spans and spans[-1][1] == s.step - 1:
            spans[-1] = (spans[-1][0], s.step)
        else:
            spans.append((s.step, s.step))
    return spans


def _columns(gaps: Gaps, keep: np.ndarray) -> Gaps:
    return Gaps(
        ranks=gaps.ranks,
        step=gaps.step[keep],
        lo_ns=gaps.lo_ns[:, keep],
        hi_ns=gaps.hi_ns[:, keep],
        gap_ms=gaps.gap_ms[:, keep],
        wait_ms=gaps.wait_ms[:, keep],
    )


def whole_run(
    ranks: list[LightRank], has_gpu: bool, shifts: list[SeqShift] | None = None
) -> WholeRun | None:
    """The diagnosis over every step the ranks share but a window's edges (``LEFT_OUT``);
    None without two ranks' logs or without such a step.

    ``shifts``: ``seq_shifts(ranks)`` (worked out here when not given); where there are
    any, nothing is matched across ranks by sequence number (``light_gaps``).
    """
    ranks = sorted(ranks, key=lambda r: r.rank)
    shifts = seq_shifts(ranks) if shifts is None else shifts
    built = light_gaps(ranks, seq_aligned=not shifts, shifts=shifts)
    if built is None:
        return None
    gaps, comps, step_ms, (matched, unmatched) = built
    if has_gpu:
        comps["other"] = comps["other"] + comps.pop(CPU_WORK)
    _, gpu, split = _gpu_pass([] if shifts else ranks, gaps.step)
    capture = capture_labels(ranks, gaps.step)
    keep = np.array([c not in LEFT_OUT for c in capture], dtype=bool)
    if not keep.any():
        return None
    diag = _decide_kept(gaps, comps, step_ms, keep, has_gpu)
    if not has_gpu and not diag.stragglers and diag.rotating is None:
        diag = _unmasked(gaps, comps, step_ms, keep) or diag
    row = {int(s): j for j, s in enumerate(gaps.step.tolist())}
    timed = not has_gpu and all(r.cpu_ns is not None and len(r.cpu_ns) for r in ranks)
    for v in diag.stragglers:
        if timed and v.cause == "unknown" and v.cause_detail is None:
            _off_cpu(v)
        # The step timer says how much, not which code: a window of those steps says it.
        # "more CPU work" included (a stall half busy loop, half sleep reads cpu_compute
        # or unknown by a hair: seen in CI, and only the unknown one pointed at attach).
        if v.cause in ("unknown", "hardware", "cpu_compute") and v.hint is None:
            v.hint = LIGHT_HINT
        # onset and end in seconds from the first shared step, on the rank's own clock
        k = int(np.flatnonzero(gaps.ranks == v.rank)[0])
        t0 = int(gaps.lo_ns[k, 0])
        if v.onset_step is not None:
            v.onset_s = round((int(gaps.lo_ns[k, row[v.onset_step]]) - t0) / 1e9, 3)
        if v.end_step is not None:
            v.end_s = round((int(gaps.lo_ns[k, row[v.end_step]]) - t0) / 1e9, 3)
    assert diag.excess_ms is not None
    excess = np.full(gaps.gap_ms.shape, np.nan)
    excess[:, keep] = diag.excess_ms
    diag.excess_ms = excess  # every shared step's column; NaN where a capture touched it
    late = np.where(keep, np.nan_to_num(excess, nan=-np.inf).argmax(axis=0), -1)
    data = comps["data_loading"]
    summary = []
    for j, s in enumerate(gaps.step.tolist()):
        k = int(late[j])
        summary.append(
            StepSummary(
                step=int(s),
                step_ms=round(float(step_ms[j]), 3),
                late_rank=int(gaps.ranks[k]) if k >= 0 else -1,
                excess_ms=round(float(excess[k, j]), 3) if k >= 0 else 0.0,
                data_ms=round(float(data[k, j]), 3) if k >= 0 else 0.0,
                capture=capture[j],
            )
        )
    return WholeRun(
        diagnosis=diag,
        first_step=int(gaps.step[0]),
        last_step=int(gaps.step[-1]),
        n_steps=len(gaps.step),
        steps=summary,
        matched_collectives=matched,
        unmatched_collectives=unmatched,
        gpu_steps=int(gpu.sum()),
        gpu_split=split,
        seq_shifts=list(shifts),
        capture_steps=int((~keep).sum()),
        ranks=[int(r) for r in gaps.ranks.tolist()],
        queued_ms=comps["host_contention"],
        steps_index=gaps.step.astype(np.int64),
        # over the steps the verdict judged (a window's edges left out)
        wait_share=round(float(gaps.wait_ms[:, keep].mean(axis=0).sum() / step_ms[keep].sum()), 3)
        if step_ms[keep].sum() > 0
        else None,
    )


def _decide_kept(
    gaps: Gaps, comps: dict[str, np.ndarray], step_ms: np.ndarray, keep: np.ndarray, gpu: bool
) -> Diagnosis:
    """``decide`` over the steps ``keep`` marks (a window's edges left out)."""
    return decide(
        _columns(gaps, keep),
        {c: v[:, keep] for c, v in comps.items()},
        step_ms[keep],
        gpu,
        step_rows=False,
    )


OFF_CPU_HINT = (
    "its training thread was neither running, nor waiting for a CPU, for data or in a"
    " collective: blocking I/O, a sleep, a lock or another thread it waits on;"
    " `py-spy dump --pid PID` on that rank shows where"
)


OFF_CPU_MAX_CPU = 0.25  # off_cpu: at most a quarter of the extra time on the CPU


def _off_cpu(v: Verdict) -> None:
    """A no-GPU rank late mostly by time that is not CPU time, run-queue wait or data
    loading (the ``other`` component, with every rank's CPU time recorded) was off the
    CPU and not runnable: said as ``cause_detail`` "off_cpu" (cause stays ``unknown``)."""
    pos = {c: ms for c, ms in v.cause_breakdown.items() if ms > 0}
    total = sum(pos.values())
    # Mostly off the CPU, and little on it: a stall half busy and half asleep is neither.
    if (
        total > 0
        and pos.get("unknown", 0.0) >= CAUSE_MIN_SHARE * total
        and pos.get("cpu_compute", 0.0) <= OFF_CPU_MAX_CPU * total
    ):
        v.cause_detail = "off_cpu"
        v.hint = f"{OFF_CPU_HINT}; {LIGHT_HINT}"


# A rank's extra CPU work hidden by the others' run-queue waits: said with the verdict.
MASKED_HINT = (
    "its training thread uses more CPU a step than the others': look for a larger batch or"
    " more work on this rank; the host is short of CPU too (the others queued ~{queued:.1f}"
    " ms a step for one), so the saving is what evening out the work saves on a quiet host"
)


def _unmasked(
    gaps: Gaps, comps: dict[str, np.ndarray], step_ms: np.ndarray, keep: np.ndarray
) -> Diagnosis | None:
    """The decision on each rank's evidence less its host contention, where that names a
    persistent straggler of more CPU work (no-GPU runs whose first decision named none).

    On a host short of CPU, a rank that waits for a slower one sleeps in the collective,
    its core goes to another process, and once released it queues for a CPU: its run-queue
    wait makes it as late as the rank it waited for, and the rank that does twice the
    work of the others (an uneven batch: CPU time 14 vs 7 ms a step, measured on the
    thread itself) stands out no more. Without each rank's contention the evidence is its
    own work; only a verdict whose cause is that work (``cpu_compute``) is kept: the
    thread's CPU time does not depend on the scheduler, so a balanced run under load
    stays silent. Its hint says the host was contended and by how much.
    """
    queued = comps["host_contention"]
    gap = np.clip(gaps.gap_ms - queued, 0.0, None)
    plain = Gaps(
        ranks=gaps.ranks,
        step=gaps.step,
        lo_ns=gaps.lo_ns,
        hi_ns=gaps.hi_ns,
        gap_ms=gap,
        wait_ms=gap.max(axis=0) - gap,
        queued_ms=gaps.queued_ms,
    )
    parts = dict(comps, host_contention=np.zeros_like(queued))
    diag = _decide_kept(plain, parts, step_ms, keep, False)
    found = [v for v in diag.stragglers if v.pattern == "persistent" and v.cause == "cpu_compute"]
    if not found or diag.rotating is not None:
        return None
    for v in found:
        k = int(np.flatnonzero(gaps.ranks == v.rank)[0])
        others = np.delete(queued[:, keep], k, axis=0)
        v.hidden_by_queue_ms = round(float(others.mean()), 3)
        v.hint = MASKED_HINT.format(queued=v.hidden_by_queue_ms)
    diag.stragglers = found
    return diag


def queue_means(
    marks: Mapping[str, np.ndarray] | None, steps: np.ndarray
) -> tuple[float, float] | None:
    """Mean run-queue wait and CPU time (ms a step) of a rank's step timer over ``steps``;
    None where it did not record them (an older collector, or not on Linux)."""
    if marks is None or "runq_ns" not in marks or "cpu_ns" not in marks or not len(steps):
        return None
    at = np.isin(np.asarray(marks["step"], np.int64), steps)
    q = np.asarray(marks["runq_ns"], np.float64)[at]
    c = np.asarray(marks["cpu_ns"], np.float64)[at]
    ok = np.isfinite(q) & np.isfinite(c) & (q >= 0) & (c >= 0)
    if not ok.any():
        return None
    return float(q[ok].mean()) / 1e6, float(c[ok].mean()) / 1e6


def queue_by_step(
    marks: Mapping[str, np.ndarray] | None, steps: np.ndarray
) -> dict[int, float] | None:
    """A rank's run-queue wait (ms) in each of ``steps`` its step timer recorded it;
    None where it recorded none (an older collector, or not on Linux)."""
    if marks is None or "runq_ns" not in marks or not len(steps):
        return None
    st = np.asarray(marks["step"], np.int64)
    q = np.asarray(marks["runq_ns"], np.float64)
    at = np.isin(st, steps) & np.isfinite(q) & (q >= 0)
    if not at.any():
        return None
    return {int(k): float(v) / 1e6 for k, v in zip(st[at], q[at], strict=True)}


def job_queue_ms(per_rank: Mapping[int, Mapping[int, float]]) -> float | None:
    """The job's wait for a CPU a step: at each step every rank recorded, the longest
    wait of any rank (the ranks meet every step, so the one that waited longest holds
    the others back), averaged over those steps; None where they share no step."""
    if not per_rank:
        return None
    shared = set.intersection(*(set(d) for d in per_rank.values()))
    if not shared:
        return None
    return float(np.mean([max(d[s] for d in per_rank.values()) for s in sorted(shared)]))


@dataclass(frozen=True)
class NameMismatch:
    """One collective instance (process group, seq) the ranks logged under different
    names: they called different collectives there (a desync), or a log was altered."""

    pg: str
    seq: int
    names: dict[int, str]  # rank -> the collective it logged


def name_mismatches(
    ranks: Mapping[int, RankData], skip_pgs: frozenset[str] = frozenset()
) -> tuple[list[NameMismatch], int]:
    """The first few (pg, seq) instances of collectives (not send/recv) that two ranks
    logged under different names, in (pg, seq) order, and how many there are in all.

    ``skip_pgs``: groups whose sequence numbers do not line up (``seq_shifts``): their
    numbers pair different collectives, said already."""
    pg_vocab: dict[str, int] = {}
    name_vocab: dict[str, int] = {}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for r, rd in sorted(ranks.items()):
        comms = rd.light_comms
        if not len(comms) or "name" not in comms or "seq" not in comms or "pg" not in comms:
            continue
        pgs = np.array([pg_vocab.setdefault(str(p), len(pg_vocab)) for p in comms.vocab["pg"]])
        names = np.array(
            [name_vocab.setdefault(str(n), len(name_vocab)) for n in comms.vocab["name"]]
        )
        keep = np.ones(len(comms), dtype=bool)
        if "p2p" in comms:
            keep &= np.asarray(comms["p2p"]) == 0
        code = pgs[np.asarray(comms["pg"])] if len(pgs) else np.zeros(len(comms), np.int64)
        for p in skip_pgs:  # a few groups: no np.isin (it imports numpy.ma)
            if p in pg_vocab:
                keep &= code != pg_vocab[p]
        key = (code.astype(np.int64) << PG_SHIFT) | np.asarray(comms["seq"], np.int64)
        name = names[np.asarray(comms["name"])] if len(names) else np.zeros(len(comms), np.int64)
        parts.append((key[keep], name[keep], np.full(int(keep.sum()), r, np.int64)))
    if len(parts) < 2:
        return [], 0
    key = np.concatenate([p[0] for p in parts])
    name = np.concatenate([p[1] for p in parts])
    rank = np.concatenate([p[2] for p in parts])
    if not len(key):
        return [], 0
    order = np.lexsort((rank, key))
    key, name, rank = key[order], name[order], rank[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lo = np.minimum.reduceat(name, starts)
    hi = np.maximum.reduceat(name, starts)
    bad = np.flatnonzero(lo != hi)
    pg_of = {v: k for k, v in pg_vocab.items()}
    name_of = {v: k for k, v in name_vocab.items()}
    ends = np.r_[starts[1:], len(key)]
    out = []
    for i in bad[:MAX_MISMATCHES]:
        a, b = starts[i], ends[i]
        k = int(key[a])
        out.append(
            NameMismatch(
                pg=pg_of[k >> PG_SHIFT],
                seq=k & _SEQ_MASK,
                names={int(rank[j]): name_of[int(name[j])] for j in range(a, b)},
            )
        )
    return out, len(bad)


MAX_MISMATCHES = 3  # instances named; the rest are counted
