"""The Kineto decoder on small hand-built traces: numbers a user checks by hand.

Each trace is a few events written to a file, read both ways rankscope reads a
file: streamed in batches (``parse_trace``) and decoded whole (``load_trace_doc``
then ``tables_from_doc``, the path for documents of an unusual shape).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankscope.dashboard.ingest.kineto import (
    RankTrace,
    load_trace_doc,
    parse_trace,
    tables_from_doc,
)
from rankscope.profiler.errors import RankscopeError

Reader = Callable[[Path], RankTrace]


def _whole(path: Path) -> RankTrace:
    return tables_from_doc(load_trace_doc(path), str(path))


@pytest.fixture(params=[parse_trace, _whole], ids=["streamed", "whole"])
def read(request: pytest.FixtureRequest) -> Reader:
    reader: Reader = request.param
    return reader


def _write(tmp_path: Path, doc: Any, name: str = "rank0.pt.trace.json") -> Path:
    p = tmp_path / name
    data = json.dumps(doc).encode()
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return p


def _op(name: str = "aten::mm", **fields: Any) -> dict[str, Any]:
    """A complete host event (``"ph": "X"``): 10 µs in, 2 µs long, on thread 7."""
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 7, "ts": 10, "dur": 2,
            "args": {}, **fields}  # fmt: skip


def test_microseconds_become_int64_nanoseconds(tmp_path: Path, read: Reader) -> None:
    """ts = baseTimeNanoseconds + ts_us * 1000, dur = dur_us * 1000, rounded to the ns."""
    doc = {
        "baseTimeNanoseconds": 1_000_000_000,
        "traceEvents": [
            _op("a", ts=10.5, dur=2.25),
            _op("b", ts=11, dur=0.0006),  # 0.6 ns rounds to 1 ns
            _op("c", ts=12.0004, dur=0.0004),  # 0.4 ns rounds to 0 ns
        ],
    }
    cpu = read(_write(tmp_path, doc)).cpu
    assert cpu["ts"].dtype == np.int64 and cpu["dur"].dtype == np.int64
    assert cpu.strings("name").tolist() == ["a", "b", "c"]
    assert cpu["ts"].tolist() == [1_000_010_500, 1_000_011_000, 1_000_012_000]
    assert cpu["dur"].tolist() == [2_250, 1, 0]


def test_a_realtime_timestamp_keeps_its_nanoseconds(tmp_path: Path, read: Reader) -> None:
    """1700000000123456.75 µs is exact in float64, but its product by 1000 is not
    (float64 steps by 256 there): the conversion is exact all the same."""
    ts_us = 1_700_000_000_123_456.75
    assert int(ts_us * 1000) != 1_700_000_000_123_456_750  # why a plain product will not do
    t = read(_write(tmp_path, {"traceEvents": [_op(ts=ts_us, dur=1)]}))
    assert t.cpu["ts"].tolist() == [1_700_000_000_123_456_750]
    assert t.meta["base_time_ns"] == 0


def test_only_complete_events_become_rows(tmp_path: Path, read: Reader) -> None:
    """Flow, instant, metadata, counter and begin/end events are skipped; so is the
    whole-trace span (category ``Trace``)."""
    events = [
        _op("kept"),
        {"ph": "s", "id": 1, "pid": 1, "tid": 7, "ts": 10, "cat": "ac2g", "name": "flow"},
        {"ph": "f", "id": 1, "pid": 1, "tid": 7, "ts": 11, "cat": "ac2g", "name": "flow"},
        {"ph": "i", "s": "t", "pid": 1, "tid": 7, "ts": 12, "name": "instant"},
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "python"}},
        {"ph": "C", "pid": 1, "ts": 13, "name": "memory", "args": {"bytes": 10}},
        {"ph": "B", "pid": 1, "tid": 7, "ts": 14, "name": "begin"},
        {"ph": "E", "pid": 1, "tid": 7, "ts": 15},
        _op("whole trace", cat="Trace", ts=0, dur=100),
        _op("kept too", ts=20),
    ]  # fmt: skip
    t = read(_write(tmp_path, {"traceEvents": events}))
    assert t.cpu.strings("name").tolist() == ["kept", "kept too"]
    assert t.cpu["ts"].tolist() == [10_000, 20_000]
    assert len(t.gpu) == len(t.gpu_ann) == len(t.comms) == 0
    assert t.meta["dropped_events"] == 0


def test_a_thread_id_that_is_not_a_number_reads_as_minus_one(tmp_path: Path, read: Reader) -> None:
    events = [_op("a", tid=7), _op("b", tid="main thread"), _op("c", tid=8)]
    cpu = read(_write(tmp_path, {"traceEvents": events})).cpu
    assert cpu["tid"].dtype == np.int64
    assert cpu["tid"].tolist() == [7, -1, 8]


def test_missing_fields(tmp_path: Path, read: Reader) -> None:
    """Without a start or a duration an event is not a row (and not counted as dropped:
    nothing was out of range); a missing category, name or args reads as empty."""
    no_ts, no_dur = _op("no ts"), _op("no dur")
    del no_ts["ts"], no_dur["dur"]
    bare = {"ph": "X", "ts": 30, "dur": 1}  # no cat, name, tid or args
    t = read(_write(tmp_path, {"traceEvents": [_op("whole"), no_ts, no_dur, bare]}))
    cpu = t.cpu
    assert cpu.strings("name").tolist() == ["whole", ""]
    assert cpu.strings("cat").tolist() == ["cpu_op", ""]
    assert cpu["tid"].tolist() == [7, -1]
    assert cpu["correlation"].tolist() == [-1, -1]
    assert cpu["external_id"].tolist() == [-1, -1]
    assert t.meta["dropped_events"] == 0
    assert t.meta["rank"] is None and t.meta["world_size"] is None


def test_times_out_of_int64_range_are_dropped_and_counted(tmp_path: Path, read: Reader) -> None:
    events = [
        _op("ok"),
        _op("far future", ts=1e300),
        _op("negative", dur=-1),
        _op("too long", dur=1e14),  # over ~116 days
    ]
    t = read(_write(tmp_path, {"traceEvents": events}))
    assert t.cpu.strings("name").tolist() == ["ok"]
    assert t.meta["dropped_events"] == 3


def test_gpu_activity_by_category(tmp_path: Path, read: Reader) -> None:
    """Kernels and copies go to ``gpu`` with their args; annotations to ``gpu_ann``; a
    cuda_sync range without a stream is a host range."""
    kernel = _op("sgemm", cat="kernel", ts=100, dur=5, args={
        "stream": 7, "device": 1, "correlation": 42, "External id": 9,
        "blocks per SM": 1.5, "est. achieved occupancy %": 50})  # fmt: skip
    copy = _op("Memcpy HtoD", cat="gpu_memcpy", ts=106, dur=1, args={"stream": 7, "bytes": 4096})
    ann = _op("forward", cat="gpu_user_annotation", ts=99, dur=10, args={"stream": 7})
    sync = _op("cudaDeviceSynchronize", cat="cuda_sync", ts=120, dur=3)
    t = read(_write(tmp_path, {"traceEvents": [kernel, copy, ann, sync]}))
    gpu = t.gpu
    assert gpu.strings("name").tolist() == ["sgemm", "Memcpy HtoD"]
    assert gpu.strings("kind").tolist() == ["kernel", "memcpy"]
    assert gpu["ts"].tolist() == [100_000, 106_000] and gpu["dur"].tolist() == [5_000, 1_000]
    assert gpu["stream"].tolist() == [7, 7] and gpu["device"].tolist() == [1, 0]
    assert gpu["correlation"].tolist() == [42, -1]
    assert gpu["external_id"].tolist() == [9, -1]
    assert gpu["bytes"].tolist() == [-1, 4096]
    assert gpu["blocks_per_sm"][0] == 1.5 and np.isnan(gpu["blocks_per_sm"][1])
    assert gpu["occupancy_pct"][0] == 50.0 and np.isnan(gpu["occupancy_pct"][1])
    assert gpu["is_comm"].tolist() == [False, False]
    assert t.gpu_ann.strings("name").tolist() == ["forward"]
    assert t.gpu_ann["stream"].tolist() == [7]
    assert t.cpu.strings("name").tolist() == ["cudaDeviceSynchronize"]
    assert t.meta["has_gpu"] is True


def test_an_nccl_kernel_is_a_collective_launched_when_the_host_launched_it(
    tmp_path: Path, read: Reader
) -> None:
    """The kernel ran at 200 µs; the host launched it (same correlation) at 150 µs.
    1024 floats are 4096 bytes; "allreduce" is all_reduce."""
    launch = _op("cudaLaunchKernel", cat="cuda_runtime", ts=150, dur=3, args={"correlation": 5})
    kernel = _op("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*)", cat="kernel", ts=200,
                 dur=40, args={"stream": 20, "correlation": 5, "Collective name": "allreduce",
                               "In msg nelems": 1024, "dtype": "Float",
                               "Process Group Name": "0", "Seq": 3})  # fmt: skip
    doc = {
        "distributedInfo": {"rank": 2, "world_size": 4, "backend": "nccl"},
        "deviceProperties": [{"name": "NVIDIA H200", "numSms": 132}],
        "traceEvents": [launch, kernel],
    }
    t = read(_write(tmp_path, doc))
    assert t.gpu["is_comm"].tolist() == [True]
    comms = t.comms
    assert comms.strings("name").tolist() == ["all_reduce"]
    assert comms.strings("raw_name").tolist() == ["ncclDevKernel_AllReduce_Sum_f32_RING_LL"]
    assert comms["ts"].tolist() == [200_000] and comms["dur"].tolist() == [40_000]
    assert comms["launch_ts"].tolist() == [150_000]
    assert comms.strings("pg").tolist() == ["0"] and comms["seq"].tolist() == [3]
    assert comms["bytes"].tolist() == [4096]
    assert t.meta["comm_source"] == "gpu"
    assert (t.meta["rank"], t.meta["world_size"], t.meta["backend"]) == (2, 4, "nccl")
    assert (t.meta["device_name"], t.meta["num_sms"]) == ("NVIDIA H200", 132)


def test_a_gloo_collective_is_its_host_range(tmp_path: Path, read: Reader) -> None:
    """Without NCCL kernels the collectives are host ranges; a 4x4 float tensor is 64 bytes."""
    gloo = _op("gloo:all_reduce", cat="user_annotation", ts=50, dur=8,
               args={"Input Dims": [[4, 4]], "Input type": ["float"]})  # fmt: skip
    t = read(_write(tmp_path, {"traceEvents": [_op("aten::add"), gloo]}))
    assert t.comms.strings("name").tolist() == ["all_reduce"]
    assert t.comms["launch_ts"].tolist() == t.comms["ts"].tolist() == [50_000]
    assert t.comms["bytes"].tolist() == [64] and t.comms["seq"].tolist() == [-1]
    assert t.meta["comm_source"] == "cpu" and t.meta["has_gpu"] is False


def test_odd_value_types_take_the_forgiving_path_to_the_same_values(tmp_path: Path) -> None:
    """A string correlation fails the typed schema; the forgiving path reads the whole
    batch as dicts and converts each value as the typed decoder would."""
    plain = [_op("a", args={"correlation": 42}), _op("b", ts=11, tid="main")]
    odd = [_op("a", args={"correlation": "42"}), _op("b", ts=11, tid="main")]
    want = parse_trace(_write(tmp_path, {"traceEvents": plain}, "plain.json"))
    for reader in (parse_trace, _whole):
        got = reader(_write(tmp_path, {"traceEvents": odd}, "odd.json"))
        assert got.cpu.vocab == want.cpu.vocab
        for c in want.cpu.cols:
            assert got.cpu[c].tolist() == want.cpu[c].tolist(), c


def test_a_bare_event_array_and_a_gzipped_file_read_alike(tmp_path: Path) -> None:
    events = [_op("a"), _op("b", ts=12)]
    bare = parse_trace(_write(tmp_path, events, "bare.json"))
    gz = parse_trace(_write(tmp_path, {"traceEvents": events}, "rank0.pt.trace.json.gz"))
    assert bare.cpu.strings("name").tolist() == gz.cpu.strings("name").tolist() == ["a", "b"]
    assert bare.cpu["ts"].tolist() == gz.cpu["ts"].tolist() == [10_000, 12_000]


def test_a_distributed_info_written_as_a_python_repr(tmp_path: Path) -> None:
    """Some old traces hold distributedInfo as a repr string; a broken one still gives
    its rank and world size."""
    doc = {"distributedInfo": "{'rank': 3, 'world_size': 8, 'pg': <object>}", "traceEvents": []}
    t = parse_trace(_write(tmp_path, doc))
    assert (t.meta["rank"], t.meta["world_size"]) == (3, 8)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"traceEvents": [', "is not valid JSON"),
        (b"42", "not a torch.profiler trace"),
    ],
)
def test_a_file_that_is_not_a_trace_is_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    p = tmp_path / "rank0.pt.trace.json"
    p.write_bytes(content)
    with pytest.raises(RankscopeError, match=message):
        parse_trace(p)


def test_the_collector_s_origin_tag_is_read(tmp_path: Path, read: Reader) -> None:
    tag = {"format": 1, "run_id": "abc", "rank": 2, "attempt": 1, "first_step": 4}
    p = _write(tmp_path, {"rankscope": tag, "traceEvents": [_op()]})
    assert read(p).meta["origin"] == {"run_id": "abc", "rank": 2, "attempt": 1}
    # another tool's trace says nothing of its origin
    assert read(_write(tmp_path, {"traceEvents": [_op()]}, "b.json")).meta["origin"] is None


@pytest.mark.parametrize(
    "tag",
    [
        {"run_id": 5, "rank": -1, "attempt": True},
        {"run_id": "", "rank": 1 << 40, "attempt": -3},
        {"rank": "2", "attempt": 1.5},
    ],
    ids=["wrong-types", "out-of-range", "strings-and-floats"],
)
def test_an_origin_tag_of_odd_values_reads_as_unknown(
    tmp_path: Path, read: Reader, tag: dict[str, Any]
) -> None:
    p = _write(tmp_path, {"rankscope": tag, "traceEvents": [_op()]})
    assert read(p).meta["origin"] == {"run_id": None, "rank": None, "attempt": None}
