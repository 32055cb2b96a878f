"""Progress apart from liveness (``profiler.progress``) with a fake step clock, no torch."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rankscope.profiler import evidence as ev
from rankscope.profiler.faults import Faults
from rankscope.profiler.progress import ProgressWatch, is_collective_error, stall_lines

S = 1_000_000_000
T0 = 1_700_000_000 * S


class Steps:
    """The training thread's (current step, its start ns), set by the test."""

    def __init__(self) -> None:
        self.step, self.start_ns = 0, T0

    def __call__(self) -> tuple[int, int | None]:
        return self.step, self.start_ns


def watch(tmp_path: Path, steps: Steps, **kw: Any) -> ProgressWatch:
    return ProgressWatch(
        tmp_path, 1, 2, Faults("rank 1"), None, start_ns=T0, current=steps, stall_after_s=3.0, **kw
    )


def test_threshold_is_the_floor_or_ten_median_steps(tmp_path: Path) -> None:
    w = watch(tmp_path, Steps())
    assert w.threshold_s() == 3.0
    for i in range(5):
        w.on_step(i, T0, T0 + S // 2)  # 0.5 s steps
    assert w.threshold_s() == 5.0


def test_a_rank_without_steps_past_the_threshold_is_stalled_once(tmp_path: Path) -> None:
    steps = Steps()
    w = watch(tmp_path, steps)
    w.on_step(4, T0 - S // 10, T0)  # 0.1 s steps: the 3 s floor holds
    steps.step, steps.start_ns = 5, T0
    w.tick(T0 + 2 * S)
    p = ev.read_progress(tmp_path, 1)
    assert p is not None and p.state == "running" and p.step.last_step == 4
    assert not list(tmp_path.glob("*.hang.json"))
    w.tick(T0 + 4 * S)
    w.tick(T0 + 5 * S)
    p = ev.read_progress(tmp_path, 1)
    assert p is not None and p.state == "stalled" and p.stalled_since_ns == T0
    files = sorted(tmp_path.glob("*.hang.json"))
    assert [f.name for f in files] == ["rank1.hang.json"]  # one per stall
    proof = ev.read_evidence(files[0])
    assert proof.trigger == "stall" and proof.step.current_step == 5
    assert any(t.is_training for t in proof.threads)
    # Progress again: running, and the next stall writes a file of its own.
    steps.step, steps.start_ns = 6, T0 + 6 * S
    w.tick(T0 + 6 * S)
    assert ev.read_progress(tmp_path, 1).state == "running"  # type: ignore[union-attr]
    w.tick(T0 + 10 * S)
    assert (tmp_path / "rank1.2.hang.json").exists()


def test_evidence_is_never_overwritten_and_bounded_in_number(tmp_path: Path) -> None:
    w = watch(tmp_path, Steps())
    paths = [w.write_evidence("signal", "SIGTERM") for _ in range(ev.MAX_FILES + 2)]
    assert len({p for p in paths if p is not None}) == ev.MAX_FILES
    assert paths[-1] is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_signals_are_chained_and_never_swallowed(tmp_path: Path) -> None:
    calls: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda n, f: calls.append(n))
    try:
        w = watch(tmp_path, Steps())
        w.start()
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [signal.SIGTERM]
        proof = ev.read_evidence(tmp_path / "rank1.hang.json")
        assert proof.trigger == "signal" and proof.detail == "SIGTERM"
        training = next(t for t in proof.threads if t.is_training)
        # rankscope's own frames (the handler) are cut: the job's innermost frame shows.
        assert training.frames[-1].function == "test_signals_are_chained_and_never_swallowed"
        w.stop()
        assert signal.getsignal(signal.SIGTERM) is not w._on_signal
    finally:
        signal.signal(signal.SIGTERM, before)


def test_an_unhandled_exception_writes_evidence_then_the_previous_hook_runs(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    before = sys.excepthook
    sys.excepthook = lambda t, e, tb: seen.append(str(e))
    try:
        w = watch(tmp_path, Steps())
        w.start()
        try:
            raise RuntimeError("Timed out waiting 6000ms for recv operation to complete")
        except RuntimeError as e:
            sys.excepthook(type(e), e, e.__traceback__)
        w.stop()
    finally:
        sys.excepthook = before
    assert seen == ["Timed out waiting 6000ms for recv operation to complete"]
    proof = ev.read_evidence(tmp_path / "rank1.hang.json")
    assert proof.trigger == "collective_error"
    assert proof.exception is not None and proof.exception.type == "RuntimeError"
    assert not is_collective_error(ValueError("bad batch"))


def _progress(rank: int, last: list[ev.FrEntry]) -> ev.Progress:
    return ev.Progress(
        schema=ev.PROGRESS_SCHEMA, rank=rank, world_size=3, pid=1, host="h", attempt=0,
        collector_start_ns=T0, ts_ns=T0 + 95 * S, state="stalled", threshold_s=60.0,
        step=ev.StepState(18, T0 - S, T0, 19, T0), stalled_since_ns=T0, last_collectives=last,
    )  # fmt: skip


def test_status_lines_say_who_has_not_issued_what() -> None:
    def entry(seq: int, done: bool) -> ev.FrEntry:
        return ev.FrEntry(seq, "0", "default_pg", seq, "all_reduce", False, 64, T0, done)

    records = {r: _progress(r, [entry(45, False)]) for r in (0, 1)}
    records[2] = _progress(2, [entry(44, True)])
    lines = stall_lines(records, T0 + 95 * S)
    assert lines[2] == (
        "rank 2: no step for 95 s (step 19); has not issued all_reduce seq 45 on the default "
        "group that ranks 0 and 1 entered 95 s ago"
    )
    assert lines[0].endswith("waits in all_reduce seq 45 on the default group")


def test_a_forked_child_writes_no_evidence(tmp_path: Path) -> None:
    w = watch(tmp_path, Steps())
    w._pid = -1  # as seen from a forked DataLoader worker
    assert w.write_evidence("signal", "SIGTERM") is None
    assert not list(tmp_path.iterdir())


def test_a_rank_that_has_not_read_its_ring_yet_is_not_blamed() -> None:
    last = [ev.FrEntry(7, "0", "default_pg", 7, "all_reduce", False, 64, T0, False)]
    lines = stall_lines({0: _progress(0, last), 1: _progress(1, [])}, T0 + 5 * S)
    assert lines[1] == "rank 1: no step for 5 s (step 19)"


def test_status_lines_name_no_rank_outside_the_group_and_no_completed_entry() -> None:
    def entry(pg: str, seq: int, done: bool) -> ev.FrEntry:
        desc = "default_pg" if pg == "0" else "sub"
        return ev.FrEntry(seq, pg, desc, seq, "all_reduce", False, 64, T0, done)

    # group 1 is ranks 0 and 1: both completed its seq 7; the world's seq 45 waits for
    # rank 2 (rank 3 waits in it too); rank 2 is in no entry of group 1
    records = {
        0: _progress(0, [entry("1", 7, True), entry("0", 45, False)]),
        1: _progress(1, [entry("1", 7, True), entry("0", 45, False)]),
        2: _progress(2, [entry("0", 44, True)]),
        3: _progress(3, [entry("0", 45, False)]),
    }
    lines = stall_lines(records, T0 + 95 * S)
    assert lines[2] == (
        "rank 2: no step for 95 s (step 19); has not issued all_reduce seq 45 on the default "
        "group that ranks 0, 1 and 3 entered 95 s ago"
    )
    # ranks 0 and 1 completed group 1's seq 7: nobody is blamed for it; they wait in seq 45
    assert lines[0].endswith("waits in all_reduce seq 45 on the default group"), lines[0]
    # a subgroup in which rank 3 has no entry: not said to be behind (membership unknown)
    records[0] = _progress(0, [entry("2", 3, False), entry("0", 45, False)])
    assert "group 2" not in stall_lines(records, T0 + 95 * S)[3]


def test_a_rank_with_no_first_step_past_its_threshold_is_said_not_judged() -> None:
    # Stuck in the first iteration's all_reduce (or compiling): "running" with no step
    # begun. Past its threshold since the collector started it gets a line of its own;
    # before that, and once a step has begun, nothing.
    def starting(rank: int) -> ev.Progress:
        return msgspec.structs.replace(
            _progress(rank, []), state="running", stalled_since_ns=None,
            step=ev.StepState(-1, None, None, 0, None),
        )  # fmt: skip

    records = {0: starting(0), 1: _progress(1, [])}
    records[1] = msgspec.structs.replace(records[1], state="running", stalled_since_ns=None)
    assert stall_lines(records, T0 + 95 * S) == [
        "rank 0: no first step after 95 s (loading or compiling, or stuck before its first"
        " optimizer step; `py-spy dump --pid 1` shows where)"
    ]
    assert stall_lines(records, T0 + 30 * S) == []  # under its 60 s threshold


def test_status_lines_of_a_stalled_pipeline_say_who_waits_for_whom_in_send_recv() -> None:
    # gloo logs no send or receive in its flight recorder: the collector's own (``p2p``)
    def waiting(peer: int, op: str) -> ev.P2PEntry:
        return ev.P2PEntry("0", "default_pg", op, peer, 4096, T0, "in_flight", T0 + 5 * S)

    records = {r: _progress(r, []) for r in range(3)}
    records[0] = msgspec.structs.replace(records[0], p2p=[waiting(1, "send")])
    records[2] = msgspec.structs.replace(records[2], p2p=[waiting(1, "recv")])
    lines = stall_lines(records, T0 + 95 * S)
    assert lines == [
        "rank 0: no step for 95 s (step 19); waits in send to rank 1 for 90 s",
        "rank 1: no step for 95 s (step 19); ranks 0 and 2 wait for it in send/recv",
        "rank 2: no step for 95 s (step 19); waits in recv from rank 1 for 90 s",
    ]
