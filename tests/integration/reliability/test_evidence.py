"""Light-layer evidence that is missing, inconsistent or hostile is named, never trusted.

One real collector run (``rankscope run``, a 2-rank gloo job whose rank 1 waits
20 ms per step in its DataLoader, a profiler window at steps 4-6) is made once
per module; each case copies it, breaks one of its files, and runs the real
``rankscope report --format json``. A case ends with the whole-run verdict a
user would expect, or with a warning that names the file and why it was not
used; nothing is dropped in silence and nothing ends in a traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, needs_torch, rankscope_cmd
from jobs.collector_jobs import JOBS, launcher, rankscope

SLOW_RANK = 1
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("evidence") / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "4-6",
        "--nvml-period-ms",
        "0",
        "--",
        *launcher("module", 2),
        str(JOBS / "light_layer_job.py"),
        "--steps",
        "12",
        "--data-slow-rank",
        str(SLOW_RANK),
        "--data-sleep-ms",
        "20",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def report(run: Path) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(run), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def whole_run_straggler(rep: dict[str, Any]) -> int | None:
    whole = rep.get("whole_run")
    if not whole or not whole["stragglers"]:
        return None
    rank: int = whole["stragglers"][0]["rank"]
    return rank


def evidence_of(rep: dict[str, Any], rank: int) -> dict[str, Any]:
    return next(e for e in rep["run"]["evidence"] if e["rank"] == rank)


# --- how each case breaks the run -------------------------------------------------


def _collectives(run: Path, rank: int = SLOW_RANK) -> Path:
    return run / f"rank{rank}.collectives.jsonl"


def _steps(run: Path, rank: int = SLOW_RANK) -> Path:
    return run / f"rank{rank}.steps.jsonl"


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _replace_with_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _from_another_run(run: Path) -> None:
    # What a copy from another run of the same job holds: its own run_id in the header.
    for path in (_steps(run), _collectives(run)):
        lines = path.read_text().splitlines(keepends=True)
        header = json.loads(lines[0])
        assert header["run_id"], "the collector writes the run's id in every header"
        header["run_id"] = "0" * 32
        path.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))


def _from_another_rank(run: Path) -> None:
    # Rank 0's logs under rank 1's names: the whole run used to read rank 0's steps as
    # rank 1's, silently.
    shutil.copy(_steps(run, 0), _steps(run))
    shutil.copy(_collectives(run, 0), _collectives(run))


def _meta_of_another_rank(run: Path) -> None:
    # rank1.meta.json replaced by rank 0's: it used to overwrite rank 0's manifest.
    shutil.copy(run / "rank0.meta.json", run / "rank1.meta.json")


def _window_from_another_run(run: Path) -> None:
    # Rank 1's window as another run of the same job, a day later, would have it: the
    # same numbers at another time. Its numbers were read as this run's, unsaid.
    window = next(run.glob("rank1.step*.pt.trace.json.gz"))
    doc = json.loads(gzip.decompress(window.read_bytes()))
    doc["baseTimeNanoseconds"] += 86_400 * 10**9
    window.write_bytes(gzip.compress(json.dumps(doc).encode()))


def _rewrite_window(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(gzip.decompress(path.read_bytes()))
    change(doc)
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


def _window_tagged_by_another_run(run: Path) -> None:
    # A window copied in from another run of the same job, at the same time of day: no
    # clock tells it apart, the tag the collector writes in every window does.
    def other_run(doc: dict[str, Any]) -> None:
        assert doc["rankscope"]["run_id"], "the collector tags every window with the run's id"
        doc["rankscope"]["run_id"] = "0" * 32

    _rewrite_window(next(run.glob("rank1.step*.pt.trace.json.gz")), other_run)


def _window_of_another_rank(run: Path) -> None:
    # Rank 0's window under rank 1's name: read as a second copy of rank 0's window
    # (its distributedInfo says rank 0), and rank 1 had none, with no word why.
    shutil.copy(
        next(run.glob("rank0.step*.pt.trace.json.gz")), run / "rank1.step4-6.pt.trace.json.gz"
    )


def _untagged_window_of_another_rank(run: Path) -> None:
    # The same copy from a run recorded before windows carried a tag: its
    # distributedInfo says rank 0, its name rank 1.
    window = run / "rank1.step4-6.pt.trace.json.gz"
    shutil.copy(next(run.glob("rank0.step*.pt.trace.json.gz")), window)
    _rewrite_window(window, lambda doc: doc.pop("rankscope"))


def _window_of_another_attempt(run: Path) -> None:
    # A window of another attempt of the job, left where a torchrun restart sets each
    # attempt's files aside (attemptK/).
    def other_attempt(doc: dict[str, Any]) -> None:
        doc["rankscope"]["attempt"] += 1

    _rewrite_window(next(run.glob("rank1.step*.pt.trace.json.gz")), other_attempt)


def _data_wait_50x_step(run: Path) -> None:
    # Rank 0 (the fast one) claims a DataLoader wait 50 times its step.
    path = _steps(run, 0)
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "step" in row:
            row["data_ns"] = (row["end_ns"] - row["start_ns"]) * 50
        out.append(json.dumps(row))
    path.write_text("\n".join(out) + "\n")


def _huge_line(run: Path) -> None:
    path = _steps(run)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(3, json.dumps({"step": 2, "pad": "x" * (2 << 20)}) + "\n")
    path.write_text("".join(lines))


def _bad_records(run: Path) -> None:
    path = _collectives(run)
    lines = path.read_text().splitlines(keepends=True)
    lines[2:2] = ['{"seq": -5}\n', "not json\n"]
    path.write_text("".join(lines))


def _steps_appended_twice(run: Path) -> None:
    # Rank 1's step records appended a second time: the whole run used to vanish, unsaid.
    path = _steps(run)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + lines[1:]))


def _collectives_appended_twice(run: Path) -> None:
    # Rank 1's collective log appended to itself: the verdict held, the repeats went unsaid.
    path = _collectives(run)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + lines[1:]))


def _shift_seqs(path: Path, by: int) -> None:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "seq" in row:
            row["seq"] += by
        out.append(json.dumps(row))
    path.write_text("\n".join(out) + "\n")


def _seqs_shifted(run: Path) -> None:
    # Every seq of rank 1 moved by 5: the verdict held (it uses each step's last
    # collective by time), but nothing said the logs no longer line up.
    _shift_seqs(_collectives(run), 5)


def _duplicate_window(run: Path) -> None:
    window = next(run.glob("rank0.step*.pt.trace.json.gz"))
    shutil.copy(window, run / f"copy of {window.name}")


@dataclass
class Case:
    id: str
    breaks: Callable[[Path], None]
    warning: str  # what stderr (and the JSON's warnings) must name
    # the whole-run straggler the report must give (None: no whole-run verdict)
    whole_run: int | None
    check: Callable[[dict[str, Any]], None] | None = None


def _collectives_unused(rep: dict[str, Any]) -> None:
    ev = evidence_of(rep, SLOW_RANK)
    assert "collectives" not in ev["used"] and ev["used"][:2] == ["trace", "steps"], ev
    assert any(u.startswith("collectives: rank1.collectives.jsonl") for u in ev["unused"]), ev


def _window_unused(rep: dict[str, Any], why: str = "written by") -> None:
    ev = evidence_of(rep, SLOW_RANK)
    assert "trace" not in ev["used"], ev
    window = "rank1.step4-6.pt.trace.json.gz"
    assert any(u.startswith(f"trace: {window}: {why}") for u in ev["unused"]), ev


def _counted_records(count: int) -> Callable[[dict[str, Any]], None]:
    def check(rep: dict[str, Any]) -> None:
        assert evidence_of(rep, SLOW_RANK)["problem_count"] == count

    return check


def _unaligned_group_left_out(rep: dict[str, Any]) -> None:
    # No record is bad, but the group's summary would pair collectives 5 apart: left out.
    assert evidence_of(rep, SLOW_RANK)["problem_count"] == 0
    assert rep["process_groups"] == []


CASES = [
    Case(
        "collectives-missing",
        lambda run: _collectives(run).unlink(),
        "rank1.collectives.jsonl is missing",
        None,
        _collectives_unused,
    ),
    Case(
        "collectives-empty",
        lambda run: _collectives(run).write_bytes(b""),
        "rank1.collectives.jsonl is empty",
        None,
        _collectives_unused,
    ),
    Case(
        "collectives-fifo",
        lambda run: _replace_with_fifo(_collectives(run)),
        "rank1.collectives.jsonl: is a FIFO, not a regular file",
        None,
        _collectives_unused,
    ),
    Case(
        "collectives-directory",
        lambda run: _replace_with_dir(_collectives(run)),
        "rank1.collectives.jsonl: is a directory, not a regular file",
        None,
        _collectives_unused,
    ),
    Case(
        "steps-fifo",
        lambda run: _replace_with_fifo(_steps(run)),
        "rank1.steps.jsonl: is a FIFO, not a regular file",
        None,
    ),
    # Copied from another run, rank 1's logs used to make the whole run name rank 0.
    Case("other-run", _from_another_run, "rank1.steps.jsonl: written by another run", None),
    Case(
        "other-rank",
        _from_another_rank,
        "rank1.steps.jsonl: written by rank 0, not rank 1 (its name); not used",
        None,
    ),
    Case(
        "other-rank-meta",
        _meta_of_another_rank,
        "rank1.meta.json: written by rank 0, not rank 1 (its name); not used",
        SLOW_RANK,
    ),
    Case(
        "window-from-another-run",
        _window_from_another_run,
        "rank1.step4-6.pt.trace.json.gz: its steps lie 86,400 s from the same steps in rank 1's"
        " step log: a window from another run",
        SLOW_RANK,
    ),
    # Windows that are not this run's, rank's or attempt's, by the tag they carry: left
    # out and named (the light layer still gives the whole-run verdict).
    Case(
        "window-tagged-by-another-run",
        _window_tagged_by_another_run,
        "rank1.step4-6.pt.trace.json.gz: written by another run (run_id 0000000000",
        SLOW_RANK,
        _window_unused,
    ),
    Case(
        "window-of-another-rank",
        _window_of_another_rank,
        "rank1.step4-6.pt.trace.json.gz: written by rank 0, not rank 1 (its name); not used",
        SLOW_RANK,
        _window_unused,
    ),
    Case(
        "untagged-window-of-another-rank",
        _untagged_window_of_another_rank,
        "rank1.step4-6.pt.trace.json.gz: its trace says rank 0 (distributedInfo), its name"
        " rank 1; not used",
        SLOW_RANK,
        lambda rep: _window_unused(rep, "its trace says rank 0"),
    ),
    Case(
        "window-of-another-attempt",
        _window_of_another_attempt,
        "rank1.step4-6.pt.trace.json.gz: written by attempt 1 of the job; this directory"
        " holds attempt 0",
        SLOW_RANK,
        _window_unused,
    ),
    # A window its manifest lists, deleted: the rank had "no trace window", unsaid why.
    Case(
        "window-deleted",
        lambda run: next(run.glob("rank1.step*.pt.trace.json.gz")).unlink(),
        "rank1.meta.json lists the window rank1.step4-6.pt.trace.json.gz (steps 4-6), which is"
        " not in",
        SLOW_RANK,
        lambda rep: _window_unused(rep, "listed in rank1.meta.json, not in the run directory"),
    ),
    # A wait 50x the step made rank 0 "data loading (high)" in the whole run.
    Case(
        "data-wait-longer-than-step",
        _data_wait_50x_step,
        "rank0.steps.jsonl step 0: data_ns",
        SLOW_RANK,
    ),
    Case(
        "huge-line",
        _huge_line,
        "rank1.steps.jsonl line 4: longer than 1048576 bytes",
        SLOW_RANK,
        _counted_records(1),
    ),
    Case(
        "bad-records",
        _bad_records,
        "rank1.collectives.jsonl line 3: seq is not",
        SLOW_RANK,
        _counted_records(2),
    ),
    Case("duplicated-window", _duplicate_window, "counted once", SLOW_RANK),
    Case(
        "steps-appended-twice",
        _steps_appended_twice,
        "rank1.steps.jsonl: 11 record(s) repeat a step already recorded (steps 0-10)",
        SLOW_RANK,
        _counted_records(1),
    ),
    Case(
        "collectives-appended-twice",
        _collectives_appended_twice,
        "rank1.collectives.jsonl: 18 record(s) repeat a collective already recorded"
        " (process group 0, seq 1-18); the first record of each is kept",
        SLOW_RANK,
        _counted_records(1),
    ),
    Case(
        "collective-seqs-shifted",
        _seqs_shifted,
        "rank1.collectives.jsonl: rank 1's collective sequence numbers in process group 0"
        " are rank 0's +5 at the same steps",
        SLOW_RANK,
        _unaligned_group_left_out,
    ),
]


@pytest.fixture(scope="module")
def intact(real_run: Path) -> dict[str, Any]:
    rep, stderr = report(real_run)
    assert "evidence" not in stderr, stderr
    return rep


@needs_torch
def test_the_intact_run_uses_every_source(intact: dict[str, Any]) -> None:
    assert whole_run_straggler(intact) == SLOW_RANK
    for rank in (0, 1):
        ev = evidence_of(intact, rank)
        assert ev["used"] == ["trace", "steps", "collectives"] and not ev["unused"], ev
        assert ev["problem_count"] == 0


@needs_torch
@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_broken_light_layer_file_is_named(
    case: Case, real_run: Path, intact: dict[str, Any], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    case.breaks(run)
    rep, stderr = report(run)
    assert case.warning in stderr, stderr
    assert any(case.warning in w for w in rep["run"]["warnings"])
    assert whole_run_straggler(rep) == case.whole_run, rep.get("whole_run")
    if case.whole_run is None:
        assert "no whole-run verdict" in stderr
    # The trace windows' numbers are the intact run's: a copy is not counted twice.
    assert [c["count"] for c in rep["collectives"]] == [c["count"] for c in intact["collectives"]]
    if case.check is not None:
        case.check(rep)


@needs_torch
def test_the_text_report_says_which_evidence_was_used(real_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    _collectives(run).unlink()
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(run)], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr
    assert "Evidence: rank 1 used trace, steps but not its collectives" in proc.stdout


@needs_torch
def test_windows_of_the_real_run_are_valid_gzip_json_that_say_whose_they_are(
    real_run: Path,
) -> None:
    run_id = json.loads((real_run / "run.json").read_text())["run_id"]
    windows = sorted(real_run.glob("rank*.pt.trace.json.gz"))
    assert len(windows) == 2
    for rank, window in enumerate(windows):
        with gzip.open(window, "rt") as f:
            doc = json.load(f)
        assert doc["traceEvents"]
        assert doc["rankscope"] == {
            "format": 1,
            "run_id": run_id,
            "rank": rank,
            "attempt": 0,
            "first_step": 4,
            "last_step": 6,
        }


def test_a_hang_verdict_over_shifted_seqs_says_so(tmp_path: Path) -> None:
    # A recorded hang (rank 2 never issued all_reduce seq 7): the hang verdict pairs the
    # ranks by (group, seq), so rank 1's moved numbers are named as a doubt on it too.
    run = tmp_path / "stop"
    shutil.copytree(REPO / "tests" / "data" / "hang_runs" / "stop", run)
    _shift_seqs(_collectives(run), 5)
    rep, stderr = report(run)
    said = (
        "the hang verdict matches ranks by (process group, sequence number), and rank 1's"
        " sequence numbers in process group 0 are off by +5"
    )
    assert said in stderr and any(said in w for w in rep["run"]["warnings"])
    assert "rank 1's collective sequence numbers in process group 0 are rank 0's +5" in stderr
    assert rep["hang"]["rank"] == 2


def _stop_run(tmp_path: Path) -> Path:
    run = tmp_path / "stop"
    shutil.copytree(REPO / "tests" / "data" / "hang_runs" / "stop", run)
    return run


def _set(path: Path, **fields: Any) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize(
    ("breaks", "said"),
    [
        (
            lambda run: (run / "rank2.hang.json").write_text("{nope"),
            "rank2.hang.json: JSON is malformed",
        ),
        (
            lambda run: shutil.copy(run / "rank0.hang.json", run / "rank2.hang.json"),
            "rank2.hang.json: written by rank 0, not rank 2 (its name); not used",
        ),
        (
            lambda run: shutil.copy(run / "rank0.progress.json", run / "rank2.progress.json"),
            "rank2.progress.json: written by rank 0, not rank 2 (its name); not used",
        ),
        (
            lambda run: (
                _set(run / "run.json", run_id="a" * 32),
                _set(run / "rank2.hang.json", run_id="b" * 32),
            ),
            f"rank2.hang.json: written by another run (run_id {'b' * 32}, this run's is",
        ),
    ],
    ids=["unreadable", "another-rank", "progress-of-another-rank", "another-run"],
)
def test_a_hang_record_that_cannot_be_used_is_named(
    tmp_path: Path, breaks: Callable[[Path], Any], said: str
) -> None:
    # Each was dropped in silence; the verdict still stands on the other records.
    run = _stop_run(tmp_path)
    breaks(run)
    rep, stderr = report(run)
    assert said in stderr and any(said in w for w in rep["run"]["warnings"]), stderr
    assert rep["hang"]["kind"] == "missing_rank" and rep["hang"]["rank"] == 2


def test_the_stuck_frame_is_the_job_s_never_rankscope_s_signal_handler(tmp_path: Path) -> None:
    # Rank 2's stall record gone, its SIGTERM record left: that record (written before
    # the collector cut its own frames) ends in rankscope's handler, and the verdict
    # said rank 2 "is in thread_stacks (evidence.py:177)".
    run = _stop_run(tmp_path)
    (run / "rank2.hang.json").unlink()
    rep, _ = report(run)
    stuck = next(r for r in rep["hang"]["ranks"] if r["rank"] == 2)
    assert stuck["where"]["function"] == "wait_for_peers", stuck["where"]


ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # retitle the terminal, then clear it
SHOWN = "\\x1b]0;owned\\x07\\x1b[2J"


@needs_torch
def test_names_from_the_run_files_are_shown_never_obeyed(real_run: Path, tmp_path: Path) -> None:
    # The run folder's name, a file the report warns about and a process group's
    # description carry terminal escapes: the text and markdown reports and the
    # warnings show them as \x1b, the JSON report keeps the string (JSON escapes it).
    run = tmp_path / f"run{ESCAPE}"
    shutil.copytree(real_run, run)
    for rank in (0, 1):
        path = _collectives(run, rank)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            if "pg_desc" in row:
                row["pg_desc"] = ESCAPE + row["pg_desc"]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(run / "rank0.meta.json", run / f"rank{ESCAPE}.meta.json")
    for fmt in ("text", "markdown"):
        proc = subprocess.run(
            [*rankscope_cmd(), "report", str(run), "--format", fmt],
            capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        for out in (proc.stdout, proc.stderr):
            assert "\x1b" not in out and "\x07" not in out, out
        assert f"run{SHOWN}" in proc.stdout, proc.stdout
        assert f"rank{SHOWN}.meta.json: not named rank{{R}}.meta.json; ignored" in proc.stderr
    rep, _ = report(run)
    assert [g["desc"] for g in rep["process_groups"]] == [ESCAPE + "default_pg"]
    # an error that names a path of the user's: one line, shown
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(tmp_path / f"no{ESCAPE}\nsuch")],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"no{SHOWN}\\x0asuch" in proc.stderr
