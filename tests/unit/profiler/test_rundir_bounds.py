"""rundir's readers: numbers out of bounds, bad UTF-8, special files and forged control files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rankscope.profiler import rundir


def test_steps_out_of_bounds_are_dropped(tmp_path: Path) -> None:
    lines = [
        b'{"schema": "rankscope.steps/1", "rank": 0}',
        b'{"step": 0, "start_ns": 10, "end_ns": 20}',
        b'{"step": 1, "start_ns": 1e300, "end_ns": 20}',
        b'{"step": 2, "start_ns": 1' + b"0" * 30 + b', "end_ns": 20}',
        b'{"step": 3, "start_ns": 30, "end_ns": 20}',
        b'{"step": -1, "start_ns": 10, "end_ns": 20}',
        b'{"step": 4, "start_ns": "10", "end_ns": 20}',
        b'{"step": 5, "start_ns": 10, "end_ns": 20, "x": "\xff"}',
        b'{"step": 6, "start_ns": 40, "end_ns": 50}',
        b'{"step": 7, "start_ns": 5',
    ]
    rundir.steps_path(tmp_path, 0).write_bytes(b"\n".join(lines))
    assert [r["step"] for r in rundir.read_steps(tmp_path, 0)] == [0, 6]


def test_telemetry_keeps_finite_numbers_only(tmp_path: Path) -> None:
    rundir.telemetry_path(tmp_path, 0).write_bytes(
        b'{"ts_ns": 5, "a": 1.5, "b": 1' + b"0" * 400 + b', "c": "x"}\n{"ts_ns": -1, "a": 2}\n'
    )
    assert rundir.read_telemetry(tmp_path, 0) == [{"ts_ns": 5, "a": 1.5, "c": "x"}]


def test_manifest_bounds_and_special_files(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"world_size": 10**12, "command": ["x"]}))
    (tmp_path / "rank0.meta.json").write_text(json.dumps({"rank": 0, "world_size": 2}))
    (tmp_path / "rank1.meta.json").write_text(json.dumps({"rank": 10**12}))
    os.mkfifo(tmp_path / "rank2.meta.json")
    (tmp_path / "rank3.meta.json").symlink_to("/dev/zero")
    m = rundir.read_run_manifest(tmp_path)
    assert "world_size" not in m and list(m["ranks"]) == [0]
    problems = " | ".join(m["problems"])
    assert "world_size 1000000000000" in problems and "rank1.meta.json" in problems
    assert "rank2.meta.json: is a FIFO" in problems and "rank3.meta.json: is a device" in problems


def test_forged_heartbeats_and_acks(tmp_path: Path) -> None:
    control = rundir.control_dir(tmp_path)
    control.mkdir()
    good = {"schema": rundir.HEARTBEAT_SCHEMA, "rank": 0, "ts_ns": 1, "world_size": 2, "step": 3}
    (control / "rank0.heartbeat.json").write_text(json.dumps(good))
    (control / "rank1.heartbeat.json").write_text(json.dumps({**good, "rank": 1, "ts_ns": "x"}))
    (control / "rank2.heartbeat.json").write_text(
        json.dumps({**good, "rank": 2, "world_size": 2**40})
    )
    os.mkfifo(control / "rank3.heartbeat.json")
    (control / "rank4.heartbeat.json").symlink_to(control / "rank0.heartbeat.json")
    bad: dict[str, str] = {}
    assert list(rundir.read_heartbeats(tmp_path, bad)) == [0]
    assert bad == {
        "rank1.heartbeat.json": "ts_ns is not an int64 of nanoseconds",
        "rank2.heartbeat.json": f"world_size is not an integer in 1..{rundir.MAX_WORLD_SIZE}",
    }
    ack = {"schema": rundir.ACK_SCHEMA, "rank": 0, "id": "a", "state": "done", "history": 5}
    (control / "rank0.ack.json").write_text(json.dumps(ack))
    (control / "rank1.ack.json").write_text(json.dumps({**ack, "rank": 1, "state": "owned"}))
    acks = rundir.read_acks(tmp_path)
    assert list(acks) == [0] and acks[0]["history"] == []


def test_symlinked_control_dir_is_never_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hb = {"schema": rundir.HEARTBEAT_SCHEMA, "rank": 0, "ts_ns": 1}
    (elsewhere / "rank0.heartbeat.json").write_text(json.dumps(hb))
    run = tmp_path / "run"
    run.mkdir()
    rundir.control_dir(run).symlink_to(elsewhere)
    assert rundir.control_dir_problem(run) == "control/ is a symlink; refusing to use it"
    assert rundir.read_heartbeats(run) == {} and rundir.read_request(run) is None
