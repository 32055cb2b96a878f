"""How busy each GPU was: from the trace, and from NVML/GPM telemetry.

Each measure comes in two halves, so the cross-rank analysis never needs a
rank's raw events: ``*_sums(rank_data, ...)`` reduces one rank's tables to sums
per step window (kept in the rank's digest, ``digest.py``), and ``*_of(sums,
steps)`` finishes them for the analysed steps.

``utilisation_sums(rank_data, activity, windows)`` / ``utilisation_of`` -> ``GpuUtilisation``:
``gpu_busy_pct`` (union of all GPU activity over the analysed step time),
``sm_efficiency_pct`` (kernel-time-weighted mean of min(blocks per SM, 1): the
share of SMs a kernel could keep busy, HTA's estimate), ``achieved_occupancy_pct``
(kernel-time-weighted Kineto estimate), and ``streams``: per stream busy ms per
step and kernel count. None values where the trace cannot tell.

``telemetry_sums(rank_data, windows)`` / ``telemetry_of`` -> ``TelemetrySummary``: NVML/GPM
(or host) means and maxima over the whole run and means over the analysed steps,
or None without samples.

``idle_sums(rank_data, windows)`` / ``idle_of`` -> ``IdleBreakdown``: GPU idle time per step split
as HTA does: ``host_wait_ms`` (the next kernel was launched only after the GPU
ran dry), ``kernel_wait_ms`` (short gaps between queued kernels: launch
overhead), ``other_ms`` (the rest: syncs, cross-stream dependencies).

``kernel_sums(rank_data, windows)`` / ``top_kernels_of`` -> ``KernelSummary``s by total time with
their spread across ranks.

An event belongs to the step whose window holds its start (the last such
window, should two overlap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import RankActivity
from rankscope.dashboard.analysis.results import (
    FieldStats,
    GpuUtilisation,
    IdleBreakdown,
    KernelSummary,
    StreamBusy,
    TelemetrySummary,
)
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import Table, distinct, isin
from rankscope.profiler.telemetry import (
    HOST_FIELDS,
    NVML_FIELDS,
    PROCESS_FIELDS,
    TORCH_MEMORY_FIELDS,
)

NS_PER_MS = 1e6
KERNEL_WAIT_MAX_NS = 50_000  # gaps between queued kernels shorter than this are launch overhead

# The collector's and the monitor's field names: one definition, in rankscope.profiler.telemetry.
TELEMETRY_FIELDS = tuple(
    f
    for f in (*NVML_FIELDS, *HOST_FIELDS, *PROCESS_FIELDS, *TORCH_MEMORY_FIELDS)
    if f != "throttle_reasons"
)


def window_steps(windows: dict[int, tuple[int, int]]) -> np.ndarray:
    """The steps of ``windows`` in their order: the column order of every ``*Sums``."""
    return np.fromiter(windows, dtype=np.int64, count=len(windows))


def step_position(ts: np.ndarray, windows: dict[int, tuple[int, int]]) -> np.ndarray:
    """Per time, the position (in ``windows``' order) of the step window holding it; -1: none."""
    out = np.full(len(ts), -1, dtype=np.int64)
    for k, (lo, hi) in enumerate(windows.values()):
        out[(ts >= lo) & (ts < hi)] = k
    return out


def _chosen(step_numbers: np.ndarray, steps: list[int]) -> np.ndarray:
    return isin(step_numbers, np.asarray(steps, dtype=np.int64))


# ---------------------------------------------------------------- GPU utilisation


@dataclass
class UtilSums:
    """One rank's GPU time per step window (columns in ``steps`` order)."""

    has_gpu: bool
    steps: np.ndarray
    wall_ns: np.ndarray
    busy_ns: np.ndarray
    bps_dur: np.ndarray  # kernel time with a blocks-per-SM figure
    bps_weighted: np.ndarray  # sum of min(blocks per SM, 1) * kernel time
    occ_dur: np.ndarray
    occ_weighted: np.ndarray
    stream_ids: np.ndarray  # streams with any GPU work (not syncs)
    stream_busy_ns: np.ndarray  # streams x steps
    stream_kernels: np.ndarray  # streams x steps


def utilisation_sums(
    rd: RankData, act: RankActivity, windows: dict[int, tuple[int, int]]
) -> UtilSums:
    steps = window_steps(windows)
    n = len(steps)
    wall = np.array([hi - lo for lo, hi in windows.values()], dtype=np.int64)
    zeros_f = np.zeros(n)
    if not act.has_gpu:
        e = np.zeros(0, dtype=np.int64)
        return UtilSums(
            False, steps, wall, np.zeros(n, np.int64), zeros_f, zeros_f, zeros_f, zeros_f,
            e, np.zeros((0, n), np.int64), np.zeros((0, n), np.int64),
        )  # fmt: skip
    busy = np.array(
        [iv.clipped_length(act.gpu, lo, hi) for lo, hi in windows.values()], dtype=np.int64
    )
    gpu = rd.gpu
    # Codes, not decoded strings: this runs once per rank.
    is_kernel = gpu["kind"] == gpu.code_of("kind", "kernel")
    pos = step_position(gpu["ts"], windows)
    kernels = is_kernel & (pos >= 0)
    kpos = pos[kernels]
    dur = gpu["dur"][kernels].astype(np.float64)
    bps = gpu["blocks_per_sm"][kernels]
    occ = gpu["occupancy_pct"][kernels]
    have_bps, have_occ = ~np.isnan(bps), ~np.isnan(occ)

    def per_step(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(kpos[mask], weights=values[mask], minlength=n)[:n]

    work = gpu["kind"] != gpu.code_of("kind", "sync")
    ts, end, stream_col = gpu["ts"], gpu["ts"] + gpu["dur"], gpu["stream"]
    stream_ids = distinct(stream_col[work])
    sbusy = np.zeros((len(stream_ids), n), dtype=np.int64)
    skern = np.zeros((len(stream_ids), n), dtype=np.int64)
    order = np.argsort(stream_col, kind="stable")
    by_stream = stream_col[order]
    for j, stream in enumerate(stream_ids):
        rows = order[
            np.searchsorted(by_stream, stream, "left") : np.searchsorted(by_stream, stream, "right")
        ]
        rows = rows[work[rows]]
        merged = iv.union(ts[rows], end[rows])
        sbusy[j] = [iv.clipped_length(merged, lo, hi) for lo, hi in windows.values()]
        krows = rows[kernels[rows]]
        skern[j] = np.bincount(pos[krows], minlength=n)[:n]
    return UtilSums(
        has_gpu=True,
        steps=steps,
        wall_ns=wall,
        busy_ns=busy,
        bps_dur=per_step(dur, have_bps),
        bps_weighted=per_step(np.minimum(bps, 1.0) * dur, have_bps),
        occ_dur=per_step(dur, have_occ),
        occ_weighted=per_step(occ * dur, have_occ),
        stream_ids=stream_ids,
        stream_busy_ns=sbusy,
        stream_kernels=skern,
    )


def utilisation_of(s: UtilSums, steps: list[int]) -> GpuUtilisation:
    sel = _chosen(s.steps, steps)
    wall = int(s.wall_ns[sel].sum())
    if not s.has_gpu or wall <= 0:
        return GpuUtilisation()
    busy = int(s.busy_ns[sel].sum())
    bps_dur, occ_dur = float(s.bps_dur[sel].sum()), float(s.occ_dur[sel].sum())
    sm_eff = 100.0 * float(s.bps_weighted[sel].sum()) / bps_dur if bps_dur > 0 else None
    occupancy = float(s.occ_weighted[sel].sum()) / occ_dur if occ_dur > 0 else None
    n_steps = max(int(sel.sum()), 1)
    busy_ns = s.stream_busy_ns[:, sel].sum(axis=1).tolist()
    kernels = s.stream_kernels[:, sel].sum(axis=1).tolist()
    streams = [
        StreamBusy(
            stream=stream,
            busy_ms_per_step=round(b / NS_PER_MS / n_steps, 3),
            busy_pct=round(100.0 * b / wall, 2),
            kernels=k,
        )
        for stream, b, k in zip(s.stream_ids.tolist(), busy_ns, kernels, strict=True)
    ]
    return GpuUtilisation(
        gpu_busy_pct=round(100.0 * busy / wall, 2),
        sm_efficiency_pct=None if sm_eff is None else round(sm_eff, 2),
        achieved_occupancy_pct=None if occupancy is None else round(occupancy, 2),
        streams=streams,
    )


# ---------------------------------------------------------------- telemetry


@dataclass
class TelemetrySums:
    """One rank's samples: whole-run figures, and sums per step window."""

    samples: int
    steps: np.ndarray
    in_step: np.ndarray  # samples per step window
    fields: list[str]  # fields with at least one value
    mean: np.ndarray  # per field, over the run
    max: np.ndarray
    step_sum: np.ndarray  # fields x steps
    step_count: np.ndarray  # fields x steps
    throttled_pct: float | None


def telemetry_sums(rd: RankData, windows: dict[int, tuple[int, int]]) -> TelemetrySums | None:
    tel = rd.telemetry
    if not len(tel) or "ts_ns" not in tel:
        return None
    steps = window_steps(windows)
    n = len(steps)
    pos = step_position(tel["ts_ns"], windows)
    inside = pos >= 0
    names: list[str] = []
    means, maxes, sums, counts = [], [], [], []
    for name in TELEMETRY_FIELDS:
        if name not in tel:
            continue
        col = tel[name].astype(np.float64)
        ok = ~np.isnan(col)
        if not ok.any():
            continue
        names.append(name)
        means.append(float(col[ok].mean()))
        maxes.append(float(col[ok].max()))
        m = ok & inside
        sums.append(np.bincount(pos[m], weights=col[m], minlength=n)[:n])
        counts.append(np.bincount(pos[m], minlength=n)[:n])
    throttled_pct = None
    if "throttle_reasons" in tel:
        # A bitmask: what matters is how often the clocks were held back at all.
        reasons = tel["throttle_reasons"]
        ok = ~np.isnan(reasons.astype(np.float64))
        if ok.any():
            throttled = reasons[ok].astype(np.int64) & ~1  # bit 0 is "GPU idle", not a throttle
            throttled_pct = round(100.0 * float((throttled != 0).mean()), 1)
    return TelemetrySums(
        samples=len(tel),
        steps=steps,
        in_step=np.bincount(pos[inside], minlength=n)[:n].astype(np.int64),
        fields=names,
        mean=np.asarray(means, dtype=np.float64),
        max=np.asarray(maxes, dtype=np.float64),
        step_sum=np.asarray(sums, dtype=np.float64).reshape(len(names), n),
        step_count=np.asarray(counts, dtype=np.int64).reshape(len(names), n),
        throttled_pct=throttled_pct,
    )


def telemetry_of(s: TelemetrySums | None, steps: list[int]) -> TelemetrySummary | None:
    if s is None:
        return None
    sel = _chosen(s.steps, steps)
    fields: dict[str, FieldStats] = {}
    counts = s.step_count[:, sel].sum(axis=1).tolist()
    sums = s.step_sum[:, sel].sum(axis=1).tolist()
    for name, mean, top, count, total in zip(
        s.fields, s.mean.tolist(), s.max.tolist(), counts, sums, strict=True
    ):
        fields[name] = FieldStats(
            mean=round(mean, 2),
            max=round(top, 2),
            mean_in_steps=round(total / count, 2) if count else None,
        )
    return TelemetrySummary(
        samples=s.samples,
        samples_in_steps=int(s.in_step[sel].sum()),
        fields=fields,
        throttled_pct=s.throttled_pct,
    )


# ---------------------------------------------------------------- GPU idle time


@dataclass
class IdleSums:
    """One rank's GPU idle time per step window, by HTA's categories (ns)."""

    steps: np.ndarray
    host_wait_ns: np.ndarray
    kernel_wait_ns: np.ndarray
    other_ns: np.ndarray


def idle_sums(rd: RankData, windows: dict[int, tuple[int, int]]) -> IdleSums | None:
    """None without kernels. A gap belongs to the step of the kernel that ends it."""
    gpu, cpu = rd.gpu, rd.cpu
    kernels = gpu["kind"] == gpu.code_of("kind", "kernel") if len(gpu) else np.zeros(0, dtype=bool)
    if not kernels.any():
        return None
    steps = window_steps(windows)
    n = len(steps)
    # Launch time of each kernel: the host API call with the same correlation id.
    launch_corr = cpu["correlation"]
    has = launch_corr >= 0
    order = np.argsort(launch_corr[has])
    corr_sorted = launch_corr[has][order]
    launch_ts_sorted = cpu["ts"][has][order]
    sums = np.zeros((3, n), dtype=np.int64)
    for stream in distinct(gpu["stream"][kernels]):
        m = kernels & (gpu["stream"] == stream)
        ts = gpu["ts"][m]
        end = ts + gpu["dur"][m]
        corr = gpu["correlation"][m]
        o = np.argsort(ts, kind="stable")
        ts, end, corr = ts[o], end[o], corr[o]
        if len(ts) < 2:
            continue
        prev_end = np.maximum.accumulate(end)[:-1]
        nxt = ts[1:]
        gap = nxt - prev_end
        # Only gaps inside the step windows count.
        pos = step_position(nxt, windows)
        counted = (gap > 0) & (pos >= 0)
        idx = np.searchsorted(corr_sorted, corr[1:])
        idx = np.clip(idx, 0, max(len(corr_sorted) - 1, 0))
        found = (corr_sorted[idx] == corr[1:]) if len(corr_sorted) else np.zeros(len(nxt), bool)
        launch = np.where(
            found, launch_ts_sorted[idx] if len(corr_sorted) else 0, np.iinfo(np.int64).min
        )
        hw = counted & (launch >= prev_end)
        kw = counted & ~hw & (gap <= KERNEL_WAIT_MAX_NS)
        ot = counted & ~hw & ~kw
        for k, mask in enumerate((hw, kw, ot)):
            sums[k] += np.bincount(pos[mask], weights=gap[mask], minlength=n)[:n].astype(np.int64)
    return IdleSums(steps, sums[0], sums[1], sums[2])


def idle_of(s: IdleSums | None, steps: list[int]) -> IdleBreakdown | None:
    if s is None:
        return None
    sel = _chosen(s.steps, steps)
    n_steps = max(int(sel.sum()), 1)

    def ms(v: np.ndarray) -> float:
        return round(int(v[sel].sum()) / NS_PER_MS / n_steps, 3)

    return IdleBreakdown(
        host_wait_ms=ms(s.host_wait_ns),
        kernel_wait_ms=ms(s.kernel_wait_ns),
        other_ms=ms(s.other_ns),
    )


# ---------------------------------------------------------------- kernels


@dataclass
class KernelSums:
    """One rank's kernels by name and step window: total ns and calls."""

    names: list[str]
    name: np.ndarray  # index into names
    step: np.ndarray  # step number
    dur_ns: np.ndarray
    calls: np.ndarray


def _sums_by_name(
    table: Table, m: np.ndarray, dur: np.ndarray, windows: dict[int, tuple[int, int]]
) -> KernelSums:
    """Rows ``m`` of ``table`` summed by (step window, name): ``dur`` ns and calls."""
    empty = np.zeros(0, dtype=np.int64)
    pos = step_position(table["ts"], windows)
    m = m & (pos >= 0)
    if not m.any():
        return KernelSums([], empty, empty, empty, empty)
    n_names = len(table.vocab["name"])
    key = pos[m] * n_names + table["name"][m]
    uniq = distinct(key)
    at = np.searchsorted(uniq, key)
    total = np.bincount(at, weights=dur[m].astype(np.float64), minlength=len(uniq))
    calls = np.bincount(at, minlength=len(uniq))
    codes = uniq % n_names
    used = distinct(codes)
    steps = window_steps(windows)
    return KernelSums(
        names=[table.vocab["name"][c] for c in used.tolist()],
        name=np.searchsorted(used, codes).astype(np.int64),
        step=steps[uniq // n_names],
        dur_ns=np.rint(total).astype(np.int64),
        calls=calls.astype(np.int64),
    )


def operator_sums(rd: RankData, windows: dict[int, tuple[int, int]]) -> KernelSums:
    """One rank's CPU operators (``cpu_op``) by name and step window: self time and calls.

    Self time is an operator's duration less that of the operators directly inside it
    on the same thread (``aten::linear`` less its ``aten::addmm``), so the sums add up
    to the time operators ran, nothing counted twice: where a CPU-only run's compute
    went, as kernels say it for a GPU.
    """
    cpu = rd.cpu
    empty = np.zeros(0, dtype=np.int64)
    if not len(cpu):
        return KernelSums([], empty, empty, empty, empty)
    ops = np.flatnonzero(cpu.vocab_mask("cat", lambda c: c == "cpu_op"))
    if not len(ops):
        return KernelSums([], empty, empty, empty, empty)
    ts, dur, tid = cpu["ts"][ops], cpu["dur"][ops], cpu["tid"][ops]
    order = np.lexsort((-dur, ts, tid))  # by thread, start, the enclosing one first
    # The walk runs over Python lists in that order: numpy's per-element reads cost ~4x
    # a list's, and this loop sees every operator (0.27 s of a 55 MB CPU-only trace).
    ts_l, dur_l, tid_l = ts[order].tolist(), dur[order].tolist(), tid[order].tolist()
    self_l = [float(d) for d in dur_l]
    stack: list[int] = []  # open operators (positions in that order) on this thread
    ends: list[int] = []  # their ends
    last_tid = None
    for k, start in enumerate(ts_l):
        if tid_l[k] != last_tid:
            stack.clear()
            ends.clear()
            last_tid = tid_l[k]
        while ends and ends[-1] <= start:
            stack.pop()
            ends.pop()
        d = dur_l[k]
        if stack:
            self_l[stack[-1]] -= d
        stack.append(k)
        ends.append(start + d)
    self_ns = np.empty(len(order), dtype=np.float64)
    self_ns[order] = self_l
    np.maximum(self_ns, 0.0, out=self_ns)
    full = np.zeros(len(cpu), dtype=np.float64)
    full[ops] = self_ns
    mask = np.zeros(len(cpu), dtype=bool)
    mask[ops] = True
    return _sums_by_name(cpu, mask, full, windows)


def kernel_sums(rd: RankData, windows: dict[int, tuple[int, int]]) -> KernelSums:
    gpu = rd.gpu
    if not len(gpu):
        empty = np.zeros(0, dtype=np.int64)
        return KernelSums([], empty, empty, empty, empty)
    return _sums_by_name(gpu, gpu["kind"] == gpu.code_of("kind", "kernel"), gpu["dur"], windows)


def top_kernels_of(
    sums: dict[int, KernelSums], steps: list[int], limit: int = 15
) -> list[KernelSummary]:
    """Kernels by mean time per step and rank, with their spread across ranks."""
    n_steps = max(len(steps), 1)
    ranks = list(sums)
    per_kernel: dict[str, dict[int, float]] = {}
    counts: dict[str, int] = {}
    total_all = 0.0
    for rank, s in sums.items():
        sel = _chosen(s.step, steps)
        if not sel.any():
            continue
        dur = np.bincount(s.name[sel], weights=s.dur_ns[sel].astype(np.float64))
        calls = np.bincount(s.name[sel], weights=s.calls[sel], minlength=len(dur))
        for code in np.flatnonzero(calls).tolist():
            name = s.names[code]
            ms = float(dur[code]) / NS_PER_MS / n_steps
            per_kernel.setdefault(name, {})[rank] = ms
            counts[name] = counts.get(name, 0) + int(calls[code])
            total_all += ms
    n_ranks = max(len(ranks), 1)
    rows: list[KernelSummary] = []
    for name, by_rank in per_kernel.items():
        vals = np.array([by_rank.get(r, 0.0) for r in ranks], dtype=np.float64)
        mean = float(vals.mean())
        rows.append(
            KernelSummary(
                name=name,
                ms_per_step=round(mean, 4),
                share_pct=round(100.0 * float(vals.sum()) / total_all, 2) if total_all else 0.0,
                calls_per_step=round(counts[name] / n_steps / n_ranks, 2),
                min_rank_ms=round(float(vals.min()), 4),
                max_rank_ms=round(float(vals.max()), 4),
                max_rank=int(ranks[int(vals.argmax())]),
                spread_cv=round(float(vals.std() / mean), 3) if mean > 0 else 0.0,
            )
        )
    rows.sort(key=lambda r: -r.ms_per_step)
    return rows[:limit]
