"""Typed events -> numpy columns, batch by batch (``ColumnBuilder``).

``ColumnBuilder.add(batch)`` routes each complete event by category to the gpu
(kernel, memcpy, memset, cuda_sync with a stream), gpu_ann (gpu_user_annotation)
or cpu (every other host range) columns, still in Kineto's microseconds; names
and categories become int32 codes of per-table vocabularies. It also sets aside
what the ``comms`` table is made of (NCCL kernels, ``record_param_comms`` args by
External id, gloo/nccl host ranges: see ``collectives``). ``[memory]`` instants
(``profile_memory``) go to the memory columns (``MEMORY_COLS``). ``joined``
concatenates a table's batches, with the dtypes of ``GPU_COLS`` / ``CPU_COLS`` /
``ANN_COLS`` / ``MEMORY_COLS``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import Any

import numpy as np

from rankscope.dashboard.ingest.kineto.collectives import (
    HOST_COMM_PREFIXES,
    HOST_P2P_OPS,
    NCCL_KERNEL_RE,
    HostCommRow,
    NcclRow,
)
from rankscope.dashboard.ingest.kineto.events import (
    INT64_MAX,
    INT64_MIN,
    MEMORY_EVENT,
    NAN,
    Args,
    Event,
    Instant,
    kept,
)
from rankscope.dashboard.ingest.table import first_indices

GPU_KINDS = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}


# Event classes by category: GPU kinds 0-3 (as in the gpu table's kind vocabulary),
# then the categories routed elsewhere; anything else is a host range.
_KIND_KERNEL, _KIND_SYNC = 0, 3
_CLS_TRACE, _CLS_ANN, _CLS_CPU = 4, 5, 6
_CAT_CLASS = {
    "kernel": 0,
    "gpu_memcpy": 1,
    "gpu_memset": 2,
    "cuda_sync": _KIND_SYNC,
    "Trace": _CLS_TRACE,
    "gpu_user_annotation": _CLS_ANN,
}
# What a name says about its rows, one bit each.
_IS_NCCL, _IS_PARAM, _IS_HOST = 1, 2, 4
_I64_BAD = 9.2e18  # integer args at or beyond this (or not ints) read as -1

# One pass over a batch's events per getter: tuples flattened straight into numpy.
_TIMES = ("ts", "dur")
# Every row needs the first two; only device-side rows (GPU activity, annotations,
# cuda_sync) the other three, which are read for those rows alone.
_ARG_INTS = ("args.correlation", "args.external_id", "args.stream", "args.device", "args.bytes")
_CORRELATION, _EXTERNAL_ID, _STREAM, _DEVICE, _BYTES = range(len(_ARG_INTS))
_KERNEL_FLOATS = ("args.blocks_per_sm", "args.occupancy")
_NAME, _CAT, _TID, _ARGS = (attrgetter(f) for f in ("name", "cat", "tid", "args"))
_MEMORY_INTS = (
    "args.total_allocated",
    "args.total_reserved",
    "args.device_type",
    "args.device_id",
    "args.bytes",
)


def _floats(values: list[Any]) -> np.ndarray:
    """Floats (None -> NaN, which JSON cannot hold, so NaN means absent)."""
    try:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    except TypeError:
        return np.array([NAN if v is None else v for v in values], dtype=np.float64)


def _no_bad_ints(a: np.ndarray) -> np.ndarray:
    bad = (a >= _I64_BAD) | (a <= -_I64_BAD)
    return np.where(bad, -1, a) if bad.any() else a


def _ints(values: list[Any]) -> np.ndarray:
    """int64 values; anything not an int64 below ``_I64_BAD`` in size is -1."""
    try:
        a = np.fromiter(values, dtype=np.int64, count=len(values))
    except (TypeError, OverflowError, ValueError):  # a str that is not a number: "abc"
        a = np.array(
            [v if type(v) is int and INT64_MIN <= v <= INT64_MAX else -1 for v in values],
            dtype=np.int64,
        )
    return _no_bad_ints(a)


def _fields(items: list[Any], names: tuple[str, ...], dtype: type) -> np.ndarray:
    """``len(items) x len(names)`` values, read in one pass; per field when that fails.

    Each element goes through the same numpy conversion as in ``_floats``/``_ints``
    (which the per-field fallback is), so both ways give the same array.
    """
    n, width = len(items), len(names)
    try:
        flat: np.ndarray = np.fromiter(
            chain.from_iterable(map(attrgetter(*names), items)), dtype=dtype, count=n * width
        )
    except (TypeError, OverflowError, ValueError):
        convert = _floats if dtype is np.float64 else _ints
        return np.stack([convert(list(map(attrgetter(f), items))) for f in names], axis=1)
    a = flat.reshape(n, width)
    return a if dtype is np.float64 else _no_bad_ints(a)


class _Vocab:
    """Strings -> int32 codes in order of first appearance, across batches."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.strings: list[str] = []

    def codes(self, values: list[str]) -> np.ndarray:
        index, strings = self.index, self.strings
        for v in dict.fromkeys(values):  # the distinct values: a C loop, then a short one
            if v not in index:
                index[v] = len(strings)
                strings.append(v)
        return np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values))

    def values(self) -> list[str]:
        return list(self.strings)


class _SubVocab:
    """One table's vocabulary over codes of a shared ``_Vocab``: its own codes, in order
    of first appearance in this table, worked out with numpy from the shared codes."""

    def __init__(self, pool: _Vocab) -> None:
        self.pool = pool
        self.lut = np.zeros(0, dtype=np.int32)  # shared code -> this table's code, or -1
        self.strings: list[str] = []

    def codes(self, shared: np.ndarray) -> np.ndarray:
        grow = len(self.pool.strings) - len(self.lut)
        if grow > 0:
            self.lut = np.concatenate([self.lut, np.full(grow, -1, dtype=np.int32)])
        lut = self.lut
        new = shared[lut[shared] < 0]
        if len(new):
            uniq, first = first_indices(new)
            uniq = uniq[np.argsort(first, kind="stable")]
            lut[uniq] = np.arange(len(self.strings), len(self.strings) + len(uniq), dtype=np.int32)
            pool = self.pool.strings
            self.strings.extend(pool[i] for i in uniq.tolist())
        return lut[shared]

    def values(self) -> list[str]:
        return list(self.strings)


def _grown(a: np.ndarray, pool: list[str], of: Callable[[str], int]) -> np.ndarray:
    """``a`` (one value per string of ``pool`` seen so far) extended to all of ``pool``."""
    if len(a) == len(pool):
        return a
    more = np.fromiter(map(of, pool[len(a) :]), dtype=a.dtype, count=len(pool) - len(a))
    return np.concatenate([a, more])


def _name_flags(name: str) -> int:
    return (
        (_IS_NCCL if NCCL_KERNEL_RE.match(name) else 0)
        | (_IS_PARAM if name == "record_param_comms" else 0)
        | (_IS_HOST if name.startswith(HOST_COMM_PREFIXES) or name in HOST_P2P_OPS else 0)
    )


def _of_type(events: list[Any], kinds: list[type], cls: type) -> list[Any]:
    """The events of ``events`` (whose types are ``kinds``) that are ``cls`` exactly."""
    return list(compress(events, map(operator.is_, kinds, repeat(cls))))


class ColumnBuilder:
    """Events in, batch by batch, as numpy columns: no Python loop over every event.

    A batch's fields are read in a few passes (``map(attrgetter)`` flattened into
    ``np.fromiter``, C loops); names and categories are coded once for all tables
    and split per table with numpy. Only the few events that need more
    (collectives, ``record_param_comms``) are looked at one by one.
    """

    def __init__(self) -> None:
        self.names, self.cats = _Vocab(), _Vocab()
        self.name_flags = np.zeros(0, dtype=np.int8)  # _IS_* bits per shared name code
        self.cat_class = np.zeros(0, dtype=np.int8)  # event class per shared category code
        self.g_names, self.c_names, self.a_names = (_SubVocab(self.names) for _ in range(3))
        self.c_cats = _SubVocab(self.cats)
        self.g: dict[str, list[np.ndarray]] = {}
        self.c: dict[str, list[np.ndarray]] = {}
        self.a: dict[str, list[np.ndarray]] = {}
        self.m: dict[str, list[np.ndarray]] = {}  # [memory] instants (MEMORY_COLS)
        # Collectives: from NCCL kernels (args carry the collective in new Kineto, else
        # the enclosing record_param_comms op does, linked by External id) or host ranges.
        self.nccl_rows: list[NcclRow] = []
        self.param_comms: dict[int, Args] = {}
        self.host_comm_rows: list[HostCommRow] = []

    @staticmethod
    def _put(table: dict[str, list[np.ndarray]], **cols: np.ndarray) -> None:
        for k, v in cols.items():
            table.setdefault(k, []).append(v)

    def add(self, batch: Iterable[Any]) -> None:
        every = batch if isinstance(batch, list) else list(batch)
        kinds = list(map(type, every))
        # A trace without profile_memory holds a couple of instants: one scan (identity
        # compares in C) is all it costs.
        if Instant in kinds:
            self._add_memory(_of_type(every, kinds, Instant))
        events: list[Event] = _of_type(every, kinds, Event)
        if not events:
            return
        times = _fields(events, _TIMES, np.float64)
        keep = ~np.isnan(times).any(axis=1)
        if not keep.all():
            events = list(compress(events, keep.tolist()))
            times = times[keep]
        if not events:
            return
        ts, dur = times[:, 0], times[:, 1]
        names = self.names.codes(list(map(_NAME, events)))
        cats = self.cats.codes(list(map(_CAT, events)))
        self.name_flags = _grown(self.name_flags, self.names.strings, _name_flags)
        self.cat_class = _grown(
            self.cat_class, self.cats.strings, lambda c: _CAT_CLASS.get(c, _CLS_CPU)
        )
        cls = self.cat_class[cats]
        ints = np.full((len(events), len(_ARG_INTS)), -1, dtype=np.int64)
        ints[:, :_STREAM] = _fields(events, _ARG_INTS[:_STREAM], np.int64)
        device_side = np.flatnonzero((cls <= _KIND_SYNC) | (cls == _CLS_ANN))
        if len(device_side):
            on_device = [events[i] for i in device_side.tolist()]
            ints[device_side, _STREAM:] = _fields(on_device, _ARG_INTS[_STREAM:], np.int64)
        stream = ints[:, _STREAM]
        # A cuda_sync range without a stream is a host range like any other.
        cls[(cls == _KIND_SYNC) & (stream < 0)] = _CLS_CPU
        g_mask, c_mask, a_mask = cls <= _KIND_SYNC, cls == _CLS_CPU, cls == _CLS_ANN
        c_tid, a_tid = self._tids(events, c_mask, a_mask)
        if g_mask.any():
            self._add_gpu(events, names, ts, dur, ints, cls, g_mask)
        if a_mask.any():
            s = stream[a_mask]
            self._put(
                self.a,
                ts=ts[a_mask],
                dur=dur[a_mask],
                name=self.a_names.codes(names[a_mask]),
                stream=np.where(s >= 0, s, a_tid),
            )
        if c_mask.any():
            self._add_cpu(events, names, cats, ts, dur, ints, c_tid, c_mask)

    def _add_memory(self, instants: list[Instant]) -> None:
        """The ``[memory]`` instants' allocator totals, in Kineto's microseconds."""
        mem = [e for e in instants if e.name == MEMORY_EVENT]
        if not mem:
            return
        ts = _floats(list(map(attrgetter("ts"), mem)))
        ints = _fields(mem, _MEMORY_INTS, np.int64)
        keep = ~np.isnan(ts)
        self._put(
            self.m,
            ts=ts[keep],
            allocated=ints[keep, 0],
            reserved=ints[keep, 1],
            device_type=ints[keep, 2],
            device_id=ints[keep, 3],
            bytes=ints[keep, 4],
        )

    @staticmethod
    def _tids(
        events: list[Event], c_mask: np.ndarray, a_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Thread ids of the host and the annotation rows (-1 where not an int64)."""
        if not (c_mask.any() or a_mask.any()):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        tids = list(map(_TID, events))
        if set(map(type, tids)) == {int}:
            every = _ints(tids)
            return every[c_mask], every[a_mask]
        # A string or absent tid somewhere: per table, as strict as each always was.
        return _ints(list(compress(tids, c_mask.tolist()))), _ints(
            [t if type(t) is int else -1 for t in compress(tids, a_mask.tolist())]
        )

    def _add_gpu(
        self,
        events: list[Event],
        names: np.ndarray,
        ts: np.ndarray,
        dur: np.ndarray,
        ints: np.ndarray,
        cls: np.ndarray,
        mask: np.ndarray,
    ) -> None:
        rows = np.flatnonzero(mask)
        g_events = [events[i] for i in rows.tolist()]
        kernel = _fields(g_events, _KERNEL_FLOATS, np.float64)
        g_ints = ints[rows]
        kind = cls[rows].astype(np.int32)
        g_names = names[rows]
        g_ts, g_dur = ts[rows], dur[rows]
        self._put(
            self.g,
            ts=g_ts,
            dur=g_dur,
            name=self.g_names.codes(g_names),
            kind=kind,
            stream=g_ints[:, _STREAM],
            device=g_ints[:, _DEVICE],
            correlation=g_ints[:, _CORRELATION],
            external_id=g_ints[:, _EXTERNAL_ID],
            bytes=g_ints[:, _BYTES],
            blocks_per_sm=kernel[:, 0],
            occupancy_pct=kernel[:, 1],
        )
        nccl = (self.name_flags[g_names] & _IS_NCCL).astype(bool) & (kind == _KIND_KERNEL)
        for i in np.flatnonzero(nccl).tolist():
            e = g_events[i]
            a = e.args
            self.nccl_rows.append((float(g_ts[i]), float(g_dur[i]), e.name, kept(a), a.external_id))

    def _add_cpu(
        self,
        events: list[Event],
        names: np.ndarray,
        cats: np.ndarray,
        ts: np.ndarray,
        dur: np.ndarray,
        ints: np.ndarray,
        tid: np.ndarray,
        mask: np.ndarray,
    ) -> None:
        c_names = names[mask]
        ext = ints[mask, _EXTERNAL_ID]
        self._put(
            self.c,
            ts=ts[mask],
            dur=dur[mask],
            name=self.c_names.codes(c_names),
            cat=self.c_cats.codes(cats[mask]),
            tid=tid,
            correlation=ints[mask, _CORRELATION],
            external_id=ext,
        )
        flags = self.name_flags[c_names]
        hits = np.flatnonzero(flags & (_IS_PARAM | _IS_HOST))
        if not len(hits):
            return
        rows = np.flatnonzero(mask)[hits]
        for j, i in zip(hits.tolist(), rows.tolist(), strict=True):
            e = events[i]
            if flags[j] & _IS_PARAM:
                self.param_comms[int(ext[j])] = kept(e.args)
            else:
                self.host_comm_rows.append((float(ts[i]), float(dur[i]), e.name, kept(e.args)))


def joined(parts: dict[str, list[np.ndarray]], names: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        k: np.concatenate(parts[k]) if k in parts else np.zeros(0, dtype=dt)
        for k, dt in names.items()
    }


GPU_COLS = {
    "ts": np.float64,
    "dur": np.float64,
    "name": np.int32,
    "kind": np.int32,
    "stream": np.int64,
    "device": np.int64,
    "correlation": np.int64,
    "external_id": np.int64,
    "bytes": np.int64,
    "blocks_per_sm": np.float64,
    "occupancy_pct": np.float64,
}
CPU_COLS = {
    "ts": np.float64,
    "dur": np.float64,
    "name": np.int32,
    "cat": np.int32,
    "tid": np.int64,
    "correlation": np.int64,
    "external_id": np.int64,
}
ANN_COLS = {"ts": np.float64, "dur": np.float64, "name": np.int32, "stream": np.int64}
MEMORY_COLS = {
    "ts": np.float64,
    "device_type": np.int64,
    "device_id": np.int64,
    "allocated": np.int64,
    "reserved": np.int64,
    "bytes": np.int64,
}
