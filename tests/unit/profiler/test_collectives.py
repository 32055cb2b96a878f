"""Flight-recorder entries to collectives.jsonl: conversion, dedupe across dumps, ring wrap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
)
from rankscope.profiler.faults import Faults


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
