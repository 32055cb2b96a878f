"""Kineto (torch.profiler) JSON to columnar tables, one ``RankTrace`` per file.

``parse_trace(path)`` reads a ``.json`` or ``.json.gz`` trace with msgspec (typed, skipping
``args`` keys it does not use) and
returns four DataFrames plus metadata. Every timestamp is int64 nanoseconds on
the trace's own clock (Kineto microseconds + ``baseTimeNanoseconds`` when the
trace has it, which makes them CLOCK_REALTIME), every duration int64 ns.

``gpu``      (each a ``Table``) one row per GPU activity: ts, dur, name, kind (kernel | memcpy |
             memset | sync), stream, device, correlation, external_id, bytes,
             blocks_per_sm, occupancy_pct (Kineto's "est. achieved occupancy %",
             NaN when absent), is_comm (an NCCL/RCCL kernel).
``cpu``      one row per host range: ts, dur, name, cat (cpu_op,
             user_annotation, cuda_runtime, cuda_driver, python_function, ...),
             tid, correlation, external_id.
``gpu_ann``  gpu_user_annotation ranges: ts, dur, name, stream.
``comms``    one row per collective on this rank: ts, launch_ts (when the host
             issued it: the kernel launch for NCCL), dur, name (canonical,
             e.g. all_reduce), raw_name, pg, seq (-1 when unknown), bytes
             (-1 when unknown), source (gpu: an NCCL kernel; cpu: a gloo:* /
             nccl:* host range).
``meta``     rank, world_size, backend, device_name, base_time_ns, trace_name,
             has_gpu, pg_ranks (process group name -> global ranks).

The raw event dicts are dropped as soon as their columns are built.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from rankscope.dashboard.ingest.table import Table, first_indices, isin
from rankscope.profiler import safeio
from rankscope.profiler.errors import RankscopeError

GPU_KINDS = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
NCCL_KERNEL_RE = re.compile(r"^(nccl|rccl).*Kernel", re.IGNORECASE)
_NCCL_KERNEL_COLL_RE = re.compile(r"^(?:nccl|rccl)(?:Dev)?Kernel_([A-Za-z]+)", re.IGNORECASE)
_DTYPE_BYTES = {
    "float": 4,
    "float32": 4,
    "int": 4,
    "int32": 4,
    "uint32": 4,
    "double": 8,
    "float64": 8,
    "long": 8,
    "int64": 8,
    "long int": 8,
    "uint64": 8,
    "half": 2,
    "float16": 2,
    "bfloat16": 2,
    "c10::half": 2,
    "c10::bfloat16": 2,
    "short": 2,
    "int16": 2,
    "char": 1,
    "int8": 1,
    "uint8": 1,
    "unsigned char": 1,
    "byte": 1,
    "bool": 1,
    "signed char": 1,
    "c10::float8_e4m3fn": 1,
    "c10::float8_e5m2": 1,
}
_CANONICAL_COLL = {
    "allreduce": "all_reduce",
    "allgather": "all_gather",
    "allgatherbase": "all_gather",
    "allgatherintotensorcoalesced": "all_gather",
    "reducescatter": "reduce_scatter",
    "reducescatterbase": "reduce_scatter",
    "reducescattertensorcoalesced": "reduce_scatter",
    "broadcast": "broadcast",
    "reduce": "reduce",
    "alltoall": "all_to_all",
    "alltoallbase": "all_to_all",
    "sendrecv": "send_recv",
    "send": "send",
    "recv": "recv",
    "barrier": "barrier",
    "gather": "gather",
    "scatter": "scatter",
    "allreducecoalesced": "all_reduce",
}


def canonical_collective(name: str) -> str:
    """``allreduce``, ``AllReduce``, ``all_reduce`` and ``gloo:all_reduce`` -> ``all_reduce``."""
    base = name.split(":", 1)[-1]
    key = re.sub(r"[^a-z]", "", base.lower())
    return _CANONICAL_COLL.get(key, base.lower())


_NAN = float("nan")
_NO_RAW = msgspec.Raw()  # immutable: one shared default, not one empty Raw per event


class _Args(msgspec.Struct, frozen=True, gc=False):
    """The event args rankscope reads; msgspec skips every other key without building it.

    Integer fields are typed so the decoder hands over ints (-1: absent), the two
    kernel figures floats (NaN: absent); a trace with odd value types fails this
    strict schema and takes the forgiving path, which gives the same values.
    ``gc=False``: decoded JSON holds no cycles, and millions of GC-tracked events
    made the collector cost twice the decoding itself.
    """

    stream: int = -1
    correlation: int = -1
    device: int = 0
    external_id: int = msgspec.field(default=-1, name="External id")
    bytes: int = -1
    blocks_per_sm: float = msgspec.field(default=_NAN, name="blocks per SM")
    occupancy: float = msgspec.field(default=_NAN, name="est. achieved occupancy %")
    coll_name: Any = msgspec.field(default=None, name="Collective name")
    in_nelems: Any = msgspec.field(default=None, name="In msg nelems")
    out_nelems: Any = msgspec.field(default=None, name="Out msg nelems")
    dtype: Any = None
    pg_name: Any = msgspec.field(default=None, name="Process Group Name")
    seq: Any = msgspec.field(default=None, name="Seq")
    # Shapes appear on every op when record_shapes is on: keep them as raw bytes and
    # decode only for the few collectives that need a message size. A Raw is a view
    # into the decoded batch: ``_kept`` copies it out before an event outlives its batch.
    input_dims: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input Dims")
    input_type: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input type")


_NO_ARGS = _Args()


def _kept(args: _Args) -> _Args:
    """``args`` fit to keep past its batch: its Raw fields copied out of the batch's bytes."""
    if args.input_dims or args.input_type:
        return msgspec.structs.replace(
            args, input_dims=args.input_dims.copy(), input_type=args.input_type.copy()
        )
    return args


class _Event(msgspec.Struct, gc=False, tag_field="ph", tag="X"):
    """A complete event (``"ph": "X"``), the only phase rankscope reads."""

    cat: str = ""
    name: str = ""
    ts: float | None = None
    dur: float | None = None
    tid: int | str | None = None
    args: _Args = _NO_ARGS


# Every other Chrome-trace phase decodes to an empty struct: msgspec checks its JSON
# and skips its contents without building a thing (flow and instant events are a
# third of a Kineto trace). A phase not listed here, or an event without one, fails
# the schema and takes the forgiving path.
_OTHER_PHASES = "BEIiCbnestfPONDMVvRcTpSF()"
_SKIPPED = tuple(
    msgspec.defstruct(f"_Phase{ord(ph)}", [], tag_field="ph", tag=ph, gc=False)
    for ph in _OTHER_PHASES
)
if TYPE_CHECKING:
    _AnyEvent = _Event
else:
    _AnyEvent = functools.reduce(operator.or_, (_Event, *_SKIPPED))


class _TraceDoc(msgspec.Struct):
    traceEvents: list[_AnyEvent] = msgspec.field(default_factory=list)
    distributedInfo: Any = None
    baseTimeNanoseconds: Any = None
    deviceProperties: Any = None
    traceName: Any = None


_DECODER = msgspec.json.Decoder(_TraceDoc)
_BATCH_DECODER = msgspec.json.Decoder(list[_AnyEvent])

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
# Bounds that keep every timestamp an int64 of nanoseconds: |ts| up to ~2096 in
# microseconds since the epoch, a duration up to ~116 days, a base time up to ~2096.
# Events outside them are dropped (and counted in meta["dropped_events"]).
_MAX_TS_US = 4e15
_MAX_DUR_US = 1e13
_MAX_BASE_NS = 4 * 10**18
_MAX_REPR_CHARS = 100_000  # distributedInfo as a Python repr: never literal_eval more


@dataclass
class RankTrace:
    """The columnar form of one trace file."""

    path: str
    meta: dict[str, Any]
    gpu: Table
    cpu: Table
    gpu_ann: Table
    comms: Table


def _to_ns(ts_us: np.ndarray, base_ns: int) -> np.ndarray:
    """Kineto microsecond floats -> int64 ns, exact where a float64 product would not be."""
    whole = np.floor(ts_us)
    frac_ns = np.rint((ts_us - whole) * 1000.0).astype(np.int64)
    return base_ns + whole.astype(np.int64) * 1000 + frac_ns


def _sane_times(ts_us: np.ndarray, dur_us: np.ndarray) -> np.ndarray:
    """Rows whose start and duration keep every nanosecond value inside int64."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(ts_us)
            & np.isfinite(dur_us)
            & (np.abs(ts_us) <= _MAX_TS_US)
            & (dur_us >= 0)
            & (dur_us <= _MAX_DUR_US)
        )


def _dur_ns(dur_us: np.ndarray) -> np.ndarray:
    return np.maximum(np.rint(dur_us * 1000.0), 0).astype(np.int64)


def _parse_mapping(value: Any) -> dict[str, Any]:
    """distributedInfo is a dict in new traces and a Python repr string in some old ones."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip() and len(value) <= _MAX_REPR_CHARS:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            m = re.search(r"'rank':\s*(\d{1,18})\b", value)
            out: dict[str, Any] = {"rank": int(m.group(1))} if m else {}
            m = re.search(r"'world_size':\s*(\d{1,18})\b", value)
            if m:
                out["world_size"] = int(m.group(1))
            return out
        if isinstance(parsed, dict):
            return parsed
    return {}


def _int_or(value: Any, default: int = -1) -> int:
    """``value`` as an int64, else ``default`` (a number beyond int64 is not a number here)."""
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return n if _INT64_MIN <= n <= _INT64_MAX else default


def _elem_bytes(dtype: Any) -> int:
    if not isinstance(dtype, str):
        return -1
    return _DTYPE_BYTES.get(dtype.strip().lower(), -1)


def _comm_bytes(args: _Args) -> int:
    """Message size from record_param_comms / NCCL kernel args, else from input shapes."""
    nelems = args.in_nelems if args.in_nelems is not None else args.out_nelems
    if nelems is not None:
        size = _elem_bytes(args.dtype)
        n = _int_or(nelems)
        return n * size if 0 <= n <= _INT64_MAX // 8 and size > 0 else -1
    if not args.input_dims or not args.input_type:
        return -1
    try:
        dims = msgspec.json.decode(args.input_dims)
        types = msgspec.json.decode(args.input_type)
    except msgspec.DecodeError:
        return -1
    if not isinstance(dims, list) or not isinstance(types, list):
        return -1
    total = 0
    for shape, dtype in zip(dims, types, strict=False):
        size = _elem_bytes(dtype)
        if size <= 0 or not isinstance(shape, list) or not shape:
            continue
        n = 1
        for d in shape:
            n *= _int_or(d, 0)
            if abs(n) > _INT64_MAX:
                return -1
        total += n * size
    return total if 0 < total <= _INT64_MAX else -1


def _read_bytes(path: Path) -> bytes | bytearray:
    """The trace's JSON bytes: a regular file only, at most ``safeio.max_trace_bytes()``."""
    try:
        return safeio.read_gzip(path)
    except safeio.UnsafeFile as e:
        raise RankscopeError(str(e)) from None
    except OSError as e:
        raise RankscopeError(f"cannot read {path}: {e.strerror or e}") from None


_ARG_FIELDS = {f.encode_name: f.name for f in msgspec.structs.fields(_Args)}
_INT_ARGS = {"stream": -1, "correlation": -1, "device": 0, "external_id": -1, "bytes": -1}


_FLOAT_ARGS = ("blocks_per_sm", "occupancy")


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_nan(value: Any) -> float:
    """A number (bools count, as 0 and 1) as a float, anything else NaN."""
    try:
        return float(value) if isinstance(value, int | float) else _NAN
    except OverflowError:
        return _NAN


def _is_complete(e: Any) -> bool:
    return isinstance(e, dict) and e.get("ph") == "X"


def _event_from_dict(e: dict[str, Any]) -> _Event:
    """The forgiving twin of the typed decoder, for traces with odd value types."""
    args = _NO_ARGS
    raw_args = e.get("args")
    if isinstance(raw_args, dict):
        kwargs: dict[str, Any] = {}
        for key, attr in _ARG_FIELDS.items():
            if key in raw_args:
                value = raw_args[key]
                if attr in ("input_dims", "input_type"):
                    value = msgspec.Raw(msgspec.json.encode(value))
                elif attr in _INT_ARGS:
                    value = _int_or(value, _INT_ARGS[attr])
                elif attr in _FLOAT_ARGS:
                    value = _float_or_nan(value)
                kwargs[attr] = value
        args = _Args(**kwargs)
    cat, tid = e.get("cat"), e.get("tid")
    return _Event(
        cat=cat if isinstance(cat, str) else "",
        name=str(e.get("name", "")),
        ts=_float_or_none(e.get("ts")),
        dur=_float_or_none(e.get("dur")),
        tid=tid if isinstance(tid, int | str) and not isinstance(tid, bool) else None,
        args=args,
    )


def _read_doc(raw: bytes | bytearray, path: Path) -> _TraceDoc:
    """Decode a whole Kineto JSON document; a clear RankscopeError if it is not one."""
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError:
        pass  # valid JSON of an unusual shape: take the slow, forgiving path below
    except msgspec.DecodeError as e:
        raise RankscopeError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    doc = msgspec.json.decode(raw)
    if isinstance(doc, list):  # a bare event array is valid Chrome trace format
        doc = {"traceEvents": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise RankscopeError(f"{path} is not a torch.profiler trace (no traceEvents list)")
    events: list[_AnyEvent] = [_event_from_dict(e) for e in doc["traceEvents"] if _is_complete(e)]
    keep = {
        k: doc.get(k)
        for k in ("distributedInfo", "baseTimeNanoseconds", "deviceProperties", "traceName")
    }
    return _TraceDoc(traceEvents=events, **keep)


def load_trace_doc(path: Path) -> _TraceDoc:
    """Decode a (gzipped) Kineto JSON file whole; a clear RankscopeError if it is not one."""
    return _read_doc(_read_bytes(path), path)


def _decode_batch(raw: bytes | memoryview) -> list[_AnyEvent] | None:
    """One ``[event, ...]`` slice as events; None when the slice is not valid JSON.

    Only complete events come out whole; the others are empty placeholders.
    """
    try:
        return _BATCH_DECODER.decode(raw)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        return None
    try:
        items = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return [_event_from_dict(e) for e in items if _is_complete(e)]


def _stream_trace(path: Path) -> RankTrace:
    """Decode and columnise batch by batch while decompressing (see ``stream``)."""
    from rankscope.dashboard.ingest import stream

    builder = _ColumnBuilder()

    def accept(raw: memoryview) -> bool:
        events = _decode_batch(raw)
        if events is None:
            return False
        builder.add(events)
        return True

    try:
        splitter = stream.EventSplitter(stream.read_chunks(path))
        splitter.split(accept)
        rest = _DECODER.decode(splitter.rest())
    except msgspec.DecodeError:  # the whole-document path says what is wrong with it
        raise stream.NotStreamable("the keys around traceEvents do not decode") from None
    except safeio.UnsafeFile as e:
        raise RankscopeError(str(e)) from None
    except OSError as e:
        raise RankscopeError(f"cannot read {path}: {e.strerror or e}") from None
    if rest.traceEvents:  # a second traceEvents key after the first: read it whole
        raise stream.NotStreamable("two traceEvents arrays")
    return builder.finish(rest, str(path))


def parse_trace(path: Path) -> RankTrace:
    """The tables of one trace file, decoded in batches (whole, for unusual documents)."""
    from rankscope.dashboard.ingest.stream import NotStreamable

    try:
        return _stream_trace(path)
    except NotStreamable:
        return tables_from_doc(load_trace_doc(path), str(path))


def empty_trace() -> RankTrace:
    """Tables with the right columns and no rows (a rank that has no trace yet)."""
    return tables_from_doc(_TraceDoc(), "")


def tables_from_doc(doc: _TraceDoc, path: str) -> RankTrace:
    builder = _ColumnBuilder()
    builder.add(doc.traceEvents)
    return builder.finish(doc, path)


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
_HOST_COMM_PREFIXES = ("gloo:", "nccl:", "mpi:", "ucc:")
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


def _floats(values: list[Any]) -> np.ndarray:
    """Floats (None -> NaN, which JSON cannot hold, so NaN means absent)."""
    try:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    except TypeError:
        return np.array([_NAN if v is None else v for v in values], dtype=np.float64)


def _no_bad_ints(a: np.ndarray) -> np.ndarray:
    bad = (a >= _I64_BAD) | (a <= -_I64_BAD)
    return np.where(bad, -1, a) if bad.any() else a


def _ints(values: list[Any]) -> np.ndarray:
    """int64 values; anything not an int64 below ``_I64_BAD`` in size is -1."""
    try:
        a = np.fromiter(values, dtype=np.int64, count=len(values))
    except (TypeError, OverflowError, ValueError):  # a str that is not a number: "abc"
        a = np.array(
            [v if type(v) is int and _INT64_MIN <= v <= _INT64_MAX else -1 for v in values],
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
        | (_IS_HOST if name.startswith(_HOST_COMM_PREFIXES) else 0)
    )


def _complete(events: Iterable[Any]) -> list[_Event]:
    """The complete events of a decoded batch (the others are empty placeholders)."""
    events = list(events)
    return list(compress(events, map(operator.is_, map(type, events), repeat(_Event))))


class _ColumnBuilder:
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
        # Collectives: from NCCL kernels (args carry the collective in new Kineto, else
        # the enclosing record_param_comms op does, linked by External id) or host ranges.
        self.nccl_rows: list[tuple[float, float, str, _Args, int]] = []
        self.param_comms: dict[int, _Args] = {}
        self.host_comm_rows: list[tuple[float, float, str, _Args]] = []

    @staticmethod
    def _put(table: dict[str, list[np.ndarray]], **cols: np.ndarray) -> None:
        for k, v in cols.items():
            table.setdefault(k, []).append(v)

    def add(self, batch: Iterable[Any]) -> None:
        events = _complete(batch)
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

    @staticmethod
    def _tids(
        events: list[_Event], c_mask: np.ndarray, a_mask: np.ndarray
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
        events: list[_Event],
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
            self.nccl_rows.append(
                (float(g_ts[i]), float(g_dur[i]), e.name, _kept(a), a.external_id)
            )

    def _add_cpu(
        self,
        events: list[_Event],
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
                self.param_comms[int(ext[j])] = _kept(e.args)
            else:
                self.host_comm_rows.append((float(ts[i]), float(dur[i]), e.name, _kept(e.args)))

    def finish(self, doc: _TraceDoc, path: str) -> RankTrace:
        return _finish(self, doc, path)


def _joined(parts: dict[str, list[np.ndarray]], names: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        k: np.concatenate(parts[k]) if k in parts else np.zeros(0, dtype=dt)
        for k, dt in names.items()
    }


_GPU_COLS = {
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
_CPU_COLS = {
    "ts": np.float64,
    "dur": np.float64,
    "name": np.int32,
    "cat": np.int32,
    "tid": np.int64,
    "correlation": np.int64,
    "external_id": np.int64,
}
_ANN_COLS = {"ts": np.float64, "dur": np.float64, "name": np.int32, "stream": np.int64}


def _finish(b: _ColumnBuilder, doc: _TraceDoc, path: str) -> RankTrace:
    dist = _parse_mapping(doc.distributedInfo)
    base_ns = _int_or(doc.baseTimeNanoseconds, 0)
    if not 0 <= base_ns <= _MAX_BASE_NS:
        base_ns = 0
    g_kinds = {"kernel": 0, "memcpy": 1, "memset": 2, "sync": 3}
    dropped = 0
    # cpu_ts/cpu_corr before dropping rows: a kernel's launch time is read from them.
    cpu_raw = _joined(b.c, _CPU_COLS)
    cpu_ts, cpu_corr = cpu_raw["ts"], cpu_raw["correlation"]

    def timed(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows whose times fit int64 ns, ts/dur in ns; the others counted in ``dropped``."""
        nonlocal dropped
        ok = _sane_times(cols["ts"], cols["dur"])
        if not ok.all():
            dropped += int(len(ok) - ok.sum())
            cols = {k: v[ok] for k, v in cols.items()}
        cols["ts"] = _to_ns(cols["ts"], base_ns)
        cols["dur"] = _dur_ns(cols["dur"])
        return cols

    gpu = Table(
        timed(_joined(b.g, _GPU_COLS)),
        {"name": b.g_names.values(), "kind": list(g_kinds)},
    )
    b.g.clear()
    gpu.cols["is_comm"] = gpu.vocab_mask("name", NCCL_KERNEL_RE.match)
    cpu = Table(timed(cpu_raw), {"name": b.c_names.values(), "cat": b.c_cats.values()})
    b.c.clear()
    gpu_ann = Table(timed(_joined(b.a, _ANN_COLS)), {"name": b.a_names.values()})
    nccl_rows, param_comms, host_comm_rows = b.nccl_rows, b.param_comms, b.host_comm_rows
    no_args = _NO_ARGS

    # One source of truth for communication per trace: GPU kernels when there are
    # any (NCCL), else host ranges (gloo, or an NCCL job traced without CUDA).
    comm_ts: list[float] = []
    comm_launch: list[float] = []
    comm_dur: list[float] = []
    comm_name: list[str] = []
    comm_raw: list[str] = []
    comm_pg: list[str] = []
    comm_seq: list[int] = []
    comm_bytes: list[int] = []
    source: str
    if nccl_rows:
        source = "gpu"
        # When the host launched each kernel: that, not when the GPU ran it, says
        # which step a collective belongs to (a lagging GPU runs it a step later).
        wanted = np.array(
            [args.correlation for *_, args, _ in nccl_rows if args.correlation >= 0],
            dtype=np.int64,
        )
        hit = isin(cpu_corr, wanted)
        # dict(zip(...)): the last host range with a correlation wins, as before.
        launched_at = dict(zip(cpu_corr[hit].tolist(), cpu_ts[hit].tolist(), strict=True))
        for ts, dur, name, args, ext in nccl_rows:
            info = args if args.coll_name is not None else param_comms.get(ext, no_args)
            coll = info.coll_name
            if not coll:
                m = _NCCL_KERNEL_COLL_RE.match(name)
                coll = m.group(1) if m else name
            comm_ts.append(ts)
            comm_launch.append(launched_at.get(args.correlation, ts))
            comm_dur.append(dur)
            comm_name.append(canonical_collective(str(coll)))
            comm_raw.append(name.split("(", 1)[0])
            comm_pg.append("" if info.pg_name is None else str(info.pg_name))
            comm_seq.append(_int_or(info.seq))
            comm_bytes.append(_comm_bytes(info))
    else:
        source = "cpu"
        gloo = [r for r in host_comm_rows if not r[2].startswith("nccl:")]
        for ts, dur, name, args in gloo or host_comm_rows:
            comm_ts.append(ts)
            comm_launch.append(ts)
            comm_dur.append(dur)
            comm_name.append(canonical_collective(name))
            comm_raw.append(name)
            comm_pg.append("" if args.pg_name is None else str(args.pg_name))
            comm_seq.append(_int_or(args.seq))
            comm_bytes.append(_comm_bytes(args))
    ok = _sane_times(np.asarray(comm_ts, dtype=np.float64), np.asarray(comm_dur, dtype=np.float64))
    ok &= _sane_times(np.asarray(comm_launch, dtype=np.float64), np.zeros(len(ok)))
    if not ok.all():
        keep = np.flatnonzero(ok).tolist()
        comm_ts, comm_launch, comm_dur = (
            [c[i] for i in keep] for c in (comm_ts, comm_launch, comm_dur)
        )
        comm_name, comm_raw, comm_pg = (
            [c[i] for i in keep] for c in (comm_name, comm_raw, comm_pg)
        )
        comm_seq, comm_bytes = ([c[i] for i in keep] for c in (comm_seq, comm_bytes))
    comms = Table.build(
        {
            "ts": _to_ns(np.asarray(comm_ts, dtype=np.float64), base_ns),
            "launch_ts": _to_ns(np.asarray(comm_launch, dtype=np.float64), base_ns),
            "dur": _dur_ns(np.asarray(comm_dur, dtype=np.float64)),
            "name": comm_name,
            "raw_name": comm_raw,
            "pg": comm_pg,
            "seq": np.asarray(comm_seq, dtype=np.int64),
            "bytes": np.asarray(comm_bytes, dtype=np.int64),
        },
        strings=("name", "raw_name", "pg"),
    ).sort("ts")

    props = doc.deviceProperties
    device_name = ""
    num_sms = 0
    if isinstance(props, list) and props and isinstance(props[0], dict):
        device_name = str(props[0].get("name", ""))
        num_sms = _int_or(props[0].get("numSms"), 0)
    pg_ranks: dict[str, list[int]] = {}
    for pg in dist.get("pg_config", []) or []:
        if isinstance(pg, dict) and isinstance(pg.get("ranks"), list):
            pg_ranks[str(pg.get("pg_name", ""))] = [_int_or(r) for r in pg["ranks"]]
    meta: dict[str, Any] = {
        "rank": _int_or(dist.get("rank")) if "rank" in dist else None,
        "world_size": _int_or(dist.get("world_size")) if "world_size" in dist else None,
        "backend": str(dist.get("backend", "")),
        "device_name": device_name,
        "num_sms": num_sms,
        "base_time_ns": base_ns,
        "trace_name": str(doc.traceName or ""),
        "has_gpu": bool(len(gpu)),
        "comm_source": source if comm_ts else None,
        "pg_ranks": pg_ranks,
        "dropped_events": dropped,
    }
    return RankTrace(path, meta, gpu, cpu, gpu_ann, comms)
