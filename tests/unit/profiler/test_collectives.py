"""Flight-recorder entries to collectives.jsonl: conversion, dedupe across dumps, ring wrap."""

from __future__ import annotations

import copy
import json
import pickle
import types
from pathlib import Path
from typing import Any

import pytest

from rankscope.profiler import rundir
from rankscope.profiler.collectives import (
    BUDGET,
    MAX_PERIOD_S,
    MIN_PERIOD_S,
    FlightRecorderLog,
    NewEntries,
    canonical_name,
    convert_entry,
    entry_bytes,
    find_dumps,
    open_log,
    parameter_names,
)
from rankscope.profiler.faults import Faults

TESTS = Path(__file__).resolve().parents[2]


def entry(rid: int, seq: int | None = None, **kw: Any) -> dict[str, Any]:
    """A gloo entry as torch 2.13's _dump_fr_trace gives it."""
    e = {
        "record_id": rid,
        "pg_id": 0,
        "process_group": ["0", "default_pg"],
        "collective_seq_id": rid + 1 if seq is None else seq,
        "p2p_seq_id": 0,
        "is_p2p": False,
        "op_id": rid + 1,
        "profiling_name": "gloo:all_reduce",
        "input_sizes": [[1000]],
        "input_dtypes": ["Float"],
        "output_sizes": [[1000]],
        "time_created_ns": 1_700_000_000_000_000_000 + rid * 1000,
        "time_discovered_started_ns": 0,
        "time_discovered_completed_ns": 0,
        "state": "scheduled",
        "retired": True,
        "timeout_ms": 1800000,
    }
    e.update(kw)
    return e


def test_a_gloo_entry_becomes_one_record_in_the_documented_format() -> None:
    assert convert_entry(entry(4)) == {
        "seq": 5,
        "pg": "0",
        "pg_desc": "default_pg",
        "name": "all_reduce",
        "p2p": False,
        "bytes": 4000,
        "enqueue_ns": 1_700_000_000_000_004_000,
        "start_ns": None,
        "end_ns": None,
        "duration_ms": None,
        "state": "scheduled",
    }


def test_an_nccl_entry_keeps_its_start_end_and_gpu_duration() -> None:
    e = entry(
        0,
        profiling_name="nccl:_reduce_scatter_base",
        input_sizes=[[8, 1024]],
        input_dtypes=["BFloat16"],
        time_discovered_started_ns=1_700_000_000_000_100_000,
        time_discovered_completed_ns=1_700_000_000_000_900_000,
        duration_ms=0.75,
        state="completed",
        retired=False,
    )
    row = convert_entry(e)
    assert row is not None
    assert (row["name"], row["bytes"], row["duration_ms"], row["state"]) == (
        "reduce_scatter",
        8 * 1024 * 2,
        0.75,
        "completed",
    )
    assert (row["start_ns"], row["end_ns"]) == (
        1_700_000_000_000_100_000,
        1_700_000_000_000_900_000,
    )


def test_p2p_ops_use_their_own_sequence_and_a_plain_name() -> None:
    row = convert_entry(entry(3, is_p2p=True, p2p_seq_id=7, profiling_name="nccl:send 0->1"))
    assert row is not None and (row["seq"], row["name"], row["p2p"]) == (7, "send", True)


def test_names_and_sizes() -> None:
    assert canonical_name("gloo:broadcast") == "broadcast"
    assert canonical_name("nccl:_allgather_base") == "all_gather"
    assert canonical_name("gloo:barrier") == "barrier"
    assert entry_bytes([], []) == 0  # a barrier moves nothing
    assert entry_bytes([[2, 3], [4]], ["Long", "Half"]) == 6 * 8 + 4 * 2
    assert entry_bytes([[2]], ["Mystery"]) == -1
    assert convert_entry({"record_id": 1}) is None


def test_entries_seen_in_several_dumps_are_written_once() -> None:
    seen = NewEntries()
    first = seen.select([entry(i) for i in range(5)])
    second = seen.select([entry(i) for i in range(8)])  # the ring still holds 0..4
    assert [e["record_id"] for e in first] == [0, 1, 2, 3, 4]
    assert [e["record_id"] for e in second] == [5, 6, 7]
    assert seen.dropped == 0 and seen.done_below == 8 and not seen.done


def test_a_wrapped_ring_counts_what_it_lost() -> None:
    seen = NewEntries()
    seen.select([entry(i) for i in range(4)])
    # A 4-entry ring after 6 more collectives: 4 and 5 were overwritten unseen.
    out = seen.select([entry(i) for i in range(6, 10)])
    assert [e["record_id"] for e in out] == [6, 7, 8, 9]
    assert seen.dropped == 2


def test_a_log_started_mid_job_begins_with_what_the_ring_holds() -> None:
    seen = NewEntries()
    assert [e["record_id"] for e in seen.select([entry(i) for i in range(50, 54)])] == [
        50,
        51,
        52,
        53,
    ]
    assert seen.dropped == 0


def test_an_entry_in_flight_waits_until_it_completes() -> None:
    seen = NewEntries()
    running = entry(1, state="started", retired=False)
    out = seen.select([entry(0), running, entry(2)])
    assert [e["record_id"] for e in out] == [0, 2]
    out = seen.select([entry(0), entry(1, state="completed", retired=False), entry(2)])
    assert [e["record_id"] for e in out] == [1]
    # A hung one is still written by the final read, in its state.
    out = seen.select([entry(3, state="started", retired=False)], final=True)
    assert [e["state"] for e in out] == ["started"]


class FakeDump:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self) -> dict[str, Any]:
        return {"entries": list(self.entries)}


def test_polls_follow_the_collective_rate_within_bounds() -> None:
    dump = FakeDump()
    t = [100.0]
    log = FlightRecorderLog([("fr", dump)], Faults("t"), buffer_size=2000, clock=lambda: t[0])
    assert log.tick(100.0) == []  # not due yet: the first poll is MIN_PERIOD_S after start
    dump.entries = [entry(i) for i in range(10)]
    assert len(log.poll(102.0)) == 10
    # 1000 collectives in 2 s: the ring (2000) half fills in 1 s, but never under MIN_PERIOD_S.
    dump.entries = [entry(i) for i in range(10, 1010)]
    assert len(log.poll(104.0)) == 1000
    assert log.next_deadline() == 104.0 + MIN_PERIOD_S
    # 10 collectives in 10 s: half the ring would take 100 s; MAX_PERIOD_S caps it.
    dump.entries = [entry(i) for i in range(1010, 1020)]
    log.poll(114.0)
    assert log.next_deadline() == 114.0 + MAX_PERIOD_S
    assert 1 / BUDGET >= 50  # a dump never takes more than 2% of the time between polls


def test_the_first_read_times_the_second_from_the_rate_since_the_start() -> None:
    # 400 collectives a second: the ring (2000) would be lost many times over if the
    # second read waited MAX_PERIOD_S; half of it fills in 2.5 s.
    dump = FakeDump()
    t = [100.0]
    log = FlightRecorderLog([("fr", dump)], Faults("t"), buffer_size=2000, clock=lambda: t[0])
    dump.entries = [entry(i) for i in range(800)]
    assert len(log.poll(102.0)) == 800
    assert log.next_deadline() == 102.0 + 2.5


def test_a_steady_rate_lets_three_quarters_of_the_ring_fill_until_an_entry_is_lost() -> None:
    dump = FakeDump()
    t = [0.0]
    log = FlightRecorderLog([("fr", dump)], Faults("t"), buffer_size=2000, clock=lambda: t[0])
    first = 0

    def read(at: float, n: int) -> float:
        nonlocal first
        dump.entries = [entry(i) for i in range(max(0, first + n - 2000), first + n)]
        first += n
        log.poll(at)
        return log.next_deadline() - at

    assert read(4.0, 400) == 10.0  # 100/s: half the ring is 10 s
    assert read(14.0, 1000) == 10.0
    # Three steady rates in a row (the first included): three quarters of the ring, at
    # the fastest of them.
    assert read(24.0, 1100) == pytest.approx(0.75 * 2000 / 110)
    # A jump (300/s) is not steady: half the ring at that rate.
    assert read(30.0, 1800) == pytest.approx(0.5 * 2000 / 300)
    # The rate steadies again but an entry was lost: half a ring from then on.
    for at in (35.0, 40.0, 45.0, 50.0):
        read(at, 1500 if at != 35.0 else 2500)
    assert log.dropped > 0
    assert log.next_deadline() - 50.0 == pytest.approx(0.5 * 2000 / 300)


def test_a_failing_dump_turns_this_part_off_and_never_raises() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no flight recorder")

    faults = Faults("t")
    log = FlightRecorderLog([("fr", broken)], faults)
    assert log.poll(10.0) == [] and log.disabled and faults.disabled("collectives")


def test_read_collectives_drops_malformed_records(tmp_path: Path) -> None:
    good = convert_entry(entry(0))
    assert good is not None
    lines = [
        json.dumps(good),
        json.dumps({**good, "seq": -1}),
        json.dumps({**good, "enqueue_ns": 2**70}),
        json.dumps({**good, "start_ns": "soon"}),
        json.dumps({**good, "p2p": 0}),
        "{not json",
        json.dumps({**good, "seq": 2, "duration_ms": 1.5, "end_ns": 5}),
    ]
    rundir.collectives_path(tmp_path, 3).write_text("\n".join(lines) + "\n")
    rows = rundir.read_collectives(tmp_path, 3)
    assert [r["seq"] for r in rows] == [1, 2]
    assert rundir.read_collectives(tmp_path, 4) == []


# ---------------------------------------------------------------- NCCL's ring, from a real dump

REAL_DUMP = TESTS / "data" / "nccl_flight_recorder" / "nccl_fr_dump_h200.json"


def real_dump() -> dict[str, Any]:
    """What ``_dump_nccl_trace_json`` gave after a 1-rank DDP job on an H200 (torch 2.11)."""
    data: dict[str, Any] = json.loads(REAL_DUMP.read_text())
    return data


def retired(dump: dict[str, Any], duration_ms: float = 0.5) -> dict[str, Any]:
    """The same ring after NCCL's watchdog retired every entry (each got its GPU time)."""
    out = copy.deepcopy(dump)
    for e in out["entries"]:
        e["retired"] = True
        e.setdefault("duration_ms", duration_ms)
    return out


class FakeC10d:
    """``torch._C._distributed_c10d`` of a CUDA build, with torch 2.11's dump signatures.

    ``nccl`` is what NCCL's ring holds (the real dump); the generic ring is empty,
    as on the real machine. Every call's keyword arguments are kept in ``calls``.
    """

    def __init__(self, nccl: dict[str, Any], fr: dict[str, Any] | None = None) -> None:
        self.nccl = nccl
        self.fr = fr if fr is not None else {"version": "2.10", "entries": []}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _dump_nccl_trace(
        self,
        includeCollectives: bool | None = None,
        includeStackTraces: bool | None = None,
        onlyActive: bool | None = None,
    ) -> bytes:
        self.calls.append(
            (
                "_dump_nccl_trace",
                dict(
                    includeCollectives=includeCollectives,
                    includeStackTraces=includeStackTraces,
                    onlyActive=onlyActive,
                ),
            )
        )
        return pickle.dumps(self.nccl)

    def _dump_nccl_trace_json(
        self, includeCollectives: bool | None = None, onlyActive: bool | None = None
    ) -> str:
        self.calls.append(("_dump_nccl_trace_json", {}))
        return json.dumps(self.nccl)

    def _dump_fr_trace(
        self,
        includeCollectives: bool | None = None,
        includeStackTraces: bool | None = None,
        onlyActive: bool | None = None,
    ) -> bytes:
        self.calls.append(("_dump_fr_trace", {}))
        return pickle.dumps(self.fr)

    def _dump_fr_trace_json(
        self, includeCollectives: bool | None = None, onlyActive: bool | None = None
    ) -> str:
        return json.dumps(self.fr)


def test_every_real_nccl_entry_converts_to_its_record() -> None:
    entries = real_dump()["entries"]
    rows = [convert_entry(e) for e in entries]
    assert all(r is not None for r in rows)
    got = [(r["name"], r["seq"], r["bytes"]) for r in rows if r is not None]
    assert got[:4] == [
        ("all_gather", 1, 8),  # DDP's set-up: one Long
        ("broadcast", 2, 12 * 8),
        ("broadcast", 3, 8392704 * 4),  # the model's parameters, float32
        ("all_reduce", 4, 8392704 * 4),
    ]
    assert [n for n, _, _ in got].count("all_reduce") == 11
    assert got[-3:] == [("all_gather", 17, 1 << 18), ("broadcast", 18, 1 << 18), ("barrier", 19, 4)]
    first = rows[0]
    assert first == {
        "seq": 1,
        "pg": "0",
        "pg_desc": "default_pg",
        "name": "all_gather",
        "p2p": False,
        "bytes": 8,
        "enqueue_ns": 1796399965866365396,
        "start_ns": 1796399965907679963,
        "end_ns": 1796399965907681392,
        "duration_ms": 0.23971199989318848,
        "state": "completed",
    }
    for e, r in zip(entries, rows, strict=True):  # every entry, field by field
        assert r is not None
        assert (r["pg"], r["pg_desc"]) == tuple(e["process_group"])
        assert (r["seq"], r["p2p"]) == (e["collective_seq_id"], False)
        assert r["enqueue_ns"] == e["time_created_ns"]
        assert (r["start_ns"], r["end_ns"]) == (
            e["time_discovered_started_ns"],
            e["time_discovered_completed_ns"],
        )
        assert r["enqueue_ns"] < r["start_ns"] <= r["end_ns"]
        assert r["state"] == "completed"
    # Retired by the watchdog: a GPU time. Not yet retired at the dump: none.
    assert [r["duration_ms"] is not None for r in rows if r is not None] == [True] * 3 + [
        False
    ] * 16


def test_the_nccl_ring_is_read_with_the_arguments_its_signature_names() -> None:
    c10d = FakeC10d(real_dump())
    dumps = find_dumps(c10d)
    assert [s for s, _ in dumps] == ["nccl", "fr"]
    assert len(dict(dumps)["nccl"]()["entries"]) == 19
    name, kwargs = c10d.calls[0]
    assert name == "_dump_nccl_trace"
    assert kwargs == {"includeCollectives": True, "includeStackTraces": False, "onlyActive": False}


def test_argument_names_come_from_pybinds_docstring_or_none() -> None:
    class Pybind:
        __doc__ = (
            "_dump_nccl_trace_json(includeCollectives: bool | None = None, onlyActive: "
            "bool | None = None) -> str\n\n  Arguments: ..."
        )

        def __call__(self, *a: Any, **k: Any) -> str:
            return "{}"

    assert parameter_names(Pybind().__call__) is not None  # a Python callable: inspect
    fn = Pybind()
    fn.__call__  # noqa: B018 - a pybind function has no inspectable signature:
    assert parameter_names(types.SimpleNamespace(__doc__=Pybind.__doc__)) == [
        "includeCollectives",
        "onlyActive",
    ]
    assert parameter_names(types.SimpleNamespace(__doc__="Overloaded function.")) is None


def test_an_old_torch_dump_without_arguments_is_called_without_any() -> None:
    def _dump_nccl_trace() -> bytes:  # torch 2.3
        return pickle.dumps({"entries": real_dump()["entries"][:2]})

    ((source, dump),) = find_dumps(types.SimpleNamespace(_dump_nccl_trace=_dump_nccl_trace))
    assert source == "nccl" and len(dump()["entries"]) == 2


def test_a_failing_pickle_dump_falls_back_to_json() -> None:
    c10d = FakeC10d(real_dump())

    def broken(**kw: Any) -> bytes:
        raise TypeError("incompatible function arguments")

    c10d._dump_nccl_trace = broken  # type: ignore[method-assign, assignment]
    dump = dict(find_dumps(c10d))["nccl"]
    assert len(dump()["entries"]) == 19
    assert getattr(dump, "function", None) == "_dump_nccl_trace_json"


def test_nccl_entries_wait_one_poll_for_their_gpu_time() -> None:
    c10d = FakeC10d(real_dump())
    log = FlightRecorderLog(find_dumps(c10d), Faults("t"), clock=lambda: 0.0)
    first = log.poll(10.0)
    # Retired ones (seq 1-3) at once; completed but unretired ones wait for the watchdog.
    assert [r["seq"] for r in first] == [1, 2, 3]
    c10d.nccl = retired(c10d.nccl, 0.5)
    second = log.poll(20.0)
    assert [r["seq"] for r in second] == list(range(4, 20))
    assert all(r["duration_ms"] == 0.5 for r in second)
    info = log.describe()
    assert info["sources"] == ["nccl"] and info["written"] == 19 and info["absent"] is None
    assert info["readers"]["nccl"] == {
        "function": "_dump_nccl_trace",
        "entries": 19,
        "written": 19,
        "gpu_timed": 19,
        "error": None,
    }
    assert info["readers"]["fr"]["entries"] == 0 and info["readers"]["fr"]["written"] == 0


def test_an_entry_never_retired_is_written_at_the_next_poll_anyway() -> None:
    log = FlightRecorderLog(find_dumps(FakeC10d(real_dump())), Faults("t"), clock=lambda: 0.0)
    assert len(log.poll(10.0)) == 3
    later = log.poll(20.0)  # the same ring: the watchdog never retired them
    assert len(later) == 16 and all(r["duration_ms"] is None for r in later)


def test_a_failing_ring_leaves_the_other_one_working() -> None:
    gloo = {"entries": [entry(i, state="completed") for i in range(3)]}
    c10d = FakeC10d(real_dump(), fr=gloo)

    def broken(**kw: Any) -> Any:
        raise RuntimeError("NCCL ring is gone")

    c10d._dump_nccl_trace = broken  # type: ignore[method-assign, assignment]
    c10d._dump_nccl_trace_json = broken  # type: ignore[method-assign, assignment]
    faults = Faults("t")
    log = FlightRecorderLog(find_dumps(c10d), faults, clock=lambda: 0.0)
    rows = log.poll(10.0)
    assert [r["name"] for r in rows] == ["all_reduce"] * 3 and not log.disabled
    gloo["entries"].append(entry(3, state="completed"))
    assert len(log.poll(20.0)) == 1
    info = log.describe()
    assert info["sources"] == ["fr"]
    assert info["readers"]["nccl"]["error"] == (
        "_dump_nccl_trace: RuntimeError: NCCL ring is gone; "
        "_dump_nccl_trace_json: RuntimeError: NCCL ring is gone"
    )
    assert any("nccl flight recorder left out" in line for line in faults.pending)


def test_why_a_log_is_absent() -> None:
    torch = types.SimpleNamespace(
        _C=types.SimpleNamespace(_distributed_c10d=FakeC10d({"entries": []})),
        distributed=types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: False),
    )
    faults = Faults("t")
    log, why = open_log(torch, faults, {}, distributed=False)
    assert log is None and why is not None and why.startswith("no buffer")
    assert not faults.pending  # a lone process: no log line
    log, why = open_log(torch, faults, {}, distributed=True)
    assert log is None and any("no buffer" in line for line in faults.pending)
    bare = types.SimpleNamespace(_C=types.SimpleNamespace(_distributed_c10d=object()))
    log, why = open_log(bare, Faults("t"), {"TORCH_FR_BUFFER_SIZE": "2000"})
    assert log is None and why is not None and why.startswith("no dump function")

    log, why = open_log(torch, Faults("t"), {"TORCH_FR_BUFFER_SIZE": "2000"})
    assert log is not None and why is None
    log.poll(10.0)
    assert log.describe()["absent"].startswith("no process group")
    torch.distributed.is_initialized = lambda: True
    log.poll(20.0)
    assert log.describe()["absent"] == "no collective in the flight recorder"

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    faults = Faults("t")
    log = FlightRecorderLog([("nccl", broken), ("fr", broken)], faults)
    assert log.poll(10.0) == [] and log.disabled
    assert log.describe()["absent"] == (
        "source failed: nccl: RuntimeError: boom; fr: RuntimeError: boom"
    )
