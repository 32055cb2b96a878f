"""The run-directory contract as the collector uses it: readable files, skippable headers."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rankscope.profiler import rundir
from rankscope.profiler.rundir import rank_from_filename


def test_json_files_are_readable_by_other_users(tmp_path: Path) -> None:
    path = tmp_path / "run" / "rank0.meta.json"
    rundir.write_json_atomic(path, {"rank": 0})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert rundir.read_json(path) == {"rank": 0}
    assert [p.name for p in path.parent.iterdir()] == ["rank0.meta.json"]  # no temp file left


def test_header_lines_and_torn_tails_are_skipped(tmp_path: Path) -> None:
    lines = [
        {"schema": rundir.STEPS_SCHEMA, "rank": 2},
        {"step": 0, "start_ns": 10, "end_ns": 20},
        {"step": 1, "start_ns": 20, "end_ns": 35},
    ]
    text = "".join(json.dumps(x) + "\n" for x in lines) + '{"step": 2, "start_'
    rundir.steps_path(tmp_path, 2).write_text(text)
    assert [s["step"] for s in rundir.read_steps(tmp_path, 2)] == [0, 1]
    header = {"schema": rundir.TELEMETRY_SCHEMA, "rank": 2, "source": "host", "period_ms": 100}
    sample = {"ts_ns": 5, "source": "host", "host_cpu_pct": 12.5, "rss_b": 1}
    rundir.telemetry_path(tmp_path, 2).write_text(json.dumps(header) + "\n" + json.dumps(sample))
    assert rundir.read_telemetry(tmp_path, 2) == [sample]


def test_collector_files_are_recognised(tmp_path: Path) -> None:
    trace = rundir.trace_path(tmp_path, 3, 5, 7)
    trace.write_bytes(b"")
    assert trace.name == "rank3.step5-7.pt.trace.json.gz"
    assert rundir.is_trace_file(trace)
    assert rundir.rank_from_filename(trace.name) == 3
    for name in ("rank3.meta.json", "rank3.steps.jsonl", "rank3.telemetry.jsonl"):
        (tmp_path / name).write_text("{}")
        assert not rundir.is_trace_file(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "rank"),
    [
        ("rank3.pt.trace.json.gz", 3),
        ("rank-12.json.gz", 12),
        ("sampled_rank-1.json.gz", 1),
        ("worker7.1700000000.pt.trace.json", 7),
        ("host_rank_2.json", 2),
        ("trace.json", None),
        ("franklin.json", None),
    ],
)
def test_rank_from_file_name(name: str, rank: int | None) -> None:
    assert rank_from_filename(name) == rank
