"""One Kineto trace file -> a ``RankTrace``: its five tables and its metadata.

``parse_trace(path)`` decodes the file batch by batch while decompressing
(``stream`` splits, ``events`` decodes, ``columns`` builds), or whole for a
document of an unusual shape, then ``_finish`` converts every time to int64 ns
(``times``), drops rows whose times do not fit (counted in
``meta["dropped_events"]``), builds the ``comms`` table (``collectives``) and
reads the metadata. The tables' columns are listed in the package docstring.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from rankscope.dashboard.ingest.kineto import stream
from rankscope.dashboard.ingest.kineto.collectives import NCCL_KERNEL_RE, comms_table
from rankscope.dashboard.ingest.kineto.columns import (
    ANN_COLS,
    CPU_COLS,
    GPU_COLS,
    MEMORY_COLS,
    ColumnBuilder,
    joined,
)
from rankscope.dashboard.ingest.kineto.events import (
    DOC_DECODER,
    TraceDoc,
    decode_batch,
    int_or,
    load_trace_doc,
)
from rankscope.dashboard.ingest.kineto.times import (
    MAX_BASE_NS,
    MAX_TS_US,
    dur_ns,
    sane_times,
    to_ns,
)
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler import rundir, safeio
from rankscope.profiler.errors import RankscopeError

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
    memory: Table


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


def _stream_trace(path: Path) -> RankTrace:
    """Decode and columnise batch by batch while decompressing (see ``stream``)."""
    builder = ColumnBuilder()

    def accept(raw: memoryview) -> bool:
        events = decode_batch(raw)
        if events is None:
            return False
        builder.add(events)
        return True

    try:
        splitter = stream.EventSplitter(stream.read_chunks(path))
        splitter.split(accept)
        rest = DOC_DECODER.decode(splitter.rest())
    except msgspec.DecodeError:  # the whole-document path says what is wrong with it
        raise stream.NotStreamable("the keys around traceEvents do not decode") from None
    except safeio.UnsafeFile as e:
        raise RankscopeError(str(e)) from None
    except OSError as e:
        raise RankscopeError(f"cannot read {path}: {e.strerror or e}") from None
    if rest.traceEvents:  # a second traceEvents key after the first: read it whole
        raise stream.NotStreamable("two traceEvents arrays")
    return _finish(builder, rest, str(path))


def parse_trace(path: Path) -> RankTrace:
    """The tables of one trace file, decoded in batches (whole, for unusual documents)."""
    try:
        return _stream_trace(path)
    except stream.NotStreamable:
        return tables_from_doc(load_trace_doc(path), str(path))


def empty_trace() -> RankTrace:
    """Tables with the right columns and no rows (a rank that has no trace yet)."""
    return tables_from_doc(TraceDoc(), "")


def tables_from_doc(doc: TraceDoc, path: str) -> RankTrace:
    """The tables of a document decoded whole."""
    builder = ColumnBuilder()
    builder.add(doc.traceEvents)
    return _finish(builder, doc, path)


def _finish(b: ColumnBuilder, doc: TraceDoc, path: str) -> RankTrace:
    """The builder's columns as tables in int64 ns, the comms table and the metadata."""
    dist = _parse_mapping(doc.distributedInfo)
    base_ns = int_or(doc.baseTimeNanoseconds, 0)
    if not 0 <= base_ns <= MAX_BASE_NS:
        base_ns = 0
    g_kinds = {"kernel": 0, "memcpy": 1, "memset": 2, "sync": 3}
    dropped = 0
    # cpu_ts/cpu_corr before dropping rows: a kernel's launch time is read from them.
    cpu_raw = joined(b.c, CPU_COLS)
    cpu_ts, cpu_corr = cpu_raw["ts"], cpu_raw["correlation"]

    def timed(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows whose times fit int64 ns, ts/dur in ns; the others counted in ``dropped``."""
        nonlocal dropped
        ok = sane_times(cols["ts"], cols["dur"])
        if not ok.all():
            dropped += int(len(ok) - ok.sum())
            cols = {k: v[ok] for k, v in cols.items()}
        cols["ts"] = to_ns(cols["ts"], base_ns)
        cols["dur"] = dur_ns(cols["dur"])
        return cols

    gpu = Table(
        timed(joined(b.g, GPU_COLS)),
        {"name": b.g_names.values(), "kind": list(g_kinds)},
    )
    b.g.clear()
    gpu.cols["is_comm"] = gpu.vocab_mask("name", NCCL_KERNEL_RE.match)
    cpu = Table(timed(cpu_raw), {"name": b.c_names.values(), "cat": b.c_cats.values()})
    b.c.clear()
    gpu_ann = Table(timed(joined(b.a, ANN_COLS)), {"name": b.a_names.values()})
    memory, bad_memory = _memory_table(joined(b.m, MEMORY_COLS), base_ns)
    b.m.clear()
    dropped += bad_memory
    comms, comm_source = comms_table(
        b.nccl_rows, b.param_comms, b.host_comm_rows, cpu_ts, cpu_corr, base_ns
    )

    props = doc.deviceProperties
    device_name = ""
    num_sms = 0
    if isinstance(props, list) and props and isinstance(props[0], dict):
        device_name = str(props[0].get("name", ""))
        num_sms = int_or(props[0].get("numSms"), 0)
    pg_ranks: dict[str, list[int]] = {}
    for pg in dist.get("pg_config", []) or []:
        if isinstance(pg, dict) and isinstance(pg.get("ranks"), list):
            pg_ranks[str(pg.get("pg_name", ""))] = [int_or(r) for r in pg["ranks"]]
    meta: dict[str, Any] = {
        "rank": int_or(dist.get("rank")) if "rank" in dist else None,
        "world_size": int_or(dist.get("world_size")) if "world_size" in dist else None,
        "backend": str(dist.get("backend", "")),
        "device_name": device_name,
        "num_sms": num_sms,
        "base_time_ns": base_ns,
        "trace_name": str(doc.traceName or ""),
        "has_gpu": bool(len(gpu)),
        "comm_source": comm_source,
        "pg_ranks": pg_ranks,
        "dropped_events": dropped,
        "device_memory": _device_memory(props),
        "origin": origin_of(doc.rankscope),
    }
    return RankTrace(path, meta, gpu, cpu, gpu_ann, comms, memory)


def origin_of(tag: Any) -> dict[str, Any] | None:
    """The collector's origin tag (``profiler.export.origin_tag``) as ``{run_id, rank,
    attempt}``, each None where absent or not of its type; None for a trace without one
    (any other tool's)."""
    if not isinstance(tag, dict):
        return None
    run_id, rank, attempt = tag.get("run_id"), tag.get("rank"), tag.get("attempt")
    return {
        "run_id": run_id if isinstance(run_id, str) and run_id else None,
        "rank": rank if rundir.valid_rank(rank) else None,
        "attempt": attempt if type(attempt) is int and attempt >= 0 else None,
    }


def _memory_table(cols: dict[str, np.ndarray], base_ns: int) -> tuple[Table, int]:
    """The ``[memory]`` rows in time order, ts in int64 ns; and how many were dropped
    (a time out of range, or a total that is not a count)."""
    ts = cols["ts"]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ts) & (np.abs(ts) <= MAX_TS_US) & (cols["allocated"] >= 0)
    dropped = int(len(ok) - ok.sum())
    if dropped:
        cols = {k: v[ok] for k, v in cols.items()}
    cols["ts"] = to_ns(cols["ts"], base_ns)
    order = np.argsort(cols["ts"], kind="stable")
    if len(order) and (order[1:] < order[:-1]).any():
        cols = {k: v[order] for k, v in cols.items()}
    return Table(cols), dropped


def _device_memory(props: Any) -> dict[str, int]:
    """Each GPU's memory in bytes by its device id (``deviceProperties``' ``totalGlobalMem``)."""
    out: dict[str, int] = {}
    if isinstance(props, list):
        for p in props:
            if isinstance(p, dict):
                dev, total = int_or(p.get("id")), int_or(p.get("totalGlobalMem"))
                if dev >= 0 and total > 0:
                    out[str(dev)] = total
    return out
