"""Run discovery (``rundir.find_runs``): the one answer to "which runs are at this path"."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import data_path

from rankscope.profiler import rundir
from rankscope.profiler.errors import EXIT_BAD_INPUT, RankscopeError

TRACE = "rank0.pt.trace.json.gz"


def _collector_run(folder: Path, mtime: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text('{"schema": "rankscope.run/1", "world_size": 1}')
    (folder / "rank0.meta.json").write_text('{"rank": 0}')
    (folder / "rank0.steps.jsonl").write_text("")
    (folder / "control").mkdir()
    (folder / "control" / "rank0.heartbeat.json").write_text("{}")
    for p in folder.iterdir():
        os.utime(p, (mtime, mtime))
    return folder


def _trace_folder(folder: Path, mtime: float, *names: str) -> Path:
    folder.mkdir(parents=True)
    for name in names or ("host_1.pt.trace.json.gz",):
        (folder / name).write_bytes(b"")
        os.utime(folder / name, (mtime, mtime))
    return folder


def _labels(path: Path) -> list[str]:
    return [r.label for r in rundir.find_runs(path)]


def test_a_folder_of_runs_lists_each_newest_first(tmp_path: Path) -> None:
    _collector_run(tmp_path / "exp1", 1000)
    _trace_folder(tmp_path / "exp2", 3000)  # tensorboard_trace_handler
    _trace_folder(tmp_path / "exp3", 2000, "rank-0.json.gz", "rank-1.json.gz")  # HTA-style
    (tmp_path / "notes").mkdir()
    (tmp_path / ".hidden").mkdir()
    _trace_folder(tmp_path / ".hidden" / "old", 9000)
    runs = rundir.find_runs(tmp_path)
    assert [r.label for r in runs] == ["exp2", "exp3", "exp1"]
    assert [r.kind for r in runs] == ["folder", "folder", "run_dir"]
    assert [len(r.traces) for r in runs] == [1, 2, 0]
    assert runs[1].mtime == 2000


def test_the_reference_runs_side_by_side_are_two_runs(tmp_path: Path) -> None:
    # The bug this replaced: the parent of two runs read as one run whose files
    # "claim rank 0" twice.
    shutil.copytree(data_path("reference_runs", "h200_ddp4_straggler"), tmp_path / "exp1")
    shutil.copytree(data_path("reference_runs", "h200_ddp2_balanced"), tmp_path / "exp2")
    runs = {r.label: r for r in rundir.find_runs(tmp_path)}
    assert sorted(runs) == ["exp1", "exp2"]
    assert len(runs["exp1"].traces) == 4 and len(runs["exp2"].traces) == 2
    with pytest.raises(RankscopeError, match=r"holds 2 runs \(exp\d, exp\d\)") as e:
        rundir.find_run(tmp_path)
    assert e.value.exit_code == EXIT_BAD_INPUT


def test_a_run_is_itself_even_with_runs_below_it(tmp_path: Path) -> None:
    run = _collector_run(tmp_path / "exp1", 1000)
    _trace_folder(run / "extra", 2000)
    [found] = rundir.find_runs(run)
    assert (found.path, found.kind, found.label) == (run, "run_dir", "exp1")
    assert rundir.find_run(run) == found


def test_a_single_trace_file(tmp_path: Path) -> None:
    f = tmp_path / "anything.json"
    f.write_text("{}")
    [found] = rundir.find_runs(f)
    assert (found.kind, found.traces) == ("file", (f,))
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    with pytest.raises(RankscopeError, match="not a trace file"):
        rundir.find_runs(notes)


def test_nested_folders_are_searched_a_few_levels_down(tmp_path: Path) -> None:
    _trace_folder(tmp_path / "2025-01" / "exp1", 1000)
    _trace_folder(tmp_path / "2025-02" / "team" / "exp2", 2000)
    _trace_folder(tmp_path / "a" / "b" / "c" / "too_deep", 3000)
    assert _labels(tmp_path) == ["2025-02/team/exp2", "2025-01/exp1"]
    # One run nested one level down (log/ of a job) is that run for the report.
    only = tmp_path / "2025-01"
    assert rundir.find_run(only).path == only / "exp1"


def test_rank_named_sub_folders_are_the_ranks_of_one_run(tmp_path: Path) -> None:
    # tensorboard_trace_handler(f"log/rank{rank}") gives log/rank0/, log/rank1/.
    log = tmp_path / "job" / "log"
    _trace_folder(log / "rank0", 1000)
    _trace_folder(log / "rank1", 1000)
    _trace_folder(tmp_path / "other", 500)
    runs = rundir.find_runs(tmp_path)
    assert [(r.label, len(r.traces)) for r in runs] == [("job/log", 2), ("other", 1)]
    assert rundir.find_run(log).traces == (
        log / "rank0" / "host_1.pt.trace.json.gz",
        log / "rank1" / "host_1.pt.trace.json.gz",
    )


def test_a_symlinked_run_is_listed_once(tmp_path: Path) -> None:
    _trace_folder(tmp_path / "exp1", 1000)
    (tmp_path / "latest").symlink_to(tmp_path / "exp1")
    (tmp_path / "exp1" / "loop").symlink_to(tmp_path)  # never followed: exp1 is a run
    assert _labels(tmp_path) == ["exp1"]


@pytest.mark.parametrize("make", ["empty", "missing", "only_notes"])
def test_no_run_is_a_one_line_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "runs"
    if make != "missing":
        path.mkdir()
    if make == "only_notes":
        (path / "notes").mkdir()
        (path / "notes" / "README.md").write_text("")
        (path / "run.json.tmp").write_text("")
    with pytest.raises(RankscopeError) as e:
        rundir.find_runs(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert e.value.exit_code == EXIT_BAD_INPUT
    expected = "no such file or directory" if make == "missing" else "no trace files found"
    assert expected in message


def test_a_huge_tree_answers_quickly(tmp_path: Path) -> None:
    for i in range(60):
        for j in range(60):
            (tmp_path / f"d{i}" / f"e{j}").mkdir(parents=True)
    start = time.monotonic()
    with pytest.raises(RankscopeError, match="no trace files found"):
        rundir.find_runs(tmp_path)
    assert time.monotonic() - start < 5.0


def test_report_and_dashboard_see_the_same_runs(tmp_path: Path) -> None:
    from rankscope.dashboard.app.runs import find_runs
    from rankscope.dashboard.ingest.run import load_run

    shutil.copytree(data_path("reference_runs", "h200_ddp2_balanced"), tmp_path / "job" / "exp2")
    entries = find_runs(tmp_path)
    assert [e.label for e in entries] == ["job/exp2"]
    run = load_run(tmp_path)  # one run below: the report reads that run
    assert Path(run.path) == tmp_path / "job" / "exp2"
    assert sorted(run.ranks) == [0, 1]
    assert Path(entries[0].path) == Path(run.path).resolve()
