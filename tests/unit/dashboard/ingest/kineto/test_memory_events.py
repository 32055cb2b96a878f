"""``[memory]`` instants (``profile_memory=True``) -> the ``memory`` table, both decode paths.

Three hand-built events on GPU 0 and one on the CPU: the totals a user reads in the
trace come out as they are, in time order, with the event's own change in ``bytes``.
The forgiving path (a number written as a string elsewhere in the trace) gives the
same table as the typed one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankscope.dashboard.ingest.kineto import (
    RankTrace,
    empty_trace,
    load_trace_doc,
    parse_trace,
    tables_from_doc,
)

MiB = 1 << 20


def _mem(ts: float, allocated: int, reserved: int, change: int, device: int = 0) -> dict[str, Any]:
    return {
        "ph": "i", "cat": "cpu_instant_event", "s": "t", "name": "[memory]", "pid": 1,
        "tid": 1, "ts": ts,
        "args": {"Total Reserved": reserved, "Total Allocated": allocated, "Bytes": change,
                 "Device Id": device if device >= 0 else -1, "Device Type": 1 if device >= 0
                 else 0, "Addr": 1234, "finished": False, "Ev Idx": 1},
    }  # fmt: skip


EVENTS = [
    _mem(30.0, 3 * MiB, 8 * MiB, -1 * MiB),  # written out of order: the table sorts by ts
    _mem(10.0, 2 * MiB, 4 * MiB, 2 * MiB),
    _mem(20.0, 4 * MiB, 8 * MiB, 2 * MiB),
    _mem(15.0, 64, 0, 64, device=-1),
    {"ph": "i", "name": "Iteration Start: PyTorch Profiler", "ts": 1.0, "s": "g", "args": {}},
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 5, "dur": 2},
]
PROPS = [{"id": 0, "name": "NVIDIA H200", "totalGlobalMem": 150109880320, "numSms": 132}]


def _write(tmp_path: Path, events: list[Any]) -> Path:
    p = tmp_path / "rank0.pt.trace.json"
    p.write_text(json.dumps({"deviceProperties": PROPS, "traceEvents": events}))
    return p


def _whole(path: Path) -> RankTrace:
    return tables_from_doc(load_trace_doc(path), str(path))


@pytest.mark.parametrize("read", [parse_trace, _whole], ids=["streamed", "whole"])
@pytest.mark.parametrize("odd", [False, True], ids=["typed", "forgiving"])
def test_memory_instants_become_rows_in_time_order(tmp_path: Path, read: Any, odd: bool) -> None:
    events = list(EVENTS)
    if odd:  # a string where a number belongs sends the whole trace down the forgiving path
        events.append({"ph": "X", "cat": "cpu_op", "name": "x", "ts": "5", "dur": 1})
    t = read(_write(tmp_path, events))
    m = t.memory
    assert m["ts"].tolist() == [10_000, 15_000, 20_000, 30_000]  # ns
    assert m["device_type"].tolist() == [1, 0, 1, 1]
    assert m["device_id"].tolist() == [0, -1, 0, 0]
    assert m["allocated"].tolist() == [2 * MiB, 64, 4 * MiB, 3 * MiB]
    assert m["reserved"].tolist() == [4 * MiB, 0, 8 * MiB, 8 * MiB]
    assert m["bytes"].tolist() == [2 * MiB, 64, 2 * MiB, -1 * MiB]
    assert t.meta["device_memory"] == {"0": 150109880320}
    assert len(t.cpu) == 1  # the complete event is still read; the other instant is not a row


def test_a_trace_without_memory_events_has_an_empty_table(tmp_path: Path) -> None:
    t = parse_trace(_write(tmp_path, EVENTS[4:]))
    assert len(t.memory) == 0 and set(t.memory.cols) == set(empty_trace().memory.cols)
    assert t.memory["allocated"].dtype == np.int64


def test_a_memory_event_without_a_time_is_left_out(tmp_path: Path) -> None:
    no_ts = _mem(0.0, MiB, MiB, MiB)
    del no_ts["ts"]
    t = parse_trace(_write(tmp_path, [no_ts, *EVENTS[:1]]))
    assert t.memory["allocated"].tolist() == [3 * MiB]
