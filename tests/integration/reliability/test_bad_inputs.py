"""Every bad input ends in exit 2 with one line, or a partial analysis with warnings.

Each case builds a run (``runs.make_run``: two ranks, three steps) and breaks one
thing in it, then runs the real CLI (``python -m rankscope.dashboard.cli report``)
with a timeout, so a hang fails the test instead of stalling the suite. Every
case asserts the exit code, that stderr holds no traceback, and (exit 2) that it
is one line saying what was wrong.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import rankscope_cmd
from runs import kineto_trace, make_run, trace_name

TIMEOUT_S = 20


@dataclass
class Case:
    """How the input is built, what the report must end with, and an extra check."""

    id: str
    build: Callable[[Path], Path]  # tmp_path -> the path given to `rankscope report`
    code: int
    stderr_has: str = ""
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path, dict], None] | None = None  # (tmp_path, JSON report)


def _run(tmp: Path) -> Path:
    return make_run(tmp / "run")


def _replace(tmp: Path, name: str, make: Callable[[Path], None]) -> Path:
    run = _run(tmp)
    (run / name).unlink()
    make(run / name)
    return run


def _fifo(name: str) -> Callable[[Path], Path]:
    return lambda tmp: _replace(tmp, name, lambda p: os.mkfifo(p))


def _symlink(name: str, target: str) -> Callable[[Path], Path]:
    return lambda tmp: _replace(tmp, name, lambda p: p.symlink_to(target))


def _lone_fifo(tmp: Path) -> Path:
    p = tmp / "rank0.pt.trace.json"
    os.mkfifo(p)
    return p


def _jsonl_line(name: str, line: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        run = _run(tmp)
        with open(run / name, "ab") as f:
            f.write(line + b"\n")
        return run

    return build


def _telemetry_only(steps_line: bytes) -> Callable[[Path], Path]:
    """A run whose ranks have no trace: the step timer alone says what a step took."""

    def build(tmp: Path) -> Path:
        run = _run(tmp)
        for r in (0, 1):
            (run / trace_name(r)).unlink()
            with open(run / f"rank{r}.steps.jsonl", "ab") as f:
                f.write(steps_line + b"\n")
        return run

    return build


def _edit_json(name: str, **fields: object) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        run = _run(tmp)
        obj = json.loads((run / name).read_text())
        obj.update(fields)
        (run / name).write_text(json.dumps(obj))
        return run

    return build


def _trace(mutate: Callable[[dict], None], *, rank: int = 0) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        run = _run(tmp)
        doc = kineto_trace(rank, 2)
        mutate(doc)
        (run / trace_name(rank)).write_bytes(gzip.compress(json.dumps(doc).encode()))
        return run

    return build


def _lone_trace(data: bytes, name: str = "rank0.pt.trace.json.gz") -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    return build


def _set_event(index: int, **fields: object) -> Callable[[dict], None]:
    return lambda doc: doc["traceEvents"][index].update(fields)


def _set_dist(**fields: object) -> Callable[[dict], None]:
    return lambda doc: doc["distributedInfo"].update(fields)


def _no_negative_times(_tmp: Path, report: dict) -> None:
    for row in report["ranks"]:
        for key, value in row.items():
            if key.endswith("_ms") and isinstance(value, int | float):
                assert 0 <= value < 1e9, (key, value)
    assert report["run"]["step_ms"] is None or 0 <= report["run"]["step_ms"] < 1e9


def _both_ranks(_tmp: Path, report: dict) -> None:
    assert report["run"]["ranks"] == [0, 1]


def _lose_trace(rank: int) -> Callable[[Path], Path]:
    """A crash mid-export or a partial attach: the rank's steps, no trace."""

    def build(tmp: Path) -> Path:
        run = _run(tmp)
        (run / trace_name(rank)).unlink()
        return run

    return build


def _missing_trace(rank: int) -> Callable[[Path, dict], None]:
    def check(_tmp: Path, report: dict) -> None:
        assert report["run"]["missing_trace"] == [rank]
        assert report["findings"][0]["kind"] == "missing_trace"
        assert report["findings"][0]["ranks"] == [rank]

    return check


BOMB = gzip.compress(b" " * (64 << 20), compresslevel=9)  # 64 MiB of spaces, ~64 KB

CASES = [
    # Files that are not regular files: never opened for reading, never waited on.
    Case("run.json is a FIFO", _fifo("run.json"), 0, "run.json: is a FIFO", check=_both_ranks),
    Case("rank meta is a FIFO", _fifo("rank1.meta.json"), 0, "is a FIFO", check=_both_ranks),
    Case("steps is a FIFO", _fifo("rank0.steps.jsonl"), 0, check=_both_ranks),
    Case("telemetry is a FIFO", _fifo("rank1.telemetry.jsonl"), 0, check=_both_ranks),
    Case("run.json -> /dev/zero", _symlink("run.json", "/dev/zero"), 0, "is a device"),
    Case("run.json -> /dev/null", _symlink("run.json", "/dev/null"), 0, "is a device"),
    Case("meta -> /dev/zero", _symlink("rank0.meta.json", "/dev/zero"), 0, "is a device"),
    Case("steps -> /dev/zero", _symlink("rank0.steps.jsonl", "/dev/zero"), 0),
    Case("telemetry -> /dev/zero", _symlink("rank0.telemetry.jsonl", "/dev/zero"), 0),
    Case("lone FIFO", _lone_fifo, 2, "not a trace file"),
    # Numbers that do not fit: dropped with the record, never an OverflowError.
    Case(
        "steps int beyond int64",
        _jsonl_line(
            "rank0.steps.jsonl", b'{"step": 3, "start_ns": 1' + b"0" * 30 + b', "end_ns": 1}'
        ),
        0,
    ),
    Case(
        "step number beyond int64",
        _jsonl_line(
            "rank0.steps.jsonl", b'{"step": ' + b"9" * 40 + b', "start_ns": 1, "end_ns": 2}'
        ),
        0,
    ),
    Case(
        "telemetry int beyond int64 and float",
        _jsonl_line(
            "rank0.telemetry.jsonl",
            b'{"ts_ns": 1'
            + b"0" * 30
            + b', "x": 1}\n{"ts_ns": 1, "power_mw": 1'
            + b"0" * 400
            + b"}",
        ),
        0,
    ),
    Case(
        "non-UTF-8 in steps", _jsonl_line("rank0.steps.jsonl", b'{"step": 9, "x": "\xff\xfe"}'), 0
    ),
    Case("non-UTF-8 in telemetry", _jsonl_line("rank1.telemetry.jsonl", b"\xc3\x28\x80{}"), 0),
    Case("deep JSON line", _jsonl_line("rank1.telemetry.jsonl", b"[" * 100_000), 0),
    Case(
        "step marks 1e300 (no trace)",
        _telemetry_only(b'{"step": 7, "start_ns": 1e300, "end_ns": 1}'),
        0,
        check=_no_negative_times,
    ),
    Case(
        "trace ProfilerStep at 1e300",
        _trace(_set_event(3, ts=1e300)),
        0,
        "out of range were left out",
        check=_no_negative_times,
    ),
    Case("trace duration 1e300", _trace(_set_event(1, dur=1e300)), 0, check=_no_negative_times),
    Case("trace negative duration", _trace(_set_event(1, dur=-5e6)), 0, check=_no_negative_times),
    Case("trace base time 1e30", _trace(lambda d: d.update(baseTimeNanoseconds=10**30)), 0),
    Case("trace arg beyond int64", _trace(_set_event(2, args={"Seq": 10**30})), 0),
    # Numbers that would size an allocation: bounded, reported, ignored.
    Case("run.json world size 1e12", _edit_json("run.json", world_size=10**12), 0, "world_size"),
    Case("rank meta rank 1e12", _edit_json("rank1.meta.json", rank=10**12), 0, "no rank in"),
    Case("trace world size 1e12", _trace(_set_dist(world_size=10**12)), 0, "world size"),
    Case("trace rank 1e12", _trace(_set_dist(rank=10**12), rank=1), 0, "beyond the largest"),
    Case(
        "lone trace with rank 1e12",
        _lone_trace(
            json.dumps({**kineto_trace(0, 1), "distributedInfo": {"rank": 10**12}}).encode()
        ),
        2,
        "beyond the largest",
    ),
    Case(
        "rank in a file name with 200 digits",
        _lone_trace(json.dumps({"traceEvents": []}).encode(), "worker" + "7" * 200 + ".json"),
        2,
        "beyond the largest world size",
    ),
    Case(
        "distributedInfo repr with a huge number",
        _lone_trace(
            json.dumps({**kineto_trace(0, 1), "distributedInfo": "{'rank': " + "9" * 6000}).encode()
        ),
        0,
    ),
    # Compressed and malformed traces.
    Case(
        "gzip bomb over the limit",
        _lone_trace(BOMB),
        2,
        "RANKSCOPE_MAX_TRACE_BYTES",
        env={"RANKSCOPE_MAX_TRACE_BYTES": "16M"},
    ),
    Case(
        "truncated gzip",
        _lone_trace(gzip.compress(b'{"traceEvents": []}' * 1000)[:-20]),
        2,
        "truncated",
    ),
    Case("gzip of garbage", _lone_trace(b"\x1f\x8b" + os.urandom(200)), 2, "gzip"),
    Case("not JSON", _lone_trace(b"\x00\xff" * 300, "rank0.json"), 2, "not valid JSON"),
    Case("deeply nested JSON", _lone_trace(b"[" * 200_000, "rank0.json"), 2),
    Case("non-UTF-8 trace", _lone_trace(b'{"traceEvents": [{"name": "\xff"}]}', "rank0.json"), 2),
    Case("rank 1's trace missing", _lose_trace(1), 0, "no trace file", check=_missing_trace(1)),
    Case("rank 0's trace missing", _lose_trace(0), 0, "no trace file", check=_missing_trace(0)),
]


def run_report(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*rankscope_cmd(), "report", str(path), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rankscope report hung on {path} (no answer within {TIMEOUT_S} s)")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    proc = run_report(path, case.env, "--format", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == case.code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if case.code == 2:
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("rankscope report: "), lines[0]
    else:
        assert all(line.startswith("rankscope report: warning: ") for line in lines), proc.stderr
    if case.stderr_has:
        assert case.stderr_has in proc.stderr, proc.stderr
    if case.check is not None:
        case.check(tmp_path, json.loads(proc.stdout))
