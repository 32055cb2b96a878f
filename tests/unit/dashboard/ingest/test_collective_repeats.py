"""A collective log read with each flight-recorder entry once (issue 24).

A record equal to one already read (a log appended to itself) is left out and
named with its file; records of one entry that differ (the same entry with its
state or times filled in), entries that share a seq (one coalesced group) and a
p2p and a collective with the same number are no fault. The report's streamed
table (``rank._stream_light_comms``) and ``rundir.read_collectives`` agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankscope.dashboard.ingest.rank import _stream_light_comms
from rankscope.profiler import rundir

T0 = 1_700_000_000_000_000_000
RANK = 1


def record(seq: int, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": seq,
        "pg": "0",
        "pg_desc": "default_pg",
        "name": "all_reduce",
        "p2p": False,
        "bytes": 4096,
        "enqueue_ns": T0 + seq * 1_000_000,
        "start_ns": None,
        "end_ns": None,
        "duration_ms": None,
        "state": "completed",
    }
    out.update(fields)
    return out


def write_log(run: Path, rows: list[dict[str, Any]]) -> None:
    header = {"schema": rundir.COLLECTIVES_SCHEMA, "rank": RANK}
    lines = [json.dumps(r) for r in [header, *rows]]
    rundir.collectives_path(run, RANK).write_text("\n".join(lines) + "\n")


def read_both(run: Path) -> tuple[list[tuple[int, int]], list[str], list[str]]:
    """(seq, enqueue_ns) of each row as the report reads them, and both readers' problems."""
    streamed: list[str] = []
    table = _stream_light_comms(run, RANK, streamed)
    listed: list[str] = []
    rows = rundir.read_collectives(run, RANK, listed)
    got = list(zip(table["seq"].tolist(), table["enqueue_ns"].tolist(), strict=True))
    assert got == [(r["seq"], r["enqueue_ns"]) for r in rows]
    return got, streamed, listed


def test_a_log_appended_to_itself_is_read_once_and_named(tmp_path: Path) -> None:
    rows = [record(s) for s in range(1, 7)]
    write_log(tmp_path, rows + rows[2:])
    got, streamed, listed = read_both(tmp_path)
    assert got == [(r["seq"], r["enqueue_ns"]) for r in rows]
    said = (
        "rank1.collectives.jsonl: 4 record(s) repeat a collective already recorded"
        " (process group 0, seq 3-6); the first record of each is kept"
    )
    assert streamed == [said] and listed == [said]


def test_repeats_in_two_groups_name_both(tmp_path: Path) -> None:
    rows = [record(1), record(1, pg="1", pg_desc="tp", enqueue_ns=T0 + 5)]
    write_log(tmp_path, rows + rows)
    got, streamed, _ = read_both(tmp_path)
    assert len(got) == 2
    assert streamed == [
        "rank1.collectives.jsonl: 2 record(s) repeat a collective already recorded"
        " (process groups 0, 1, seq 1-1); the first record of each is kept"
    ]


def test_an_entry_seen_again_with_its_end_is_no_fault(tmp_path: Path) -> None:
    # The same entry (group, seq, enqueue time) first in flight, then completed: the
    # completed record is the one kept, in the first one's place, with no warning.
    early = record(2, state="started", start_ns=T0 + 2_000_100)
    done = record(2, start_ns=T0 + 2_000_100, end_ns=T0 + 2_500_000, duration_ms=0.4)
    write_log(tmp_path, [record(1), early, record(3), done])
    got, streamed, listed = read_both(tmp_path)
    assert got == [(1, T0 + 1_000_000), (2, T0 + 2_000_000), (3, T0 + 3_000_000)]
    assert streamed == [] and listed == []
    table = _stream_light_comms(tmp_path, RANK, [])
    assert table["end_ns"].tolist() == [-1, T0 + 2_500_000, -1]
    assert [r["state"] for r in rundir.read_collectives(tmp_path, RANK)] == ["completed"] * 3


def test_a_less_complete_copy_after_the_full_one_is_left_out(tmp_path: Path) -> None:
    done = record(2, start_ns=T0 + 2_000_100, end_ns=T0 + 2_500_000)
    write_log(tmp_path, [done, record(2, state="scheduled")])
    _, streamed, _ = read_both(tmp_path)
    assert streamed == []
    assert _stream_light_comms(tmp_path, RANK, [])["end_ns"].tolist() == [T0 + 2_500_000]


def test_entries_sharing_a_seq_are_all_kept(tmp_path: Path) -> None:
    # One coalesced group's entries share its seq; a p2p seq counts on its own.
    rows = [
        record(4, name="send", p2p=True, enqueue_ns=T0 + 10),
        record(4, name="recv", p2p=True, enqueue_ns=T0 + 11),
        record(4, enqueue_ns=T0 + 11),
        record(4, enqueue_ns=T0 + 12, bytes=8),
    ]
    write_log(tmp_path, rows)
    got, streamed, listed = read_both(tmp_path)
    assert len(got) == 4 and streamed == [] and listed == []


def test_a_log_without_repeats_is_read_as_written(tmp_path: Path) -> None:
    rows = [record(s, enqueue_ns=T0 - s) for s in range(5)]  # not in enqueue order
    write_log(tmp_path, rows)
    got, streamed, _ = read_both(tmp_path)
    assert got == [(r["seq"], r["enqueue_ns"]) for r in rows] and streamed == []
