"""The review side's on-disk records: a cache entry's ``meta.json`` and ``summary.json``.

One msgspec Struct each (the collector side's records are
``rankscope.profiler.records``). Their format version is the cache's
``INGEST_VERSION``, part of every entry's key, so an entry of another version is
never read. ``cache`` validates what it reads with these Structs (``check``) and
returns the file's own dict, so a field is added in one line here; a test keeps
``TraceMeta``'s fields equal to what ``kineto.parse_trace`` puts in a trace's meta.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

Int64 = Annotated[int, Meta(ge=-((1 << 63) - 1), le=(1 << 63) - 1)]
Count = Annotated[int, Meta(ge=0, le=(1 << 63) - 1)]


class TraceOrigin(Struct):
    """The collector's tag on a window (``kineto.trace.origin_of``): None where unknown."""

    run_id: str | None = None
    rank: Count | None = None
    attempt: Count | None = None


class TraceMeta(Struct):
    """What a parsed trace says of itself (``RankTrace.meta``), as cached in ``meta.json``."""

    rank: Int64 | None = None
    world_size: Int64 | None = None
    backend: str = ""
    device_name: str = ""
    num_sms: Int64 = 0
    base_time_ns: Int64 = 0
    trace_name: str = ""
    has_gpu: bool = False
    comm_source: str | None = None
    pg_ranks: dict[str, list[Int64]] = {}
    dropped_events: Count = 0
    device_memory: dict[str, Count] = {}
    origin: TraceOrigin | None = None


class TraceSummary(Struct):
    """A few numbers per trace file (``cache.summarise``), cached in ``summary.json``."""

    rank: Int64 | None
    world_size: Int64 | None
    gpu_events: Count
    cpu_events: Count
    comms: Count
    start_ns: Int64 | None
    end_ns: Int64 | None
    kernel_ns: Int64
    comm_kernel_ns: Int64
    comm_ns: Int64
    dropped_events: Count
    cpu_start_ns: Int64


def decode_checked(data: bytes, cls: type[Struct]) -> dict[str, Any]:
    """The JSON object in ``data`` after checking it against ``cls``; ValueError if it fails.

    (``msgspec.ValidationError`` and ``DecodeError`` are ValueErrors.)
    """
    obj = msgspec.json.decode(data)
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object but {type(obj).__name__}")
    msgspec.convert(obj, cls)
    return obj


def encode(obj: Any) -> bytes:
    """Strict JSON (NaN and infinities as null)."""
    return msgspec.json.encode(obj)
