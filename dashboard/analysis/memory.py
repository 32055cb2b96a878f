"""Memory per rank: peaks, capacity and headroom, and the ranks that stand out.

Two sources. A trace recorded with ``profile_memory=True`` holds the allocator's
totals after every allocation and free (the ``memory`` table of ``kineto``: ts,
device_type, device_id, allocated, reserved, bytes); ``memory_sums(rank_data,
windows)`` reduces them, per device and step window, to the figures a digest
keeps (``MemorySums``). The light layer samples torch's CUDA caching allocator
(telemetry fields ``cuda_alloc_peak_b``, ``cuda_reserved_peak_b``: high-water
marks since the process started) and the process's RSS (``rss_b``).
``memory_result(...)`` turns both into one ``MemoryResult`` for the run and applies
the rules below; the findings are worded in ``wording``.

Rules (each a constant below, so the docs and the tests name the same numbers):

- imbalance: a rank's peak allocated is at least ``IMBALANCE_RATIO`` times the
  median of the other ranks' peaks on the same kind of device, and at least
  ``IMBALANCE_FLOOR_B`` above it. It applies to GPU memory and to the CPU
  tensors a trace records (torch's CPU allocator); a process's RSS is shown but
  judged by no rule (it counts libraries, caches and pages another process shares);
- near the limit: a GPU's peak reserved is at least ``NEAR_LIMIT_PCT`` of its
  memory (``deviceProperties``' ``totalGlobalMem``, else NVML's total);
- growth: over at least ``GROWTH_MIN_STEPS`` analysed steps, the allocated
  level at the start of the last step is at least ``GROWTH_FLOOR_B`` and
  ``GROWTH_SHARE`` of the peak above the level at the start of the first, and it
  rose from more than half of the steps to the next (a one-off, such as the
  optimizer's state made in the first step, is not growth).

The trace is preferred where a rank has it (figures over the analysed steps);
the light layer's peaks cover the whole run so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from rankscope.dashboard.analysis.imbalance import median
from rankscope.dashboard.analysis.results import TelemetrySummary
from rankscope.dashboard.analysis.wording import memory_size
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import isin

MiB = 1 << 20
GiB = 1 << 30
IMBALANCE_RATIO = 1.25
IMBALANCE_FLOOR_B = 256 * MiB
NEAR_LIMIT_PCT = 90.0
GROWTH_MIN_STEPS = 3
GROWTH_FLOOR_B = 256 * MiB
GROWTH_SHARE = 0.05

# The rules above in a user's words, from the same constants (the GPU page's caption).
RULES_TEXT = (
    f"Imbalance: a rank's peak allocated at least {IMBALANCE_RATIO:g}x the other ranks'"
    f" median and at least {memory_size(IMBALANCE_FLOOR_B)} above it (GPU memory, and CPU"
    " tensors from a trace; a process's RSS is shown, never judged). Near the limit: a"
    f" GPU's peak reserved at {NEAR_LIMIT_PCT:.0f}% of its memory or more. Growth: the"
    " allocated level at the start of each step rising by"
    f" {memory_size(GROWTH_FLOOR_B)} and {GROWTH_SHARE:.0%} of the peak or more over"
    f" {GROWTH_MIN_STEPS} steps or more. A trace's CPU figures count only the tensors"
    " allocated while the profiler recorded memory."
)

CPU, CUDA = 0, 1  # c10's DeviceType in a [memory] event
MemorySource = Literal["trace", "light_layer"]


@dataclass
class MemorySums:
    """One rank's ``[memory]`` figures per device and step window (a digest part).

    Arrays are devices x steps (``steps`` in the windows' order); a level is the
    allocator's total in bytes, -1 where nothing says (no event before or in it).
    """

    device_type: np.ndarray  # per device
    device_id: np.ndarray
    steps: np.ndarray
    events: np.ndarray  # [memory] events in each window
    peak_allocated: np.ndarray  # the highest level in each window (the one it began at too)
    peak_reserved: np.ndarray
    start_allocated: np.ndarray  # the level at each window's start


def _level_before(levels: np.ndarray, changes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The level just before event ``idx`` (after the event before it; before the first
    event, its level less its own change), -1 where the series is empty."""
    n = len(levels)
    if n == 0:
        return np.full(len(idx), -1, dtype=np.int64)
    first = max(int(levels[0] - changes[0]), 0)
    prev = levels[np.clip(idx - 1, 0, n - 1)]
    return np.where(idx > 0, prev, first).astype(np.int64)


def memory_sums(rd: RankData, windows: dict[int, tuple[int, int]]) -> MemorySums | None:
    """Per device and window of ``windows``: events, peaks and the level at its start.

    None when the rank's traces hold no ``[memory]`` event (recorded without
    ``profile_memory``).
    """
    mem = rd.memory
    if not len(mem) or not windows:
        return None
    steps = np.fromiter(windows, dtype=np.int64, count=len(windows))
    bounds = np.array(list(windows.values()), dtype=np.int64).reshape(-1, 2)
    keys = sorted(set(zip(mem["device_type"].tolist(), mem["device_id"].tolist(), strict=True)))
    shape = (len(keys), len(steps))
    events = np.zeros(shape, dtype=np.int64)
    peak_alloc = np.full(shape, -1, dtype=np.int64)
    peak_res = np.full(shape, -1, dtype=np.int64)
    start = np.full(shape, -1, dtype=np.int64)
    for i, (dtype, dev) in enumerate(keys):
        rows = (mem["device_type"] == dtype) & (mem["device_id"] == dev)
        ts, alloc = mem["ts"][rows], mem["allocated"][rows]
        res, change = mem["reserved"][rows], mem["bytes"][rows]
        lo = np.searchsorted(ts, bounds[:, 0], side="left")
        hi = np.searchsorted(ts, bounds[:, 1], side="left")
        events[i] = hi - lo
        start[i] = _level_before(alloc, change, lo)
        # reserved does not move on the event itself's account as allocated does
        res_start = np.where(lo > 0, res[np.clip(lo - 1, 0, max(len(res) - 1, 0))], -1)
        for j in range(len(steps)):
            a, b = int(lo[j]), int(hi[j])
            peak_alloc[i, j] = max(int(start[i, j]), int(alloc[a:b].max()) if b > a else -1)
            peak_res[i, j] = max(int(res_start[j]), int(res[a:b].max()) if b > a else -1)
    return MemorySums(
        device_type=np.array([k[0] for k in keys], dtype=np.int64),
        device_id=np.array([k[1] for k in keys], dtype=np.int64),
        steps=steps,
        events=events,
        peak_allocated=peak_alloc,
        peak_reserved=peak_res,
        start_allocated=start,
    )


# ---------------------------------------------------------------- the run's result


class DeviceMemory(msgspec.Struct, frozen=True, kw_only=True):
    """One rank's memory on one device (bytes; None where the source cannot tell)."""

    rank: int
    device: str  # "cuda:0", "cpu" (torch's CPU tensors, from a trace), "host" (RSS)
    source: MemorySource
    peak_allocated_b: int
    peak_reserved_b: int | None  # None on the CPU and for RSS
    capacity_b: int | None  # the GPU's memory
    headroom_b: int | None  # capacity less peak reserved
    reserved_pct: float | None  # peak reserved as a share of capacity
    # the level at the start of the last analysed step less the first's (trace only)
    growth_b: int | None = None
    events: int = 0  # [memory] events in the analysed steps (0: light layer)


class MemoryImbalance(msgspec.Struct, frozen=True, kw_only=True):
    """A rank whose peak allocated stands out from the other ranks' (``IMBALANCE_*``)."""

    rank: int
    device: str
    source: MemorySource
    peak_allocated_b: int
    others_median_b: int
    ratio: float
    reserved_pct: float | None  # how close the rank is to its GPU's capacity


class MemoryGrowth(msgspec.Struct, frozen=True, kw_only=True):
    """A rank whose allocated level rose from step to step (``GROWTH_*``)."""

    rank: int
    device: str
    first_step: int
    last_step: int
    start_b: int  # the level at the start of the first analysed step
    end_b: int  # at the start of the last
    rising_steps: int  # steps after which the level was higher than before
    of_steps: int  # step-to-step changes seen


class MemoryResult(msgspec.Struct, frozen=True, kw_only=True):
    """The run's memory view: every rank's devices and what the rules found."""

    devices: list[DeviceMemory] = []
    # which source the rules judged GPU memory by (None: neither has GPU figures)
    gpu_source: MemorySource | None = None
    imbalance: list[MemoryImbalance] = []
    near_limit: list[DeviceMemory] = []
    growth: list[MemoryGrowth] = []

    @property
    def has_data(self) -> bool:
        """Whether any rank has allocator figures (a trace's or torch's; RSS does not count)."""
        return any(d.device != "host" for d in self.devices)


def _device_name(device_type: int, device_id: int) -> str:
    if device_type == CUDA:
        return f"cuda:{device_id}"
    return "cpu" if device_type == CPU else f"device{device_type}:{device_id}"


def _capacity(meta: dict[str, object], device_id: int, nvml_total: float | None) -> int | None:
    caps = meta.get("device_memory")
    if isinstance(caps, dict):
        v = caps.get(str(device_id))
        if isinstance(v, int) and v > 0:
            return v
    return int(nvml_total) if nvml_total else None


def _with_capacity(
    rank: int,
    device: str,
    source: MemorySource,
    peak_alloc: int,
    peak_res: int | None,
    capacity: int | None,
    growth: int | None = None,
    events: int = 0,
) -> DeviceMemory:
    headroom = pct = None
    if capacity and peak_res is not None and peak_res >= 0:
        headroom = capacity - peak_res
        pct = round(100.0 * peak_res / capacity, 1)
    return DeviceMemory(
        rank=rank,
        device=device,
        source=source,
        peak_allocated_b=peak_alloc,
        peak_reserved_b=peak_res,
        capacity_b=capacity,
        headroom_b=headroom,
        reserved_pct=pct,
        growth_b=growth,
        events=events,
    )


def _field_max(t: TelemetrySummary | None, name: str) -> float | None:
    stats = t.fields.get(name) if t is not None else None
    return stats.max if stats is not None and stats.max == stats.max else None


def _trace_devices(
    rank: int,
    s: MemorySums,
    steps: list[int],
    meta: dict[str, object],
    nvml_total: float | None,
) -> tuple[list[DeviceMemory], list[MemoryGrowth]]:
    sel = isin(s.steps, np.asarray(steps, dtype=np.int64)) if steps else s.steps == s.steps
    if not sel.any():
        return [], []
    devices, growth = [], []
    chosen = s.steps[sel]
    for i in range(len(s.device_type)):
        dtype, dev = int(s.device_type[i]), int(s.device_id[i])
        peak_a = int(s.peak_allocated[i, sel].max())
        if peak_a < 0:
            continue
        name = _device_name(dtype, dev)
        peak_r = int(s.peak_reserved[i, sel].max()) if dtype == CUDA else None
        cap = _capacity(meta, dev, nvml_total) if dtype == CUDA else None
        starts = s.start_allocated[i, sel]
        rise = None
        if len(starts) >= 2 and (starts >= 0).all():
            rise = int(starts[-1] - starts[0])
            diffs = np.diff(starts)
            rising = int((diffs > 0).sum())
            if (
                len(starts) >= GROWTH_MIN_STEPS
                and rise >= max(GROWTH_FLOOR_B, GROWTH_SHARE * peak_a)
                and rising * 2 > len(diffs)
            ):
                growth.append(
                    MemoryGrowth(
                        rank=rank,
                        device=name,
                        first_step=int(chosen[0]),
                        last_step=int(chosen[-1]),
                        start_b=int(starts[0]),
                        end_b=int(starts[-1]),
                        rising_steps=rising,
                        of_steps=len(diffs),
                    )
                )
        events = int(s.events[i, sel].sum())
        devices.append(_with_capacity(rank, name, "trace", peak_a, peak_r, cap, rise, events))
    return devices, growth


def _light_devices(rank: int, t: TelemetrySummary | None) -> list[DeviceMemory]:
    out = []
    alloc = _field_max(t, "cuda_alloc_peak_b")
    if alloc is not None:
        res = _field_max(t, "cuda_reserved_peak_b")
        total = _field_max(t, "mem_total_b")
        out.append(
            _with_capacity(
                rank,
                "cuda",
                "light_layer",
                int(alloc),
                None if res is None else int(res),
                int(total) if total else None,
            )
        )
    rss = _field_max(t, "rss_b")
    if rss is not None:
        out.append(_with_capacity(rank, "host", "light_layer", int(rss), None, None))
    return out


def device_kind(device: str) -> str:
    """ "cuda" of "cuda:3"; "cpu" and "host" as they are."""
    return device.split(":", 1)[0]


def _imbalance(devices: list[DeviceMemory]) -> list[MemoryImbalance]:
    """The ranks whose peak allocated stands out on one kind of device (``IMBALANCE_*``)."""
    by_rank: dict[int, DeviceMemory] = {}
    for d in devices:  # a rank's largest device of the kind (one GPU a rank, usually)
        if d.rank not in by_rank or d.peak_allocated_b > by_rank[d.rank].peak_allocated_b:
            by_rank[d.rank] = d
    if len(by_rank) < 2:
        return []
    out = []
    for r, d in sorted(by_rank.items()):
        others = median([float(o.peak_allocated_b) for q, o in by_rank.items() if q != r])
        excess = d.peak_allocated_b - others
        if excess >= IMBALANCE_FLOOR_B and d.peak_allocated_b >= IMBALANCE_RATIO * others:
            out.append(
                MemoryImbalance(
                    rank=r,
                    device=d.device,
                    source=d.source,
                    peak_allocated_b=d.peak_allocated_b,
                    others_median_b=int(others),
                    ratio=round(d.peak_allocated_b / others, 2) if others > 0 else float("inf"),
                    reserved_pct=d.reserved_pct,
                )
            )
    return out


def memory_result(
    sums: dict[int, MemorySums | None],
    metas: dict[int, dict[str, object]],
    telemetry: dict[int, TelemetrySummary | None],
    steps: list[int],
) -> MemoryResult:
    """The run's memory view from each rank's digest part (``sums``), its trace's
    metadata (``device_memory``) and its telemetry summary, over ``steps``."""
    devices: list[DeviceMemory] = []
    growth: list[MemoryGrowth] = []
    for r in sorted(set(sums) | set(telemetry)):
        tel = telemetry.get(r)
        s = sums.get(r)
        if s is not None:
            found, grew = _trace_devices(
                r, s, steps, metas.get(r, {}), _field_max(tel, "mem_total_b")
            )
            devices += found
            growth += grew
        devices += _light_devices(r, tel)
    trace_gpu = [d for d in devices if d.source == "trace" and device_kind(d.device) == "cuda"]
    light_gpu = [d for d in devices if d.source == "light_layer" and d.device == "cuda"]
    # One source judges GPU memory, never a mix (a window's peak is not the whole run's):
    # the trace where any rank has it, else the light layer.
    gpu = trace_gpu or light_gpu
    gpu_source: MemorySource | None = "trace" if trace_gpu else "light_layer" if gpu else None
    cpu = [d for d in devices if d.source == "trace" and d.device == "cpu"]
    return MemoryResult(
        devices=devices,
        gpu_source=gpu_source,
        imbalance=_imbalance(gpu) + _imbalance(cpu),
        near_limit=[
            d for d in gpu if d.reserved_pct is not None and d.reserved_pct >= NEAR_LIMIT_PCT
        ],
        growth=growth,
    )
