"""The whole-file fast path of the step reader gives exactly what the line-by-line
path gives, and steps aside (None) whenever a line needs the careful path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankscope.dashboard.ingest.rank import steps_table
from rankscope.profiler import readers, records, rundir

HEADER = {"schema": "rankscope.steps/1", "run_id": "r1"}


def _step(i: int, **extra: Any) -> dict[str, Any]:
    start = 1_000_000_000 + i * 10_000_000
    return {"step": i, "start_ns": start, "end_ns": start + 9_000_000, **extra}


def _write(tmp_path: Path, lines: list[str], tail: str = "") -> Path:
    path = rundir.steps_path(tmp_path, 0)
    path.write_text("".join(line + "\n" for line in lines) + tail)
    return path


def _lines(*rows: dict[str, Any]) -> list[str]:
    return [json.dumps(r) for r in rows]


def _line_by_line(path: Path, run_id: str | None = None) -> tuple[list[Any], list[str]]:
    bad: list[str] = []
    rows = readers.iter_records(
        path,
        records.StepRecord,
        optional=("data_ns", "cpu_ns", "runq_ns", "capture"),
        bad=bad,
        run_id=run_id,
    )
    return list(rows), bad


def test_a_clean_log_is_read_whole_with_its_header(tmp_path: Path) -> None:
    rows = [_step(0, data_ns=1_000, cpu_ns=5_000_000), _step(1, capture="window"), _step(2)]
    path = _write(tmp_path, [json.dumps(HEADER), *_lines(*rows)])
    whole = readers.read_whole(path, records.StepRecord, "r1")
    assert whole is not None
    assert whole == _line_by_line(path, "r1")[0]
    assert [r.step for r in whole] == [0, 1, 2]
    assert whole[0].cpu_ns == 5_000_000 and whole[1].capture == "window"


@pytest.mark.parametrize(
    ("case", "lines", "tail"),
    [
        ("a bad time", _lines(_step(0), {"step": 1, "start_ns": "x", "end_ns": 5}), ""),
        ("ends before it starts", _lines(_step(0), {"step": 1, "start_ns": 9, "end_ns": 5}), ""),
        ("a half-written last line", _lines(_step(0), _step(1)), '{"step": 2, "sta'),
        ("a header further down", _lines(_step(0), HEADER, _step(1)), ""),
        ("an unknown capture phase", _lines(_step(0), _step(1, capture="warp")), ""),
        ("not JSON", [*_lines(_step(0)), "garbage"], ""),
    ],
)
def test_a_line_that_needs_care_takes_the_careful_path(
    tmp_path: Path, case: str, lines: list[str], tail: str
) -> None:
    path = _write(tmp_path, lines, tail)
    assert readers.read_whole(path, records.StepRecord) is None, case
    bad: list[str] = []
    recs = rundir.read_step_records(tmp_path, 0, bad)
    careful, named = _line_by_line(path)
    assert [r.step for r in recs] == [r.step for r in careful]
    assert bad == named  # each skipped line named, as before
    assert 0 in [r.step for r in recs]  # the good records are still read


def test_a_header_of_another_run_is_left_to_the_careful_path(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({**HEADER, "run_id": "other"}), *_lines(_step(0))])
    assert readers.read_whole(path, records.StepRecord, "r1") is None
    bad: list[str] = []
    assert rundir.read_step_records(tmp_path, 0, bad, "r1") == []
    assert any("other" in b for b in bad), bad


def test_a_line_over_the_bound_is_skipped_and_named(tmp_path: Path) -> None:
    long_line = json.dumps(_step(1, pad=" " * (1 << 20)))
    path = _write(tmp_path, [*_lines(_step(0)), long_line, *_lines(_step(2))])
    assert readers.read_whole(path, records.StepRecord) is None
    bad: list[str] = []
    assert [r.step for r in rundir.read_step_records(tmp_path, 0, bad)] == [0, 2]
    assert any("line 2: longer than" in b for b in bad), bad


def test_repeats_and_impossible_data_waits_are_handled_alike_on_the_fast_path(
    tmp_path: Path,
) -> None:
    rows = [_step(0), _step(1, data_ns=20_000_000), _step(0)]
    path = _write(tmp_path, _lines(*rows))
    assert readers.read_whole(path, records.StepRecord) is not None
    bad: list[str] = []
    recs = rundir.read_step_records(tmp_path, 0, bad)
    assert [(r.step, r.data_ns) for r in recs] == [(0, None), (1, None)]
    assert any("step 1: data_ns (20.0 ms) is longer than the step (9.0 ms)" in b for b in bad)
    assert any("1 record(s) repeat a step" in b for b in bad), bad


def test_steps_table_has_a_column_per_field_some_record_has(tmp_path: Path) -> None:
    rows = [_step(0), _step(1, data_ns=1_500, capture="stop"), _step(2, runq_ns=7)]
    _write(tmp_path, _lines(*rows))
    t = steps_table(rundir.read_step_records(tmp_path, 0))
    assert sorted(t.columns) == sorted(
        ["step", "start_ns", "end_ns", "data_ns", "runq_ns", "capture"]
    )
    assert t["data_ns"].tolist() == [-1, 1_500, -1]
    assert t["runq_ns"].dtype == np.int64 and t["runq_ns"].tolist() == [-1, -1, 7]
    stop = rundir.CAPTURE_PHASES.index("stop") + 1
    assert np.isnan(t["capture"][0]) and t["capture"][1] == stop
    assert t["end_ns"][2] - t["start_ns"][2] == 9_000_000


def test_cpu_and_queue_times_outside_their_step_are_left_out_and_named(tmp_path: Path) -> None:
    # steps of 9 ms: a 10 s run-queue wait, a CPU time 50x the step, a negative one
    rows = [
        _step(0, runq_ns=10**10, cpu_ns=8_000_000),
        _step(1, cpu_ns=450_000_000, runq_ns=100),
        _step(2, cpu_ns=90_000_000, data_ns=-1_000_000),
        _step(3, cpu_ns=9_500_000),  # within the 1 ms the two clocks may differ by
    ]
    _write(tmp_path, _lines(*rows))
    bad: list[str] = []
    recs = rundir.read_step_records(tmp_path, 0, bad)
    assert [(r.cpu_ns, r.runq_ns, r.data_ns) for r in recs] == [
        (8_000_000, None, None),
        (None, 100, None),
        (None, None, None),
        (9_500_000, None, None),
    ]
    assert (
        "rank0.steps.jsonl step 0: runq_ns (10000.0 ms) is longer than the step (9.0 ms);"
        " left out" in bad
    ), bad
    assert (
        "rank0.steps.jsonl step 1: cpu_ns (450.0 ms) is longer than the step (9.0 ms)"
        " (and at 1 more step(s), up to step 2); left out" in bad
    ), bad
    assert (
        "rank0.steps.jsonl line 3: data_ns is not an int64 of nanoseconds; left out of the record"
        in bad
    )


def test_overlapping_and_endless_steps_are_left_out_and_named(tmp_path: Path) -> None:
    rows = [_step(0), _step(1), _step(2), _step(3), _step(4)]
    rows[2]["start_ns"] = rows[1]["end_ns"] - 1_000_000  # starts before step 1 ended
    rows[4]["end_ns"] = 2**63 - 1
    _write(tmp_path, _lines(*rows))
    bad: list[str] = []
    assert [r.step for r in rundir.read_step_records(tmp_path, 0, bad)] == [0, 1, 3]
    assert any("1 step(s) start before the step before them ended (steps 2-2)" in b for b in bad)
    assert any("1 record(s) end more than 7 days after they start (steps 4-4)" in b for b in bad)


def test_a_log_longer_than_the_byte_limit_is_read_up_to_it_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20 steps of ~90 bytes; a 1,000-byte limit reads the first ten or so, and says so
    # (the rest used to be dropped in silence).
    path = _write(tmp_path, _lines(HEADER, *(_step(i) for i in range(20))))
    monkeypatch.setenv("RANKSCOPE_MAX_JSONL_BYTES", "1000")
    assert readers.read_whole(path, records.StepRecord) is None
    rows, bad = _line_by_line(path)
    assert 5 < len(rows) < 20 and [r.step for r in rows] == list(range(len(rows)))
    assert bad == [
        "rank0.steps.jsonl: longer than RANKSCOPE_MAX_JSONL_BYTES (1000 bytes); only the"
        " records before that were read"
    ]
    monkeypatch.setenv("RANKSCOPE_MAX_JSONL_BYTES", "1M")
    assert _line_by_line(path) == (readers.read_whole(path, records.StepRecord), [])
