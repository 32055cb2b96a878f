"""HTA-compatible metrics, defined exactly as Holistic Trace Analysis defines them.

So users can check rankscope against a tool they already trust:

``temporal_breakdown(rank_data, n_profiler_steps)`` -> ``TemporalBreakdown``
(idle_pct, compute_pct, non_compute_pct) of the *GPU span* (first GPU event
start to last GPU event end), or None without GPU events. As in HTA: GPU events
are those with a stream (kernels, memcpy, memset, stream syncs); timestamps are
rounded to whole microseconds (start up, end down); when the run has two or more ProfilerStep
ranges, only GPU work launched (by correlation) before the start of the last
ProfilerStep counts; compute kernels are those that are not NCCL kernels and
have no Memcpy/Memset/Sync in their name. Values are rounded to 2 decimals.

``comm_overlap_pct(rank_data, n_profiler_steps)`` -> the share of (merged)
NCCL kernel time that overlaps (merged) compute kernel time, in percent;
None without NCCL kernels (HTA gives NaN).
"""

from __future__ import annotations

import re

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import NON_COMPUTE_KERNEL_RE
from rankscope.dashboard.analysis.results import TemporalBreakdown
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import distinct, isin

_NCCL_RE = re.compile(r"^nccl.*Kernel")


def _is_step(name: str) -> bool:
    return "ProfilerStep" in name


def _hta_gpu_events(
    rd: RankData, filter_last_step: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start_us, end_us, name code) of the GPU events HTA would keep."""
    gpu, cpu = rd.gpu, rd.cpu
    stream_ok = gpu["stream"] >= 0
    ts_ns, end_ns = gpu["ts"], gpu["ts"] + gpu["dur"]
    keep = stream_ok.copy()
    if filter_last_step:
        starts = [cpu["ts"][cpu.vocab_mask("name", _is_step)]]
        if len(rd.gpu_ann):
            starts.append(rd.gpu_ann["ts"][rd.gpu_ann.vocab_mask("name", _is_step)])
        all_starts = np.concatenate(starts)
        if len(all_starts):
            last_start = all_starts.max()
            launched = distinct(
                cpu["correlation"][(cpu["ts"] < last_start) & (cpu["correlation"] >= 0)]
            )
            corr = gpu["correlation"]
            by_launch = (corr >= 0) & isin(corr, launched)
            # HTA files GPU events without a correlation among the CPU events.
            no_corr = (corr < 0) & (ts_ns < last_start)
            keep &= by_launch | no_corr
    start_us = -((-ts_ns[keep]) // 1000)  # ceil
    end_us = end_ns[keep] // 1000  # floor
    return start_us, np.maximum(end_us, start_us), gpu["name"][keep]


def _compute_mask(rd: RankData, codes: np.ndarray) -> np.ndarray:
    vocab = rd.gpu.vocab["name"]
    compute = np.fromiter(
        (not NON_COMPUTE_KERNEL_RE.match(n) for n in vocab), dtype=bool, count=len(vocab)
    )
    return compute[codes] if len(vocab) else np.zeros(0, dtype=bool)


def temporal_breakdown(rd: RankData, filter_last_step: bool) -> TemporalBreakdown | None:
    s, e, codes = _hta_gpu_events(rd, filter_last_step)
    if len(s) == 0:
        return None
    merged = iv.union(s, e)
    span = int(merged[1][-1] - merged[0][0])
    if span <= 0:
        return None
    busy = iv.length(merged)
    cm = _compute_mask(rd, codes)
    compute = iv.length(iv.union(s[cm], e[cm]))
    idle = span - busy
    non_compute = span - compute - idle
    return TemporalBreakdown(
        idle_pct=round(100.0 * idle / span, 2),
        compute_pct=round(100.0 * compute / span, 2),
        non_compute_pct=round(100.0 * non_compute / span, 2),
    )


def comm_overlap_pct(rd: RankData, filter_last_step: bool) -> float | None:
    s, e, codes = _hta_gpu_events(rd, filter_last_step)
    vocab = rd.gpu.vocab["name"]
    if not len(vocab) or not len(s):
        return None
    is_comm = np.fromiter((bool(_NCCL_RE.match(n)) for n in vocab), dtype=bool, count=len(vocab))[
        codes
    ]
    if not is_comm.any():
        return None
    cm = _compute_mask(rd, codes)
    comm = iv.union(s[is_comm], e[is_comm])
    comp = iv.union(s[cm], e[cm])
    total = iv.length(comm)
    if total <= 0:
        return None
    return round(100.0 * iv.overlap_length(comm, comp) / total, 2)


def profiler_step_names(rd: RankData) -> set[str]:
    """The ``ProfilerStep`` names in one rank's symbol tables (host and GPU annotations)."""
    names = {n for n in rd.cpu.vocab.get("name", []) if _is_step(n)}
    return names | {n for n in rd.gpu_ann.vocab.get("name", []) if _is_step(n)}


def has_multiple_profiler_steps(names: set[str]) -> bool:
    """HTA filters by the last ProfilerStep when its run-wide symbol table (``names``,
    every rank's ``profiler_step_names``) has >= 2 of them."""
    return len(names) >= 2
