"""``Recorder.request_flush(wait_s)``: when it returns, what was recorded before the call
is on disk, even when a flush was already under way as it was called."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rankscope.profiler import rundir
from rankscope.profiler.faults import Faults
from rankscope.profiler.recorder import Recorder


def test_a_flush_under_way_does_not_answer_a_later_request(tmp_path: Path) -> None:
    """The flush that was writing when the step arrived took its data before it: the
    request must wait for the next flush (this raced in a real test about one run in
    ten: steps.jsonl had 0 of the 3 steps just recorded)."""
    in_flush, release = threading.Event(), threading.Event()
    calls = 0

    def slow_first_meta() -> dict[str, Any] | None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first periodic flush, after the start-up one
            in_flush.set()
            release.wait(10)
        return None

    rec = Recorder(tmp_path, 0, Faults("rank 0"), None, 1.0, 0.05, slow_first_meta, None)
    write_lines = rec._write_lines

    def slow_step_lines(kind: str, lines: list[str]) -> None:
        if kind == "steps" and lines:
            time.sleep(0.3)  # the flush that carries the step takes a while to write it
        write_lines(kind, lines)

    rec._write_lines = slow_step_lines  # type: ignore[method-assign]
    rec.start()
    try:
        assert in_flush.wait(10)  # a flush has taken its (empty) data and is writing
        rec.steps.append((0, 1_000, 2_000, -1))
        done = threading.Event()

        seen: list[list[int]] = []

        def flush() -> None:
            rec.request_flush(10)
            seen.append([s["step"] for s in rundir.read_steps(tmp_path, 0)])
            done.set()

        threading.Thread(target=flush).start()
        assert not done.wait(0.3)  # the flush under way does not count...
        release.set()
        assert done.wait(10)  # ...the next one does: on return, the step is on disk
        assert seen == [[0]]
    finally:
        release.set()
        rec.stop()
