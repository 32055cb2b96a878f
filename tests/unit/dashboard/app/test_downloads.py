"""Dashboard downloads serve the regular file under the run folder that was opened.

The Overview's download buttons read a trace only when clicked; by then the file
may have been swapped for a symlink to something outside the run (``~/.ssh/...``).
``runs.run_file_bytes`` opens every component below the run root without
following a symlink, checks the opened file with ``fstat`` and serves those bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rankscope.dashboard.app import runs
from rankscope.profiler.safeio import UnsafeFile

SECRET = b"not part of the run"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    (root / "rank1").mkdir(parents=True)
    (root / "rank0.pt.trace.json.gz").write_bytes(b"trace 0")
    (root / "rank1" / "trace.json").write_bytes(b"trace 1")
    (tmp_path / "secret").write_bytes(SECRET)
    return root


def test_serves_a_regular_file(run: Path) -> None:
    assert runs.run_file_bytes(run / "rank0.pt.trace.json.gz", run) == b"trace 0"
    assert runs.run_file_bytes(run / "rank1" / "trace.json", run) == b"trace 1"
    # a run given as one trace file: its folder is the root
    trace = run / "rank0.pt.trace.json.gz"
    assert runs.run_file_bytes(trace, trace) == b"trace 0"


def test_a_file_swapped_for_a_symlink_is_refused(run: Path) -> None:
    trace = run / "rank0.pt.trace.json.gz"
    trace.unlink()
    trace.symlink_to(run.parent / "secret")
    with pytest.raises(UnsafeFile, match="symlink"):
        runs.run_file_bytes(trace, run)


def test_a_folder_swapped_for_a_symlink_is_refused(run: Path) -> None:
    outside = run.parent / "elsewhere"
    outside.mkdir()
    (outside / "trace.json").write_bytes(SECRET)
    (run / "rank1" / "trace.json").unlink()
    (run / "rank1").rmdir()
    (run / "rank1").symlink_to(outside)
    with pytest.raises(UnsafeFile):
        runs.run_file_bytes(run / "rank1" / "trace.json", run)


def test_paths_outside_the_run_and_special_files_are_refused(run: Path) -> None:
    with pytest.raises(UnsafeFile, match="not inside"):
        runs.run_file_bytes(run / ".." / "secret", run)
    fifo = run / "rank2.pt.trace.json"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="FIFO"):  # and never blocks on it
        runs.run_file_bytes(fifo, run)


def test_the_overview_reader_checks_at_click_time(run: Path) -> None:
    from rankscope.dashboard.app.views import overview

    trace = run / "rank0.pt.trace.json.gz"
    read = overview._reader(trace, str(run))  # the page renders: nothing read yet
    trace.unlink()
    trace.symlink_to(run.parent / "secret")  # swapped before the click
    with pytest.raises(UnsafeFile):
        read()
