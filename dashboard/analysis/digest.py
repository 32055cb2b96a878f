"""A rank's digest: everything the cross-rank analysis reads of one rank, a few KB.

``digest_of(rank_data)`` reduces one rank's raw tables (tens of thousands of
events) to what ``analyse`` needs, per step window, so that a report over 1,024
ranks reads 1,024 small files instead of every event:

- ``windows`` and where they came from (``activity.step_windows``);
- ``breakdown``: the per-step wall-time breakdown (``breakdown.step_breakdown``,
  all columns but ``comm_wait_ms``, which needs the other ranks);
- ``comms``: the rank's collectives (the input of ``comms.match_collectives``);
- ``coverage``: how much of each activity component (``diagnosis.Components``)
  lies before each collective's start and end and each window's start: the
  diagnosis' gaps always begin and end at those times, so its per-gap
  breakdown is two lookups (``CoverageLookup``);
- the per-step sums behind GPU utilisation, idle time and top kernels
  (``utilisation.*Sums``), and HTA's metrics both ways (with and without the
  last-ProfilerStep filter, chosen run-wide);
- ``memory``: the ``[memory]`` figures per device and step window of a trace
  recorded with ``profile_memory`` (``memory.MemorySums``; None without).

Digests are cached beside the trace tables (``cache.store_blob``), keyed on the
identity (path, size, mtime) of the rank's trace files and on
``DIGEST_VERSION``, so a digest made while the job still runs (by ``rankscope
ingest`` on the node) stays good while the step timer and telemetry files
grow. The one exception, windows taken from the step timer (a trace without
ProfilerStep ranges), records the step file's identity and is made again when
it changes. Telemetry sums (``telemetry_sums_of``) are cached apart, keyed on
the telemetry file and the windows. A digest that cannot be read back whole is
made again, never trusted. The encoding is msgpack with raw little-endian arrays (no pickle: a
shared cache directory must not be a way to run code).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import msgspec
import numpy as np

from rankscope.dashboard.analysis import hta_compat, utilisation
from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import RankActivity, rank_activity, step_windows
from rankscope.dashboard.analysis.breakdown import step_breakdown
from rankscope.dashboard.analysis.diagnosis import (
    COMPONENT_NAMES,
    Components,
    Coverage,
    coverage_upto,
)
from rankscope.dashboard.analysis.memory import MemorySums, memory_sums
from rankscope.dashboard.analysis.results import HtaMetrics, TemporalBreakdown
from rankscope.dashboard.ingest import cache
from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import Table, distinct

T = TypeVar("T")

# Bump whenever what a digest holds, or how any of it is computed, changes.
DIGEST_VERSION = 5  # 5: memory; the torch allocator's telemetry fields


@dataclass
class RankDigest:
    rank: int
    has_gpu: bool
    windows: dict[int, tuple[int, int]]
    source: str  # profiler | collector | whole_trace | none
    breakdown: Table  # step + BREAKDOWN_COLUMNS (comm_wait_ms 0), one row per window
    comms: Table
    cov_points: np.ndarray  # sorted times (ns) where coverage is known
    cov_gpu_run: dict[str, np.ndarray]  # component -> covered ns up to each point
    cov_cpu_run: dict[str, np.ndarray] | None  # the same in a run with no GPU (None: has GPU)
    hta: dict[bool, HtaMetrics]  # by HTA's last-step filter on/off
    profiler_step_names: list[str]
    util: utilisation.UtilSums
    idle: utilisation.IdleSums | None
    kernels: utilisation.KernelSums
    # identity of the step timer file when the windows come from it (None: from the trace)
    steps_identity: str | None = None
    # time blocked in point-to-point sends and receives (``RankActivity.p2p``), own clock
    p2p: iv.Intervals | None = None
    # CPU operators by self time (``utilisation.operator_sums``), in a rank with no GPU
    ops: utilisation.KernelSums | None = None
    # [memory] figures per device and window (``memory.memory_sums``); None without them
    memory: MemorySums | None = None

    def coverage(self, run_has_gpu: bool) -> CoverageLookup:
        cov = self.cov_gpu_run if run_has_gpu or self.cov_cpu_run is None else self.cov_cpu_run
        return CoverageLookup(self.cov_points, cov)


class CoverageLookup:
    """``diagnosis.Coverage`` from precomputed points; a KeyError for a time not among them."""

    def __init__(self, points: np.ndarray, upto: dict[str, np.ndarray]) -> None:
        self.points = points
        self.upto = upto

    def _at(self, name: str, t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.points, t)
        ok = idx < len(self.points)
        if not ok.all() or not (self.points[idx] == t).all():
            raise KeyError(name)
        return self.upto[name][idx]

    def covered(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.clip(self._at(name, hi) - self._at(name, lo), 0, None)


class _CoverageWithFallback:
    """The digest's lookup; for a time it does not hold, the rank's activity (read then)."""

    def __init__(self, rd: RankData, lookup: CoverageLookup, run_has_gpu: bool) -> None:
        self.rd, self.lookup, self.run_has_gpu = rd, lookup, run_has_gpu
        self._full: Components | None = None

    def covered(self, name: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        try:
            return self.lookup.covered(name, lo, hi)
        except KeyError:
            if self._full is None:
                self._full = components(rank_activity(self.rd), self.run_has_gpu)
            return self._full.covered(name, lo, hi)


def coverage_of(rd: RankData, d: RankDigest, run_has_gpu: bool) -> Coverage:
    """What the diagnosis reads of rank ``rd`` (``diagnosis.Coverage``), from its digest."""
    return _CoverageWithFallback(rd, d.coverage(run_has_gpu), run_has_gpu)


def components(act: RankActivity, run_has_gpu: bool) -> Components:
    """What the diagnosis reads of a rank: its activity as ``Components``.

    Without a GPU in the run, operator time is the rank's compute (``cpu_compute``);
    beside a GPU, host operators are host-side work and kernels are GPU compute.
    """
    ops = act.host if run_has_gpu else iv.combine(act.host, act.compute)
    gpu = act.compute if run_has_gpu else iv.empty()
    return Components.build(act.data, act.comm, gpu, ops)


def _coverage(comp: Components, points: np.ndarray) -> dict[str, np.ndarray]:
    return {name: coverage_upto(getattr(comp, name), points) for name in COMPONENT_NAMES}


def compute(rd: RankData, act: RankActivity | None = None) -> RankDigest:
    """The digest of one rank, from its tables."""
    act = rank_activity(rd) if act is None else act
    windows, source = step_windows(rd)
    steps = list(windows)
    breakdown = step_breakdown({rd.rank: act}, {rd.rank: windows}, steps, {})
    comms = rd.comms
    # The diagnosis' gap bounds: collective starts and ends (as it computes them from
    # dur_ms) and window starts.
    ends = comms["ts"] + np.rint((comms["dur"] / 1e6) * 1e6).astype(np.int64)
    points = distinct(
        np.concatenate(
            [comms["ts"], ends, np.array([w[0] for w in windows.values()], dtype=np.int64)]
        ).astype(np.int64)
    )
    cov_gpu = _coverage(components(act, True), points)
    cov_cpu = None if act.has_gpu else _coverage(components(act, False), points)
    step_names = sorted(hta_compat.profiler_step_names(rd))
    hta = {
        multi: HtaMetrics(
            temporal_breakdown=hta_compat.temporal_breakdown(rd, multi),
            comm_overlap_pct=hta_compat.comm_overlap_pct(rd, multi),
        )
        for multi in (True, False)
    }
    return RankDigest(
        rank=rd.rank,
        has_gpu=act.has_gpu,
        windows=windows,
        source=source,
        breakdown=breakdown,
        comms=comms,
        cov_points=points,
        cov_gpu_run=cov_gpu,
        cov_cpu_run=cov_cpu,
        hta=hta,
        profiler_step_names=step_names,
        util=utilisation.utilisation_sums(rd, act, windows),
        idle=utilisation.idle_sums(rd, windows),
        kernels=utilisation.kernel_sums(rd, windows),
        steps_identity=_identity(rd.steps_file)
        if source == "collector" and rd.steps_file
        else None,
        p2p=act.p2p,
        ops=None if act.has_gpu else utilisation.operator_sums(rd, windows),
        memory=memory_sums(rd, windows),
    )


# ---------------------------------------------------------------- cache


def _identity(path: str) -> str:
    try:
        return cache.file_identity(path)
    except OSError:
        return f"{path}|absent"


def digest_key(rd: RankData) -> str:
    """The cache key of ``rd``'s digest: its trace files' identities and the versions."""
    parts = [f"digest {DIGEST_VERSION} ingest {cache.INGEST_VERSION} rank {rd.rank}"]
    parts += [_identity(p) for p in rd.files]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _still_good(d: RankDigest, rd: RankData) -> bool:
    if d.rank != rd.rank:
        return False
    return d.steps_identity is None or d.steps_identity == _identity(rd.steps_file or "")


def _worth_caching(rd: RankData) -> bool:
    return rd.cached


def _cached(
    kind: str,
    key: str,
    decode_blob: Callable[[bytes], T],
    good: Callable[[T], bool],
    make: Callable[[], T],
    encode_value: Callable[[T], bytes],
) -> T:
    """The value stored under ``kind``/``key`` when it decodes whole and is still
    ``good``; else ``make()``, stored in its place (a bad entry is never trusted)."""
    blob = cache.load_blob(kind, key)
    if blob is not None:
        try:
            value = decode_blob(blob)
            if good(value):
                return value
        except (ValueError, TypeError, KeyError, msgspec.DecodeError):
            cache.discard_blob(kind, key)
    value = make()
    cache.store_blob(kind, key, encode_value(value))
    return value


def telemetry_sums_of(
    rd: RankData, windows: dict[int, tuple[int, int]]
) -> utilisation.TelemetrySums | None:
    """``utilisation.telemetry_sums`` of ``rd`` over ``windows``, cached like digests
    (keyed on the telemetry file's identity and the windows)."""
    if rd.telemetry_file is None or not _worth_caching(rd):
        return utilisation.telemetry_sums(rd, windows)
    ident = _identity(rd.telemetry_file)
    if ident.endswith("|absent"):
        return None
    spans = ",".join(f"{s}:{lo}:{hi}" for s, (lo, hi) in windows.items())
    key = hashlib.sha1(f"telemetry {DIGEST_VERSION}\n{ident}\n{spans}".encode()).hexdigest()

    def decode_sums(blob: bytes) -> utilisation.TelemetrySums | None:
        v = msgspec.msgpack.decode(blob)
        return _unsums(utilisation.TelemetrySums, v["sums"]) if v["sums"] else None

    return _cached(
        "telemetry",
        key,
        decode_sums,
        lambda sums: sums is None or len(sums.steps) == len(windows),
        lambda: utilisation.telemetry_sums(rd, windows),
        lambda sums: msgspec.msgpack.encode({"sums": _sums(sums)}),
    )


def is_cached(rd: RankData) -> bool:
    """Whether ``rd``'s digest is in the cache (it is cached with traces worth caching)."""
    return cache.load_blob("digests", digest_key(rd)) is not None


def store_digest(rd: RankData) -> bool:
    """Make and cache ``rd``'s digest; whether it is in the cache now. This is the
    ``DigestFn`` the layers above hand ingest (``load_run(..., digest=store_digest)``),
    so that a worker which parsed a rank's trace digests it on the spot."""
    digest_of(rd)
    return is_cached(rd)


def digest_of(rd: RankData) -> RankDigest:
    """``rd``'s digest: from memory, else from the cache, else computed (and cached
    when its run's traces are cached: ``RankData.cached``)."""
    if not isinstance(rd.digest, RankDigest):
        if _worth_caching(rd):
            rd.digest = _cached(
                "digests",
                digest_key(rd),
                decode,
                lambda d: _still_good(d, rd),
                lambda: compute(rd),
                encode,
            )
        else:
            rd.digest = compute(rd)
    return rd.digest


# ---------------------------------------------------------------- encoding

_DTYPES = {"<i8", "<f8", "<i4", "|b1", "|u1"}


def _arr(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    if a.dtype.str not in _DTYPES:
        a = a.astype(np.int64 if a.dtype.kind in "iub" else np.float64)
    return {"nd": [a.dtype.str, list(a.shape), a.tobytes()]}


_DTYPE_OF = {name: np.dtype(name) for name in _DTYPES}


def _unarr(v: Any) -> np.ndarray:
    dtype, shape, data = v["nd"]
    dt = _DTYPE_OF.get(dtype)
    if dt is None or not isinstance(data, bytes) or not isinstance(shape, list):
        raise ValueError("digest: bad array")
    for x in shape:
        if type(x) is not int or x < 0:
            raise ValueError("digest: bad array shape")
    if math.prod(shape) * dt.itemsize != len(data):
        raise ValueError("digest: bad array size")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _table(t: Table) -> dict[str, Any]:
    return {"cols": {k: _arr(v) for k, v in t.cols.items()}, "vocab": t.vocab}


def _untable(v: Any) -> Table:
    cols = {k: _unarr(a) for k, a in v["cols"].items()}
    vocab = {k: [str(x) for x in vs] for k, vs in v["vocab"].items()}
    for k in vocab:
        cols[k] = cols[k].astype(np.int32)
        if len(cols[k]) and (cols[k].min() < 0 or cols[k].max() >= len(vocab[k])):
            raise ValueError("digest: string codes out of range")
    lengths = {len(c) for c in cols.values()}
    if len(lengths) > 1:
        raise ValueError("digest: ragged table")
    return Table(cols, vocab)


def _sums(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    out: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = _arr(v) if isinstance(v, np.ndarray) else v
    return out


def _unsums(cls: Any, v: Any) -> Any:
    if v is None:
        return None
    kw = {k: _unarr(x) if isinstance(x, dict) and "nd" in x else x for k, x in v.items()}
    return cls(**kw)


def _hta(h: HtaMetrics) -> list[Any]:
    tb = h.temporal_breakdown
    return [None if tb is None else [tb.idle_pct, tb.compute_pct, tb.non_compute_pct],
            h.comm_overlap_pct]  # fmt: skip


def _unhta(v: Any) -> HtaMetrics:
    tb, overlap = v
    return HtaMetrics(
        temporal_breakdown=None if tb is None else TemporalBreakdown(*map(float, tb)),
        comm_overlap_pct=None if overlap is None else float(overlap),
    )


def encode(d: RankDigest) -> bytes:
    return msgspec.msgpack.encode(
        {
            "version": DIGEST_VERSION,
            "rank": d.rank,
            "has_gpu": d.has_gpu,
            "windows": [[s, lo, hi] for s, (lo, hi) in d.windows.items()],
            "source": d.source,
            "breakdown": _table(d.breakdown),
            "comms": _table(d.comms),
            "cov_points": _arr(d.cov_points),
            "cov_gpu_run": {k: _arr(v) for k, v in d.cov_gpu_run.items()},
            "cov_cpu_run": None
            if d.cov_cpu_run is None
            else {k: _arr(v) for k, v in d.cov_cpu_run.items()},
            "hta": [_hta(d.hta[True]), _hta(d.hta[False])],
            "profiler_step_names": d.profiler_step_names,
            "util": _sums(d.util),
            "idle": _sums(d.idle),
            "kernels": _sums(d.kernels),
            "steps_identity": d.steps_identity,
            "p2p": None if d.p2p is None else [_arr(d.p2p[0]), _arr(d.p2p[1])],
            "ops": None if d.ops is None else _sums(d.ops),
            "memory": _sums(d.memory),
        }
    )


def decode(blob: bytes) -> RankDigest:
    """A digest from ``encode``'s bytes; ValueError/TypeError/KeyError when it is not one."""
    v = msgspec.msgpack.decode(blob)
    if not isinstance(v, dict) or v.get("version") != DIGEST_VERSION:
        raise ValueError("digest: other version")
    points = _unarr(v["cov_points"])

    def cov(c: Any) -> dict[str, np.ndarray]:
        out = {name: _unarr(c[name]) for name in COMPONENT_NAMES}
        if any(len(a) != len(points) for a in out.values()):
            raise ValueError("digest: coverage length")
        return out

    d = RankDigest(
        rank=int(v["rank"]),
        has_gpu=bool(v["has_gpu"]),
        windows={int(s): (int(lo), int(hi)) for s, lo, hi in v["windows"]},
        source=str(v["source"]),
        breakdown=_untable(v["breakdown"]),
        comms=_untable(v["comms"]),
        cov_points=points,
        cov_gpu_run=cov(v["cov_gpu_run"]),
        cov_cpu_run=None if v["cov_cpu_run"] is None else cov(v["cov_cpu_run"]),
        hta={True: _unhta(v["hta"][0]), False: _unhta(v["hta"][1])},
        profiler_step_names=[str(n) for n in v["profiler_step_names"]],
        util=_unsums(utilisation.UtilSums, v["util"]),
        idle=_unsums(utilisation.IdleSums, v["idle"]),
        kernels=_unsums(utilisation.KernelSums, v["kernels"]),
        steps_identity=None if v["steps_identity"] is None else str(v["steps_identity"]),
        p2p=None if v.get("p2p") is None else (_unarr(v["p2p"][0]), _unarr(v["p2p"][1])),
        ops=None if v.get("ops") is None else _unsums(utilisation.KernelSums, v["ops"]),
        memory=_unsums(MemorySums, v.get("memory")),
    )
    if len(d.breakdown) != len(d.windows) or len(d.util.steps) != len(d.windows):
        raise ValueError("digest: step tables do not match the windows")
    m = d.memory
    if m is not None and m.peak_allocated.shape != (len(m.device_type), len(d.windows)):
        raise ValueError("digest: memory figures do not match the windows")
    return d
