"""Collectives: their canonical names, message sizes, and one trace's ``comms`` table.

``canonical_collective`` maps every spelling (``allreduce``, ``AllReduce``,
``gloo:all_reduce``) to one name; ``comm_bytes`` reads a message size from
``record_param_comms`` / NCCL kernel args, else from input shapes (-1: unknown).
``comms_table`` turns the rows the column builder set aside (NCCL kernels,
``record_param_comms`` args by External id, gloo/nccl host ranges) into the
``comms`` table, from one source per trace: GPU kernels when there are any,
else host ranges.

A blocking gloo ``send``/``recv`` shows as two ranges: the dispatcher's
``c10d::send``/``c10d::recv_`` op, then the ``gloo:send``/``gloo:recv`` range of
the wait, which starts inside it or as it ends. A ``send`` blocks in the first
(until the peer posts its receive), a ``recv`` in the second. Each such pair is
one row from the op's start to the later end, so time blocked on either side of
a point-to-point exchange is in the table (``merge_p2p``).
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import msgspec
import numpy as np

from rankscope.dashboard.ingest.kineto.events import INT64_MAX, NO_ARGS, Args, int_or
from rankscope.dashboard.ingest.kineto.times import dur_ns, sane_times, to_ns
from rankscope.dashboard.ingest.table import Table, isin

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


def _elem_bytes(dtype: Any) -> int:
    if not isinstance(dtype, str):
        return -1
    return _DTYPE_BYTES.get(dtype.strip().lower(), -1)


def comm_bytes(args: Args) -> int:
    """Message size from record_param_comms / NCCL kernel args, else from input shapes."""
    nelems = args.in_nelems if args.in_nelems is not None else args.out_nelems
    if nelems is not None:
        size = _elem_bytes(args.dtype)
        n = int_or(nelems)
        return n * size if 0 <= n <= INT64_MAX // 8 and size > 0 else -1
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
            n *= int_or(d, 0)
            if abs(n) > INT64_MAX:
                return -1
        total += n * size
    return total if 0 < total <= INT64_MAX else -1


# Host ranges of a collective on a CPU backend (and NCCL's, seen from the host).
HOST_COMM_PREFIXES = ("gloo:", "nccl:", "mpi:", "ucc:")

# The dispatcher's ops around a gloo send/recv (see the module docstring), by the
# gloo range each one opens.
HOST_P2P_OPS = {"c10d::send": "gloo:send", "c10d::recv_": "gloo:recv"}
_P2P_GAP_US = 50.0  # how far after the op's end its gloo range may start (µs)

# Set aside by the column builder, in Kineto's microseconds:
NcclRow = tuple[float, float, str, Args, int]  # ts, dur, kernel name, args, External id
HostCommRow = tuple[float, float, str, Args]  # ts, dur, range name, args


def merge_p2p(ranges: list[HostCommRow], ops: list[HostCommRow]) -> list[HostCommRow]:
    """``ranges`` with each gloo send/recv widened to the dispatcher op it belongs to: the
    latest ``c10d::send``/``c10d::recv_`` that starts at or before it and ends no more
    than ``_P2P_GAP_US`` before it starts (the module docstring says why)."""
    if not ops:
        return ranges
    by_range: dict[str, list[tuple[float, float]]] = {}
    for ts, dur, name, _ in sorted(ops, key=lambda r: r[0]):
        by_range.setdefault(HOST_P2P_OPS[name], []).append((ts, ts + dur))
    starts = {k: [a for a, _ in v] for k, v in by_range.items()}
    out = []
    for row in ranges:
        ts, dur, name, args = row
        found = by_range.get(name)
        if found:
            i = bisect.bisect_right(starts[name], ts) - 1
            if i >= 0 and found[i][1] + _P2P_GAP_US >= ts:
                begin, end = found[i][0], max(found[i][1], ts + dur)
                row = (begin, end - begin, name, args)
        out.append(row)
    return out


def comms_table(
    nccl_rows: list[NcclRow],
    param_comms: dict[int, Args],
    host_comm_rows: list[HostCommRow],
    cpu_ts: np.ndarray,
    cpu_corr: np.ndarray,
    base_ns: int,
) -> tuple[Table, str | None]:
    """The ``comms`` table (sorted by ts) and where it came from (gpu | cpu; None: no
    collective). ``cpu_ts``/``cpu_corr``: every host range's start (µs) and correlation,
    which give each kernel's launch time; ``base_ns`` as for the other tables.
    """
    no_args = NO_ARGS
    # One source of truth for communication per trace: GPU kernels when there are
    # any (NCCL), else host ranges (gloo, or an NCCL job traced without CUDA).
    comm_ts: list[float] = []
    comm_launch: list[float] = []
    comm_dur: list[float] = []
    comm_name: list[str] = []
    comm_raw: list[str] = []
    comm_pg: list[str] = []
    comm_seq: list[int] = []
    comm_size: list[int] = []
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
            comm_seq.append(int_or(info.seq))
            comm_size.append(comm_bytes(info))
    else:
        source = "cpu"
        ranges = [r for r in host_comm_rows if r[2] not in HOST_P2P_OPS]
        gloo = [r for r in ranges if not r[2].startswith("nccl:")]
        if gloo:
            gloo = merge_p2p(gloo, [r for r in host_comm_rows if r[2] in HOST_P2P_OPS])
        for ts, dur, name, args in gloo or ranges:
            comm_ts.append(ts)
            comm_launch.append(ts)
            comm_dur.append(dur)
            comm_name.append(canonical_collective(name))
            comm_raw.append(name)
            comm_pg.append("" if args.pg_name is None else str(args.pg_name))
            comm_seq.append(int_or(args.seq))
            comm_size.append(comm_bytes(args))
    ok = sane_times(np.asarray(comm_ts, dtype=np.float64), np.asarray(comm_dur, dtype=np.float64))
    ok &= sane_times(np.asarray(comm_launch, dtype=np.float64), np.zeros(len(ok)))
    if not ok.all():
        keep = np.flatnonzero(ok).tolist()
        comm_ts, comm_launch, comm_dur = (
            [c[i] for i in keep] for c in (comm_ts, comm_launch, comm_dur)
        )
        comm_name, comm_raw, comm_pg = (
            [c[i] for i in keep] for c in (comm_name, comm_raw, comm_pg)
        )
        comm_seq, comm_size = ([c[i] for i in keep] for c in (comm_seq, comm_size))
    comms = Table.build(
        {
            "ts": to_ns(np.asarray(comm_ts, dtype=np.float64), base_ns),
            "launch_ts": to_ns(np.asarray(comm_launch, dtype=np.float64), base_ns),
            "dur": dur_ns(np.asarray(comm_dur, dtype=np.float64)),
            "name": comm_name,
            "raw_name": comm_raw,
            "pg": comm_pg,
            "seq": np.asarray(comm_seq, dtype=np.int64),
            "bytes": np.asarray(comm_size, dtype=np.int64),
        },
        strings=("name", "raw_name", "pg"),
    ).sort("ts")
    return comms, (source if comm_ts else None)
