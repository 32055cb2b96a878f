"""The run format's Structs: each record round-trips, and a bad field is named, never raised."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rankscope.profiler import records, rundir
from rankscope.profiler.records import BadRecord


def _strict(line: str | bytes) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


ROUND_TRIPS: list[tuple[type[msgspec.Struct], msgspec.Struct]] = [
    (records.Header, records.Header(rundir.TELEMETRY_SCHEMA, 3, source="nvml", period_ms=100)),
    (records.StepRecord, records.StepRecord(7, 1_000, 2_500, data_ns=300)),
    (records.StepRecord, records.StepRecord(8, 2_500, 4_000)),
    (
        records.CollectiveRecord,
        records.CollectiveRecord(
            12, "0", "default_pg", "all_reduce", False, 4000, 10, None, None, None, "scheduled"
        ),
    ),
    (records.TelemetrySample, records.TelemetrySample(5, "nvml", gpu_util_pct=93, power_mw=7)),
    (
        records.CaptureWindowRecord,
        records.CaptureWindowRecord(5, 7, "rank0.step5-7.pt.trace.json.gz", request="r1"),
    ),
    (records.RankMeta, records.RankMeta(2, world_size=4, start_ns=1)),
    (records.RunManifest, records.RunManifest(world_size=4, start_ns=1, exit_code=0)),
    (
        records.Heartbeat,
        records.Heartbeat(1, 99, world_size=2, host="h", pid=4, step=3, steps_per_s=1.5),
    ),
    (records.Answer, records.Answer("r1", "done", 5, 7, 9, file="f.json.gz")),
    (records.Ack, records.Ack("r1", "refused", rank=1, reason="busy", history=[])),
]


@pytest.mark.parametrize(("cls", "record"), ROUND_TRIPS, ids=lambda x: type(x).__name__)
def test_every_record_round_trips_as_strict_json(
    cls: type[msgspec.Struct], record: msgspec.Struct
) -> None:
    line = records.encode_line(record)
    _strict(line)  # parses with a strict parser
    assert records.decode(line, cls) == record
    assert records.decode(rundir.encode_json(record), cls) == record


def test_schema_fields_are_always_written() -> None:
    # Control files are recognised by their schema: a default must still be on disk.
    hb = _strict(records.encode_line(records.Heartbeat(0, 1)))
    ack = _strict(records.encode_line(records.Ack("a", "done", rank=0)))
    assert hb["schema"] == rundir.HEARTBEAT_SCHEMA and hb["rank"] == 0 and hb["step"] == 0
    assert ack["schema"] == rundir.ACK_SCHEMA and ack["rank"] == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"step": 1, "start_ns": -5, "end_ns": 3}', "start_ns is not an int64 of nanoseconds"),
        (b'{"step": 1, "start_ns": 1e300, "end_ns": 3}', "start_ns is not an int64 of nanoseconds"),
        (b'{"step": 1, "start_ns": 5, "end_ns": 3}', "end_ns is before start_ns"),
        (b'{"step": 1, "start_ns": 5}', "end_ns is missing"),
        (b'{"step": 9007199254740993, "start_ns": 1, "end_ns": 2}', "step is not an integer in"),
        (b'{"step": true, "start_ns": 1, "end_ns": 2}', "step is not an integer in"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"step": 1, "start_ns": 5', "not valid JSON"),
        (b'{"step": 1, "x": "\xff"}', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"step": 1, "x": ' + b"[" * 100_000, "not valid JSON"),
    ],
)
def test_a_bad_step_names_its_field(line: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as e:
        records.decode(line, records.StepRecord, optional=("data_ns",))
    assert str(e.value).startswith(reason)


def test_an_optional_bad_field_is_dropped_and_the_record_kept() -> None:
    row = records.decode(
        b'{"step": 1, "start_ns": 1, "end_ns": 2, "data_ns": "x"}',
        records.StepRecord,
        optional=("data_ns",),
    )
    assert records.as_dict(row) == {"step": 1, "start_ns": 1, "end_ns": 2}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"rank": 2**20}, "rank is not an integer in 0..1048575"),
        ({"world_size": 0}, "world_size is not an integer in 1..1048576"),
        ({"ts_ns": 2**63}, "ts_ns is not an int64 of nanoseconds"),
        ({"steps_per_s": -1.0}, "steps_per_s is not a finite number"),
        ({"host": "h" * 300}, "host is not a short string"),
        ({"pid": "4"}, "pid is not an integer"),
    ],
)
def test_heartbeat_bounds_are_checked_in_the_decode(fields: dict[str, Any], reason: str) -> None:
    hb = {"schema": rundir.HEARTBEAT_SCHEMA, "rank": 0, "ts_ns": 1, **fields}
    assert rundir.heartbeat_problem(hb) == reason


def test_skipped_jsonl_records_are_listed_with_line_and_field(tmp_path: Path) -> None:
    rundir.steps_path(tmp_path, 0).write_bytes(
        b'{"schema": "rankscope.steps/1", "rank": 0}\n'
        b'{"step": 0, "start_ns": 10, "end_ns": 20}\n'
        b'{"step": 1, "start_ns": "10", "end_ns": 20}\n'
        b'{"step": 2, "start_ns": 30, "end_ns": 40, "data_ns": -1}\n'
    )
    bad: list[str] = []
    rows = rundir.read_steps(tmp_path, 0, bad)
    assert rows == [
        {"step": 0, "start_ns": 10, "end_ns": 20},
        {"step": 2, "start_ns": 30, "end_ns": 40},
    ]
    assert bad == [
        "rank0.steps.jsonl line 3: start_ns is not an int64 of nanoseconds",
        # an optional field's bad value leaves the record, and is named too
        "rank0.steps.jsonl line 4: data_ns is not an int64 of nanoseconds; left out of the record",
    ]


def test_collectives_keep_their_nulls_and_drop_a_nan_duration(tmp_path: Path) -> None:
    good = {
        "seq": 1,
        "pg": "0",
        "pg_desc": "default_pg",
        "name": "all_reduce",
        "p2p": False,
        "bytes": -1,
        "enqueue_ns": 5,
        "start_ns": None,
        "end_ns": None,
        "duration_ms": None,
        "state": "scheduled",
    }
    text = json.dumps(good) + "\n" + json.dumps({**good, "seq": 2, "duration_ms": math.inf})
    rundir.collectives_path(tmp_path, 0).write_text(text + "\n")
    bad: list[str] = []
    # An old line's Infinity reads as null (the standard parser's fallback), so it stays.
    rows = rundir.read_collectives(tmp_path, 0, bad)
    assert rows[0] == good and [r["seq"] for r in rows] == [1, 2] and bad == []
    assert rows[1]["duration_ms"] is None


def test_old_telemetry_with_nan_stays_readable(tmp_path: Path) -> None:
    rundir.telemetry_path(tmp_path, 0).write_text(
        '{"schema":"rankscope.telemetry/1","rank":0,"source":"nvml","period_ms":100}\n'
        '{"ts_ns":5,"source":"nvml","gpu_util_pct":90,"gpm_dram_bw_pct":NaN}\n'
        '{"ts_ns":6,"source":"nvml","gpu_util_pct":"x","temp_c":40}\n'
    )
    assert rundir.read_telemetry(tmp_path, 0) == [
        {"ts_ns": 5, "source": "nvml", "gpu_util_pct": 90},
        {"ts_ns": 6, "source": "nvml", "temp_c": 40},
    ]


def test_deeply_nested_lines_are_skipped_by_every_reader(tmp_path: Path) -> None:
    deep = b'{"step": 1, "x": ' + b"[" * 100_000 + b"\n"
    for path in (rundir.steps_path(tmp_path, 0), rundir.telemetry_path(tmp_path, 0)):
        path.write_bytes(deep + b"[" * 100_000 + b"\n")
    rundir.collectives_path(tmp_path, 0).write_bytes(deep)
    bad: list[str] = []
    assert rundir.read_steps(tmp_path, 0, bad) == [] and len(bad) == 2
    assert rundir.read_collectives(tmp_path, 0) == [] and rundir.read_telemetry(tmp_path, 0) == []


def test_what_the_flight_recorder_log_writes_reads_back_whole(tmp_path: Path) -> None:
    # A field convert_entry adds must be added to records.CollectiveRecord (one line),
    # or the reader would leave it out: this test says so first.
    from rankscope.profiler.collectives import convert_entry

    base = {
        "record_id": 3,
        "pg_id": 0,
        "process_group": ["0", "default_pg"],
        "collective_seq_id": 4,
        "p2p_seq_id": 0,
        "is_p2p": False,
        "op_id": 4,
        "profiling_name": "gloo:all_reduce",
        "input_sizes": [[1000]],
        "input_dtypes": ["Float"],
        "output_sizes": [[1000]],
        "time_created_ns": 1_700_000_000_000_000_000,
        "time_discovered_started_ns": 0,
        "time_discovered_completed_ns": 0,
        "state": "completed",
        "retired": True,
        "timeout_ms": 1800000,
    }
    rows = [convert_entry(base), convert_entry({**base, "is_p2p": True, "p2p_seq_id": 7})]
    assert all(r is not None for r in rows)
    rundir.collectives_path(tmp_path, 0).write_bytes(b"".join(map(records.encode_line, rows)))
    bad: list[str] = []
    assert rundir.read_collectives(tmp_path, 0, bad) == rows and bad == []
