"""The whole run from the light layer: every step of every rank, no trace needed.

Input, per rank (``LightRank``): the collector's step timer (``step``,
``start_ns``, ``end_ns`` and ``data_ns``, the time spent in the DataLoader's
``__next__`` in that step), the flight recorder's collective log (``pg``,
``seq``, ``enqueue_ns``: when the rank issued each collective) and NVML
samples (``ts_ns``, ``throttle_reasons``).
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
the other ranks' rate), else ``unknown``: capture a trace window to see more.

Collectives are matched across ranks by (process group, sequence number) to
check that the ranks' logs agree (``matched_collectives`` /
``unmatched_collectives``: a ring buffer that overflowed, a rank that died).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rankscope.dashboard.analysis.diagnosis import Diagnosis, Gaps, decide
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import distinct, isin

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
    coll_key: np.ndarray  # (process group code << 40) | sequence number
    enqueue_ns: np.ndarray
    tel_ts_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    throttle: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # the training thread's run-queue wait per step (ns, -1: not recorded), by step row
    runq_ns: np.ndarray | None = None
    cpu_ns: np.ndarray | None = None  # its CPU time per step (ns, -1: not recorded)


@dataclass(frozen=True)
class StepSummary:
    """One step of the whole run: how long it took and who held it back."""

    step: int
    step_ms: float
    late_rank: int  # the rank with the most own work before its last collective
    excess_ms: float  # how much more than the median of the others
    data_ms: float  # the late rank's DataLoader wait in that step (NaN: not recorded)


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
    # run-queue wait inside each rank's gap (ms, ``ranks`` x ``steps_index``): the evidence
    # a trace window's verdict is checked against (``verdict``)
    ranks: list[int] = field(default_factory=list)
    queued_ms: np.ndarray | None = None
    steps_index: np.ndarray | None = None
    wait_share: float | None = None  # the ranks' mean wait for the latest / the step


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


def light_gaps(
    ranks: list[LightRank],
) -> tuple[Gaps, dict[str, np.ndarray], np.ndarray, tuple[int, int]] | None:
    """Gaps (one per rank and shared step), components, step lengths and match counts."""
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
    # Run-queue wait beyond the gap fell after the rank's last collective: woken when the
    # collective released it, it waited for a CPU before its next step could start. That
    # delay is its own, and the others pay it at the next collective: it counts.
    gap = gap + np.clip(runq - gap, 0.0, None)
    wait = gap.max(axis=0) - gap  # the others wait for the latest (no end times needed)
    data = np.minimum(data, gap)
    hardware = np.where(throttled, gap - data, 0.0)
    # Runnable but not running: the step's run-queue wait beyond what the rank's CPU time
    # would queue at the other ranks' rate (on a loaded host more work queues more: that
    # part is the work's), at most what the gap holds beside data loading and the GPU.
    contention = np.clip(
        np.minimum(runq - cpu * _others_queue_rate(runq, cpu), gap - data - hardware), 0.0, None
    )
    comps = {
        "data_loading": data,
        "hardware": hardware,
        "host_contention": contention,
        "other": gap - data - hardware - contention,
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
    return gaps, comps, step_ms, _match_counts(ranks)


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


def _match_counts(ranks: list[LightRank]) -> tuple[int, int]:
    """Instances (process group, seq) every rank logged, and those only some did."""
    keys = [distinct(r.coll_key) for r in ranks]
    everyone = keys[0]
    for k in keys[1:]:
        everyone = everyone[isin(everyone, k)]
    anyone = distinct(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    return len(everyone), len(anyone) - len(everyone)


def light_ranks(ranks: dict[int, RankData]) -> list[LightRank]:
    """The ranks with both a step timer and a collective log, as ``LightRank``s."""
    pgs = sorted({p for rd in ranks.values() for p in rd.light_comms.vocab.get("pg", [])})
    pg_code = {p: i for i, p in enumerate(pgs)}
    out = []
    for r, rd in sorted(ranks.items()):
        marks, comms = rd.step_marks, rd.light_comms
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
                coll_key=(codes[comms["pg"]] << 40) | comms["seq"],
                enqueue_ns=comms["enqueue_ns"],
                tel_ts_ns=tel["ts_ns"] if has_throttle else np.zeros(0, np.int64),
                # NaN (a sample without the field) reads as "no throttle reason"
                throttle=np.nan_to_num(throttle, nan=0.0).astype(np.int64),
            )
        )
    return out


def whole_run(ranks: list[LightRank], has_gpu: bool) -> WholeRun | None:
    """The diagnosis over every step the ranks share; None without two ranks' logs."""
    built = light_gaps(sorted(ranks, key=lambda r: r.rank))
    if built is None:
        return None
    gaps, comps, step_ms, (matched, unmatched) = built
    diag = decide(gaps, comps, step_ms, has_gpu, step_rows=False)
    row = {int(s): j for j, s in enumerate(gaps.step.tolist())}
    for v in diag.stragglers:
        if v.cause in ("unknown", "hardware") and v.hint is None:
            v.hint = LIGHT_HINT
        # onset and end in seconds from the first shared step, on the rank's own clock
        k = int(np.flatnonzero(gaps.ranks == v.rank)[0])
        t0 = int(gaps.lo_ns[k, 0])
        if v.onset_step is not None:
            v.onset_s = round((int(gaps.lo_ns[k, row[v.onset_step]]) - t0) / 1e9, 3)
        if v.end_step is not None:
            v.end_s = round((int(gaps.lo_ns[k, row[v.end_step]]) - t0) / 1e9, 3)
    excess = diag.excess_ms
    assert excess is not None
    late = excess.argmax(axis=0)
    data = comps["data_loading"]
    summary = [
        StepSummary(
            step=int(s),
            step_ms=round(float(step_ms[j]), 3),
            late_rank=int(gaps.ranks[late[j]]),
            excess_ms=round(float(excess[late[j], j]), 3),
            data_ms=round(float(data[late[j], j]), 3),
        )
        for j, s in enumerate(gaps.step.tolist())
    ]
    return WholeRun(
        diagnosis=diag,
        first_step=int(gaps.step[0]),
        last_step=int(gaps.step[-1]),
        n_steps=len(gaps.step),
        steps=summary,
        matched_collectives=matched,
        unmatched_collectives=unmatched,
        ranks=[int(r) for r in gaps.ranks.tolist()],
        queued_ms=comps["host_contention"],
        steps_index=gaps.step.astype(np.int64),
        wait_share=round(float(gaps.wait_ms.mean(axis=0).sum() / step_ms.sum()), 3)
        if step_ms.sum() > 0
        else None,
    )
