"""How busy each GPU was: from the trace, and from NVML/GPM telemetry.

``gpu_utilisation(rank_data, activity, windows, steps)`` -> ``GpuUtilisation``:
``gpu_busy_pct`` (union of all GPU activity over the analysed step time),
``sm_efficiency_pct`` (kernel-time-weighted mean of min(blocks per SM, 1): the
share of SMs a kernel could keep busy, HTA's estimate), ``achieved_occupancy_pct``
(kernel-time-weighted Kineto estimate), and ``streams``: per stream busy ms per
step and kernel count. None values where the trace cannot tell.

``telemetry_summary(rank_data, windows, steps)`` -> ``TelemetrySummary``: NVML/GPM
(or host) means and maxima over the whole run and means over the analysed steps,
or None without samples.

``idle_breakdown(rank_data, windows, steps)`` -> ``IdleBreakdown``: GPU idle time per step split
as HTA does: ``host_wait_ms`` (the next kernel was launched only after the GPU
ran dry), ``kernel_wait_ms`` (short gaps between queued kernels: launch
overhead), ``other_ms`` (the rest: syncs, cross-stream dependencies).

``top_kernels(ranks, windows, steps)`` -> ``KernelSummary``s by total time with
their spread across ranks.
"""

from __future__ import annotations

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
from rankscope.dashboard.ingest.table import distinct
from rankscope.profiler.telemetry import HOST_FIELDS, NVML_FIELDS, PROCESS_FIELDS

NS_PER_MS = 1e6
KERNEL_WAIT_MAX_NS = 50_000  # gaps between queued kernels shorter than this are launch overhead

# The collector's and the monitor's field names: one definition, in rankscope.profiler.telemetry.
TELEMETRY_FIELDS = tuple(
    f for f in (*NVML_FIELDS, *HOST_FIELDS, *PROCESS_FIELDS) if f != "throttle_reasons"
)


def _window_mask(
    ts: np.ndarray, windows: dict[int, tuple[int, int]], steps: list[int]
) -> np.ndarray:
    mask = np.zeros(len(ts), dtype=bool)
    for s in steps:
        if s in windows:
            lo, hi = windows[s]
            mask |= (ts >= lo) & (ts < hi)
    return mask


def _wall_ns(windows: dict[int, tuple[int, int]], steps: list[int]) -> int:
    return sum(windows[s][1] - windows[s][0] for s in steps if s in windows)


def gpu_utilisation(
    rd: RankData, act: RankActivity, windows: dict[int, tuple[int, int]], steps: list[int]
) -> GpuUtilisation:
    wall = _wall_ns(windows, steps)
    if not act.has_gpu or wall <= 0:
        return GpuUtilisation()
    busy = sum(iv.clipped_length(act.gpu, *windows[s]) for s in steps if s in windows)
    gpu = rd.gpu
    # Codes, not decoded strings, and one window mask: this runs once per rank.
    is_kernel = gpu["kind"] == gpu.code_of("kind", "kernel")
    kernels = is_kernel & _window_mask(gpu["ts"], windows, steps)
    dur = gpu["dur"][kernels].astype(np.float64)
    bps = gpu["blocks_per_sm"][kernels]
    occ = gpu["occupancy_pct"][kernels]
    have_bps = ~np.isnan(bps)
    sm_eff = (
        float(100.0 * (np.minimum(bps[have_bps], 1.0) * dur[have_bps]).sum() / dur[have_bps].sum())
        if have_bps.any() and dur[have_bps].sum() > 0
        else None
    )
    have_occ = ~np.isnan(occ)
    occupancy = (
        float((occ[have_occ] * dur[have_occ]).sum() / dur[have_occ].sum())
        if have_occ.any() and dur[have_occ].sum() > 0
        else None
    )
    n_steps = max(sum(1 for s in steps if s in windows), 1)
    streams = []
    work = gpu["kind"] != gpu.code_of("kind", "sync")
    ts, end, stream_col = gpu["ts"], gpu["ts"] + gpu["dur"], gpu["stream"]
    order = np.argsort(stream_col, kind="stable")
    by_stream = stream_col[order]
    for stream in distinct(stream_col[work]):
        rows = order[
            np.searchsorted(by_stream, stream, "left") : np.searchsorted(by_stream, stream, "right")
        ]
        rows = rows[work[rows]]
        merged = iv.union(ts[rows], end[rows])
        busy_s = sum(iv.clipped_length(merged, *windows[s]) for s in steps if s in windows)
        streams.append(
            StreamBusy(
                stream=int(stream),
                busy_ms_per_step=round(busy_s / NS_PER_MS / n_steps, 3),
                busy_pct=round(100.0 * busy_s / wall, 2),
                kernels=int(kernels[rows].sum()),
            )
        )
    return GpuUtilisation(
        gpu_busy_pct=round(100.0 * busy / wall, 2),
        sm_efficiency_pct=None if sm_eff is None else round(sm_eff, 2),
        achieved_occupancy_pct=None if occupancy is None else round(occupancy, 2),
        streams=streams,
    )


def telemetry_summary(
    rd: RankData, windows: dict[int, tuple[int, int]], steps: list[int]
) -> TelemetrySummary | None:
    tel = rd.telemetry
    if not len(tel) or "ts_ns" not in tel:
        return None
    in_steps = (
        _window_mask(tel["ts_ns"], windows, steps) if windows else np.zeros(len(tel), dtype=bool)
    )
    fields: dict[str, FieldStats] = {}
    for field in TELEMETRY_FIELDS:
        if field not in tel:
            continue
        col = tel[field].astype(np.float64)
        ok = ~np.isnan(col)
        if not ok.any():
            continue
        fields[field] = FieldStats(
            mean=round(float(col[ok].mean()), 2),
            max=round(float(col[ok].max()), 2),
            mean_in_steps=round(float(col[ok & in_steps].mean()), 2)
            if (ok & in_steps).any()
            else None,
        )
    throttled_pct = None
    if "throttle_reasons" in tel:
        # A bitmask: what matters is how often the clocks were held back at all.
        reasons = tel["throttle_reasons"]
        ok = ~np.isnan(reasons.astype(np.float64))
        if ok.any():
            throttled = reasons[ok].astype(np.int64) & ~1  # bit 0 is "GPU idle", not a throttle
            throttled_pct = round(100.0 * float((throttled != 0).mean()), 1)
    return TelemetrySummary(
        samples=len(tel),
        samples_in_steps=int(in_steps.sum()),
        fields=fields,
        throttled_pct=throttled_pct,
    )


def idle_breakdown(
    rd: RankData, windows: dict[int, tuple[int, int]], steps: list[int]
) -> IdleBreakdown | None:
    gpu, cpu = rd.gpu, rd.cpu
    kernels = gpu.strings("kind") == "kernel" if len(gpu) else np.zeros(0, dtype=bool)
    if not kernels.any():
        return None
    n_steps = max(sum(1 for s in steps if s in windows), 1)
    # Launch time of each kernel: the host API call with the same correlation id.
    launch_corr = cpu["correlation"]
    has = launch_corr >= 0
    order = np.argsort(launch_corr[has])
    corr_sorted = launch_corr[has][order]
    launch_ts_sorted = cpu["ts"][has][order]
    host_wait = kernel_wait = other = 0
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
        pos = gap > 0
        # Only gaps inside the analysed steps count.
        pos &= _window_mask(nxt, windows, steps)
        idx = np.searchsorted(corr_sorted, corr[1:])
        idx = np.clip(idx, 0, max(len(corr_sorted) - 1, 0))
        found = (
            (len(corr_sorted) > 0) & (corr_sorted[idx] == corr[1:])
            if len(corr_sorted)
            else np.zeros(len(nxt), bool)
        )
        launch = np.where(
            found, launch_ts_sorted[idx] if len(corr_sorted) else 0, np.iinfo(np.int64).min
        )
        hw = pos & (launch >= prev_end)
        kw = pos & ~hw & (gap <= KERNEL_WAIT_MAX_NS)
        ot = pos & ~hw & ~kw
        host_wait += int(gap[hw].sum())
        kernel_wait += int(gap[kw].sum())
        other += int(gap[ot].sum())
    return IdleBreakdown(
        host_wait_ms=round(host_wait / NS_PER_MS / n_steps, 3),
        kernel_wait_ms=round(kernel_wait / NS_PER_MS / n_steps, 3),
        other_ms=round(other / NS_PER_MS / n_steps, 3),
    )


def top_kernels(
    ranks: dict[int, RankData],
    windows: dict[int, dict[int, tuple[int, int]]],
    steps: list[int],
    limit: int = 15,
) -> list[KernelSummary]:
    """Kernels by mean time per step and rank, with their spread across ranks."""
    per_kernel: dict[str, dict[int, float]] = {}
    counts: dict[str, int] = {}
    total_all = 0.0
    n_steps = max(len(steps), 1)
    for rank, rd in ranks.items():
        gpu = rd.gpu
        if not len(gpu):
            continue
        m = (gpu.strings("kind") == "kernel") & _window_mask(
            gpu["ts"], windows.get(rank, {}), steps
        )
        if not m.any():
            continue
        codes = gpu["name"][m]
        sums = np.bincount(
            codes, weights=gpu["dur"][m].astype(np.float64), minlength=len(gpu.vocab["name"])
        )
        cnts = np.bincount(codes, minlength=len(gpu.vocab["name"]))
        for code in np.flatnonzero(cnts):
            name = gpu.vocab["name"][code]
            per_kernel.setdefault(name, {})[rank] = float(sums[code]) / NS_PER_MS / n_steps
            counts[name] = counts.get(name, 0) + int(cnts[code])
            total_all += float(sums[code]) / NS_PER_MS / n_steps
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
                max_rank=int(list(ranks)[int(vals.argmax())]),
                spread_cv=round(float(vals.std() / mean), 3) if mean > 0 else 0.0,
            )
        )
    rows.sort(key=lambda r: -r.ms_per_step)
    return rows[:limit]
