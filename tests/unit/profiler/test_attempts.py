"""``rundir.set_aside_attempt``: a restarted attempt never writes over the one before."""

from __future__ import annotations

import json
from pathlib import Path

from rankscope.profiler import rundir


def _rank_files(run: Path, rank: int, attempt: int | None) -> None:
    meta = {"schema": rundir.RANK_SCHEMA, "rank": rank}
    if attempt is not None:
        meta["attempt"] = attempt
    (run / f"rank{rank}.meta.json").write_text(json.dumps(meta))
    (run / f"rank{rank}.steps.jsonl").write_text('{"step": 0}\n')
    (run / f"rank{rank}.step5-7.pt.trace.json.gz").write_bytes(b"trace")


def test_each_rank_moves_its_own_files_and_rank_0_the_run_manifest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for r in range(3):
        _rank_files(run, r, 0)
    (run / "rank10.steps.jsonl").write_text("")  # rank 10's, not rank 1's
    (run / "run.json").write_text(json.dumps({"schema": rundir.RUN_SCHEMA, "attempt": 0}))

    # The restarted world has 2 ranks: rank 0 also sets aside rank 2's and rank 10's files.
    moved = rundir.set_aside_attempt(run, 0, 2, 1)
    first = rundir.attempt_dir(run, 0)
    assert sorted(moved) == sorted([p.name for p in first.iterdir() if p.name != "run.json"])
    assert {p.name for p in first.iterdir()} == {
        "rank0.meta.json", "rank0.steps.jsonl", "rank0.step5-7.pt.trace.json.gz",
        "rank2.meta.json", "rank2.steps.jsonl", "rank2.step5-7.pt.trace.json.gz",
        "rank10.steps.jsonl", "run.json",
    }  # fmt: skip
    assert (run / "rank1.steps.jsonl").exists()  # rank 1 moves its own
    copy = json.loads((first / "run.json").read_text())
    assert copy["attempt"] == 0 and copy["ended"] == "restarted"
    assert (run / "run.json").exists()  # the new rank 0 rewrites it

    rundir.set_aside_attempt(run, 1, 2, 1)
    assert (first / "rank1.steps.jsonl").exists() and not (run / "rank1.steps.jsonl").exists()
    assert rundir.attempt_dirs(run) == [(0, first)]


def test_files_go_to_the_attempt_that_wrote_them(tmp_path: Path) -> None:
    # Attempt 1 died before its collector started: attempt 2 finds attempt 0's files.
    _rank_files(tmp_path, 0, 0)
    rundir.set_aside_attempt(tmp_path, 0, 1, 2)
    assert (tmp_path / "attempt0" / "rank0.meta.json").exists()
    # Files from before attempts were recorded go to the attempt just before.
    _rank_files(tmp_path, 1, None)
    rundir.set_aside_attempt(tmp_path, 1, 2, 3)
    assert (tmp_path / "attempt2" / "rank1.meta.json").exists()


def test_an_attempts_own_files_stay(tmp_path: Path) -> None:
    _rank_files(tmp_path, 0, 1)  # written by this attempt (a second collector in it)
    assert rundir.set_aside_attempt(tmp_path, 0, 1, 1) == []
    assert (tmp_path / "rank0.meta.json").exists() and rundir.attempt_dirs(tmp_path) == []


def test_the_restart_count_comes_from_torchrun() -> None:
    assert rundir.restart_count({"TORCHELASTIC_RESTART_COUNT": "2"}) == 2
    assert rundir.restart_count({}) == 0
    assert rundir.restart_count({"TORCHELASTIC_RESTART_COUNT": "x"}) == 0
