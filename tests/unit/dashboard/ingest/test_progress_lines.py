"""``stderr_progress`` on a pipe: a few lines for a slow ingest of many files, not one each."""

from __future__ import annotations

import pytest

from rankscope.dashboard.ingest import run as run_module


def test_a_pipe_gets_a_line_per_quarter_not_per_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = iter(float(t) for t in range(10_000))
    monkeypatch.setattr(run_module.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(run_module.sys.stderr, "isatty", lambda: False)
    progress = run_module.stderr_progress()
    assert progress is not None
    for done in range(1, 1025):
        progress(done, 1024, f"rank{done - 1}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= run_module.PIPE_PROGRESS_LINES
    assert lines[-1] == "rankscope: ingested 1024/1024 (rank1023)"
