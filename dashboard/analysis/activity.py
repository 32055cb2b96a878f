"""What each rank was doing, as merged interval sets, and its step windows.

``rank_activity(rank_data)`` classifies one rank's events once:

- ``gpu``: any GPU work (kernels, memcpy, memset; not syncs)
- ``compute``: compute kernels (HTA's rule: not NCCL, not Memcpy/Memset/Sync), or,
  in a trace without GPU events, host operators outside communication and data loading
- ``comm``: communication (NCCL kernels, else gloo:/nccl: host ranges; in a job
  without a GPU, a point-to-point range counts only where the rank runs no
  operator: an ``isend``/``irecv`` in flight while the rank computes is not
  waiting, and its range must not hide that compute)
- ``p2p``: the part of ``comm`` in point-to-point sends and receives (a
  pipeline stage's time blocked on its neighbours)
- ``memcpy``: memcpy and memset on the GPU
- ``data``: data loading (``data_loading``-like annotations, DataLoader ``__next__``)
- ``host``: host operators and CUDA API calls (not synchronisation waits)

``step_windows(rank_data)`` gives step -> (start_ns, end_ns) from ``ProfilerStep#N``
ranges, else from the collector's step timer inside the trace's span, else one
window -1 covering the whole trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import isin
from rankscope.profiler.layout import MAX_STEP  # larger numbers are not steps: skipped

# HTA's definition of a compute kernel, so our compute time is theirs.
NON_COMPUTE_KERNEL_RE = re.compile(r"(^nccl.*Kernel)|(^rccl.*Kernel)|(.*Memcpy)|(^Memset)|(.*Sync)")
DATA_LOADING_RE = re.compile(
    r"data[_ ]?load|dataloader|_DataLoaderIter|enumerate\(DataLoader\)|fetch_batch|get_batch",
    re.IGNORECASE,
)
PROFILER_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
# The comms table's names of point-to-point operations (ingest's canonical names).
P2P_NAMES = frozenset({"send", "recv", "isend", "irecv"})
# Between two of a rank's operators, a gap this short is Python running its loop, not
# waiting (a blocked receive lasts as long as the neighbour takes, milliseconds).
OP_GAP_NS = 200_000


def profiler_step(name: str) -> int | None:
    """N of a ``ProfilerStep#N`` name, or None (another name, or N beyond ``MAX_STEP``)."""
    m = PROFILER_STEP_RE.match(name)
    if m is None or len(m.group(1)) > 16:
        return None
    step = int(m.group(1))
    return step if step <= MAX_STEP else None


def oversized_profiler_steps(names: Iterable[str]) -> int:
    """How many ``ProfilerStep#N`` names hold an N too large to be a step (skipped)."""
    return sum(1 for n in names if PROFILER_STEP_RE.match(n) and profiler_step(n) is None)


def malformed_profiler_steps(names: Iterable[str]) -> list[str]:
    """The ``ProfilerStep#…`` names whose number is no step at all (``#-4``, ``#nan``,
    ``#1.5``, ``#``): skipped like any other range, and named by the caller."""
    return sorted(
        n for n in set(names) if n.startswith("ProfilerStep#") and not PROFILER_STEP_RE.match(n)
    )


_HOST_CATS = {"cpu_op", "cuda_runtime", "cuda_driver", "python_function", "cpu_instant_event"}
_WAIT_API_RE = re.compile(
    r"Synchronize|EventQuery|StreamWait|cudaMemcpy(?!Async)|Wait", re.IGNORECASE
)


@dataclass
class RankActivity:
    rank: int
    has_gpu: bool
    gpu: iv.Intervals
    compute: iv.Intervals
    comm: iv.Intervals
    memcpy: iv.Intervals
    data: iv.Intervals
    host: iv.Intervals
    p2p: iv.Intervals = (np.empty(0, np.int64), np.empty(0, np.int64))


def _ends(ts: np.ndarray, dur: np.ndarray) -> np.ndarray:
    return ts + dur


def rank_activity(rd: RankData) -> RankActivity:
    gpu, cpu, comms = rd.gpu, rd.cpu, rd.comms
    has_gpu = len(gpu) > 0
    gts, gend = gpu["ts"], _ends(gpu["ts"], gpu["dur"])
    kind = gpu.strings("kind") if len(gpu) else np.array([], dtype=object)
    work = kind != "sync"
    is_kernel = kind == "kernel"
    non_compute = gpu.vocab_mask("name", NON_COMPUTE_KERNEL_RE.match)
    compute_mask = is_kernel & ~non_compute
    mem_mask = (kind == "memcpy") | (kind == "memset")

    cts, cend = cpu["ts"], _ends(cpu["ts"], cpu["dur"])
    data_mask = cpu.vocab_mask("name", DATA_LOADING_RE.search)
    cat_host = cpu.vocab_mask("cat", lambda c: c in _HOST_CATS)
    not_wait = ~cpu.vocab_mask("name", _WAIT_API_RE.search)
    is_comm_name = cpu.vocab_mask(
        "name", lambda n: n.startswith(("gloo:", "nccl:", "c10d::", "record_param_comms"))
    )
    host_mask = cat_host & not_wait & ~data_mask & ~is_comm_name

    p2p_mask = (
        comms.vocab_mask("name", lambda n: n in P2P_NAMES)
        if len(comms)
        else np.zeros(0, dtype=bool)
    )
    comm_end = _ends(comms["ts"], comms["dur"])
    data = iv.union(cts[data_mask], cend[data_mask])
    host = iv.union(cts[host_mask], cend[host_mask])
    p2p = iv.union(comms["ts"][p2p_mask], comm_end[p2p_mask])
    if has_gpu:
        comm = iv.union(comms["ts"], comm_end)
        compute = iv.union(gts[compute_mask], gend[compute_mask])
    else:
        # A CPU-only job computes on the host: its operators outside comm and data.
        ops = cpu.vocab_mask("cat", lambda c: c == "cpu_op") & ~is_comm_name & ~data_mask
        op_time = iv.union(cts[ops], cend[ops])
        # An isend/irecv whose wait comes later (torch.distributed.pipelining) spans
        # the compute issued meanwhile: only the time no operator ran is waiting, and
        # the interpreter's short gaps between a loop's operators are that compute too.
        p2p = iv.subtract(p2p, iv.close_gaps(op_time, OP_GAP_NS))
        comm = iv.combine(iv.union(comms["ts"][~p2p_mask], comm_end[~p2p_mask]), p2p)
        compute = iv.subtract(iv.subtract(op_time, comm), data)
    return RankActivity(
        rank=rd.rank,
        has_gpu=has_gpu,
        gpu=iv.union(gts[work], gend[work]),
        compute=compute,
        comm=comm,
        memcpy=iv.union(gts[mem_mask], gend[mem_mask]),
        data=data,
        host=host,
        p2p=p2p,
    )


def profiler_steps(rd: RankData) -> dict[int, tuple[int, int]]:
    cpu = rd.cpu
    out: dict[int, tuple[int, int]] = {}
    if not len(cpu):
        return out
    step_of_code = {}
    for code, name in enumerate(cpu.vocab["name"]):
        step = profiler_step(name)
        if step is not None:
            step_of_code[code] = step
    if not step_of_code:
        return out
    codes = cpu["name"]
    mask = isin(codes, np.array(list(step_of_code), dtype=codes.dtype))
    for code, ts, dur in zip(codes[mask], cpu["ts"][mask], cpu["dur"][mask], strict=True):
        step = step_of_code[int(code)]
        start, end = int(ts), int(ts + dur)
        if step in out:  # a step split over two windows: keep its full extent
            start, end = min(start, out[step][0]), max(end, out[step][1])
        out[step] = (start, end)
    return out


def trace_span(rd: RankData) -> tuple[int, int] | None:
    starts = [t["ts"].min() for t in (rd.cpu, rd.gpu) if len(t)]
    ends = [(t["ts"] + t["dur"]).max() for t in (rd.cpu, rd.gpu) if len(t)]
    if not starts:
        return None
    return int(min(starts)), int(max(ends))


def step_windows(rd: RankData) -> tuple[dict[int, tuple[int, int]], str]:
    """Step windows and where they came from: profiler | collector | whole_trace | none."""
    steps = profiler_steps(rd)
    if steps:
        return steps, "profiler"
    span = trace_span(rd)
    # A rank with no trace has no windows: its step log is not read for nothing.
    marks = rd.step_marks if span is not None else None
    if span is not None and marks is not None and len(marks) and "start_ns" in marks:
        lo, hi = span
        inside = (marks["start_ns"] >= lo) & (marks["end_ns"] <= hi)
        if inside.any():
            return (
                {
                    int(s): (int(a), int(b))
                    for s, a, b in zip(
                        marks["step"][inside],
                        marks["start_ns"][inside],
                        marks["end_ns"][inside],
                        strict=True,
                    )
                },
                "collector",
            )
    if span is not None:
        return {-1: span}, "whole_trace"
    return {}, "none"
