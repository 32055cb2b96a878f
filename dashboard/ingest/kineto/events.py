"""Kineto JSON -> typed events: what rankscope reads of each event, decoded by msgspec.

``TraceDoc`` is a whole document (``DOC_DECODER`` decodes it), ``decode_batch``
one ``[event, ...]`` slice of its ``traceEvents`` (see ``stream``),
``load_trace_doc`` a whole file. Complete events (``"ph": "X"``) come out as
``Event`` (cat, name, ts and dur in Kineto's microseconds, tid, ``Args``) and
instant events (``"ph": "i"``) as ``Instant`` (name, ts, ``MemoryArgs``: the
allocator totals of ``profile_memory``'s ``[memory]`` events); any other phase
decodes to an empty placeholder, skipped without being built.

Two paths, same values: the typed decoder (fast, strict), and for valid JSON of
an unusual shape (a string where a number belongs, a bare event array) a
forgiving one that reads plain dicts and converts each field as the typed path
would (an int64 or -1, a float or NaN, a tid that is an int, a str or None).
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from rankscope.profiler import safeio
from rankscope.profiler.errors import RankscopeError

NAN = float("nan")
_NO_RAW = msgspec.Raw()  # immutable: one shared default, not one empty Raw per event


class Args(msgspec.Struct, frozen=True, gc=False):
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
    blocks_per_sm: float = msgspec.field(default=NAN, name="blocks per SM")
    occupancy: float = msgspec.field(default=NAN, name="est. achieved occupancy %")
    coll_name: Any = msgspec.field(default=None, name="Collective name")
    in_nelems: Any = msgspec.field(default=None, name="In msg nelems")
    out_nelems: Any = msgspec.field(default=None, name="Out msg nelems")
    dtype: Any = None
    pg_name: Any = msgspec.field(default=None, name="Process Group Name")
    seq: Any = msgspec.field(default=None, name="Seq")
    # Shapes appear on every op when record_shapes is on: keep them as raw bytes and
    # decode only for the few collectives that need a message size. A Raw is a view
    # into the decoded batch: ``kept`` copies it out before an event outlives its batch.
    input_dims: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input Dims")
    input_type: msgspec.Raw = msgspec.field(default=_NO_RAW, name="Input type")


NO_ARGS = Args()


def kept(args: Args) -> Args:
    """``args`` fit to keep past its batch: its Raw fields copied out of the batch's bytes."""
    if args.input_dims or args.input_type:
        return msgspec.structs.replace(
            args, input_dims=args.input_dims.copy(), input_type=args.input_type.copy()
        )
    return args


class Event(msgspec.Struct, gc=False, tag_field="ph", tag="X"):
    """A complete event (``"ph": "X"``): every range rankscope reads."""

    cat: str = ""
    name: str = ""
    ts: float | None = None
    dur: float | None = None
    tid: int | str | None = None
    args: Args = NO_ARGS


class MemoryArgs(msgspec.Struct, frozen=True, gc=False):
    """What a ``[memory]`` instant says (``profile_memory=True``); -1 where absent.

    ``device_type`` is c10's DeviceType (0 CPU, 1 CUDA); a CPU event's ``device_id`` is -1.
    """

    total_allocated: int = msgspec.field(default=-1, name="Total Allocated")
    total_reserved: int = msgspec.field(default=-1, name="Total Reserved")
    device_type: int = msgspec.field(default=-1, name="Device Type")
    device_id: int = msgspec.field(default=-1, name="Device Id")
    bytes: int = msgspec.field(default=0, name="Bytes")  # this event's change (< 0: a free)


NO_MEMORY_ARGS = MemoryArgs()
MEMORY_EVENT = "[memory]"


class Instant(msgspec.Struct, gc=False, tag_field="ph", tag="i"):
    """An instant event (``"ph": "i"``): ``[memory]`` is the one rankscope reads.

    A trace recorded without ``profile_memory`` has a couple of these, so decoding
    them costs nothing there; one recorded with it has one per allocation and free.
    """

    name: str = ""
    ts: float | None = None
    args: MemoryArgs = NO_MEMORY_ARGS


# Every other Chrome-trace phase decodes to an empty struct: msgspec checks its JSON
# and skips its contents without building a thing (flow events are a third of a
# Kineto trace). A phase not listed here, or an event without one, fails the schema
# and takes the forgiving path.
_OTHER_PHASES = "BEICbnestfPONDMVvRcTpSF()"
_SKIPPED = tuple(
    msgspec.defstruct(f"_Phase{ord(ph)}", [], tag_field="ph", tag=ph, gc=False)
    for ph in _OTHER_PHASES
)
if TYPE_CHECKING:
    AnyEvent = Event | Instant
else:
    AnyEvent = functools.reduce(operator.or_, (Event, Instant, *_SKIPPED))


class TraceDoc(msgspec.Struct):
    """A whole Kineto document: its complete events and the top-level keys rankscope reads."""

    traceEvents: list[AnyEvent] = msgspec.field(default_factory=list)
    distributedInfo: Any = None
    baseTimeNanoseconds: Any = None
    deviceProperties: Any = None
    traceName: Any = None
    rankscope: Any = None  # the collector's origin tag (run_id, rank, attempt)


DOC_DECODER = msgspec.json.Decoder(TraceDoc)
_BATCH_DECODER = msgspec.json.Decoder(list[AnyEvent])

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def int_or(value: Any, default: int = -1) -> int:
    """``value`` as an int64, else ``default`` (a number beyond int64 is not a number here)."""
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return n if INT64_MIN <= n <= INT64_MAX else default


def _read_bytes(path: Path) -> bytes | bytearray:
    """The trace's JSON bytes: a regular file only, at most ``safeio.max_trace_bytes()``."""
    try:
        return safeio.read_gzip(path)
    except safeio.UnsafeFile as e:
        raise RankscopeError(str(e)) from None
    except OSError as e:
        raise RankscopeError(f"cannot read {path}: {e.strerror or e}") from None


_ARG_FIELDS = {f.encode_name: f.name for f in msgspec.structs.fields(Args)}
_INT_ARGS = {"stream": -1, "correlation": -1, "device": 0, "external_id": -1, "bytes": -1}


_FLOAT_ARGS = ("blocks_per_sm", "occupancy")


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_nan(value: Any) -> float:
    """A number (bools count, as 0 and 1) as a float, anything else NaN."""
    try:
        return float(value) if isinstance(value, int | float) else NAN
    except OverflowError:
        return NAN


def _is_read(e: Any) -> bool:
    """A complete event, or a ``[memory]`` instant: the events the typed path builds."""
    return isinstance(e, dict) and (
        e.get("ph") == "X" or (e.get("ph") == "i" and e.get("name") == MEMORY_EVENT)
    )


def _memory_from_dict(e: dict[str, Any]) -> Instant:
    """A ``[memory]`` instant, converted as the typed decoder would (an int64 or -1)."""
    args = NO_MEMORY_ARGS
    raw_args = e.get("args")
    if isinstance(raw_args, dict):
        args = MemoryArgs(
            **{
                f.name: int_or(raw_args.get(f.encode_name))
                for f in msgspec.structs.fields(MemoryArgs)
                if f.encode_name in raw_args
            }
        )
    return Instant(name=MEMORY_EVENT, ts=_float_or_none(e.get("ts")), args=args)


def _read_from_dict(e: dict[str, Any]) -> Event | Instant:
    return _memory_from_dict(e) if e.get("ph") == "i" else _event_from_dict(e)


def _event_from_dict(e: dict[str, Any]) -> Event:
    """The forgiving twin of the typed decoder, for traces with odd value types."""
    args = NO_ARGS
    raw_args = e.get("args")
    if isinstance(raw_args, dict):
        kwargs: dict[str, Any] = {}
        for key, attr in _ARG_FIELDS.items():
            if key in raw_args:
                value = raw_args[key]
                if attr in ("input_dims", "input_type"):
                    value = msgspec.Raw(msgspec.json.encode(value))
                elif attr in _INT_ARGS:
                    value = int_or(value, _INT_ARGS[attr])
                elif attr in _FLOAT_ARGS:
                    value = _float_or_nan(value)
                kwargs[attr] = value
        args = Args(**kwargs)
    cat, tid = e.get("cat"), e.get("tid")
    return Event(
        cat=cat if isinstance(cat, str) else "",
        name=str(e.get("name", "")),
        ts=_float_or_none(e.get("ts")),
        dur=_float_or_none(e.get("dur")),
        tid=tid if isinstance(tid, int | str) and not isinstance(tid, bool) else None,
        args=args,
    )


def _read_doc(raw: bytes | bytearray, path: Path) -> TraceDoc:
    """Decode a whole Kineto JSON document; a clear RankscopeError if it is not one."""
    try:
        return DOC_DECODER.decode(raw)
    except msgspec.ValidationError:
        pass  # valid JSON of an unusual shape: take the slow, forgiving path below
    except msgspec.DecodeError as e:
        raise RankscopeError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    doc = msgspec.json.decode(raw)
    if isinstance(doc, list):  # a bare event array is valid Chrome trace format
        doc = {"traceEvents": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise RankscopeError(f"{path} is not a torch.profiler trace (no traceEvents list)")
    events: list[AnyEvent] = [_read_from_dict(e) for e in doc["traceEvents"] if _is_read(e)]
    keep = {
        k: doc.get(k)
        for k in (
            "distributedInfo",
            "baseTimeNanoseconds",
            "deviceProperties",
            "traceName",
            "rankscope",
        )
    }
    return TraceDoc(traceEvents=events, **keep)


def load_trace_doc(path: Path) -> TraceDoc:
    """Decode a (gzipped) Kineto JSON file whole; a clear RankscopeError if it is not one."""
    return _read_doc(_read_bytes(path), path)


def decode_batch(raw: bytes | memoryview) -> list[AnyEvent] | None:
    """One ``[event, ...]`` slice as events; None when the slice is not valid JSON.

    Complete events and instants come out whole; the others are empty placeholders.
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
    return [_read_from_dict(e) for e in items if _is_read(e)]
