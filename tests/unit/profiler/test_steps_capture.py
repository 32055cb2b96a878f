"""The ``capture`` field of a steps record: written only when set, read back validated."""

from __future__ import annotations

from pathlib import Path

from rankscope.profiler import rundir
from rankscope.profiler.recorder import _step_line


def test_the_line_carries_capture_only_when_a_window_touched_the_step() -> None:
    assert _step_line(3, 10, 20, 5, "stop") == (
        '{"step":3,"start_ns":10,"end_ns":20,"data_ns":5,"capture":"stop"}\n'
    )
    assert _step_line(4, 20, 30, 5, "") == '{"step":4,"start_ns":20,"end_ns":30,"data_ns":5}\n'
    assert _step_line(5, 30, 40, -1, "window") == (
        '{"step":5,"start_ns":30,"end_ns":40,"capture":"window"}\n'
    )
    assert _step_line(6, 40, 50) == '{"step":6,"start_ns":40,"end_ns":50}\n'  # 4-field callers


def test_read_steps_keeps_known_phases_and_reads_old_files_as_before(tmp_path: Path) -> None:
    lines = [
        '{"schema": "rankscope.steps/1", "rank": 0}',
        '{"step": 0, "start_ns": 0, "end_ns": 10, "data_ns": 1}',  # an old file's record
        '{"step": 1, "start_ns": 10, "end_ns": 20, "capture": "start"}',
        '{"step": 2, "start_ns": 20, "end_ns": 30, "capture": "export"}',
        '{"step": 3, "start_ns": 30, "end_ns": 40, "capture": "lunch"}',
        '{"step": 4, "start_ns": 40, "end_ns": 50, "capture": ["stop"]}',
    ]
    rundir.steps_path(tmp_path, 0).write_text("\n".join(lines) + "\n")
    rows = rundir.read_steps(tmp_path, 0)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]  # a bad label never drops the step
    assert [r.get("capture") for r in rows] == [None, "start", "export", None, None]
    assert rows[0] == {"step": 0, "start_ns": 0, "end_ns": 10, "data_ns": 1}
