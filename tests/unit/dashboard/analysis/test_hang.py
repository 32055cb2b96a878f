"""The hang verdict on small hand-built records (``dashboard.analysis.hang``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from rankscope.dashboard.analysis.hang import (
    HangRecords,
    RankRecords,
    hang_verdict,
)
from rankscope.profiler import evidence as ev

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def entry(seq: int, *, pg: str = "0", op: str = "all_reduce", nbytes: int = 64,
          t: float = 0.0, done: bool = True) -> ev.FrEntry:  # fmt: skip
    return ev.FrEntry(
        record_id=seq, pg=pg, pg_desc="default_pg" if pg == "0" else "undefined", seq=seq,
        name=op, p2p=False, bytes=nbytes, enqueue_ns=T0 + int((seq + t) * S), completed=done,
    )  # fmt: skip


def proof(rank: int, trigger: ev.Trigger, ring: list[ev.FrEntry], *, func: str = "train",
          exc: ev.ExceptionInfo | None = None, step: int = 5, at: float = 10.0,
          groups: list[ev.ProcessGroupInfo] | None = None) -> ev.Evidence:  # fmt: skip
    frames = [ev.Frame("/job/train.py", 10, "<module>"), ev.Frame("/job/train.py", 42, func)]
    return ev.Evidence(
        schema=ev.EVIDENCE_SCHEMA, rank=rank, world_size=3, pid=100 + rank, host="h",
        attempt=0, collector_start_ns=T0, ts_ns=T0 + int(at * S), trigger=trigger, detail="",
        threshold_s=2.0, step=ev.StepState(step - 1, None, None, step, T0),
        ring=ring, process_groups=groups or [], exception=exc, ring_source="fr",
        threads=[ev.ThreadStack(1, "MainThread", True, frames)],
    )  # fmt: skip


def records(ranks: dict[int, RankRecords], exit_code: int | None, world: int = 3) -> HangRecords:
    return HangRecords(world_size=world, ranks=ranks, exit_code=exit_code, now_ns=T0 + 60 * S)


def done(n: int, **kw: object) -> list[ev.FrEntry]:
    return [entry(s, **kw) for s in range(1, n + 1)]  # type: ignore[arg-type]


def test_a_clean_run_has_no_verdict() -> None:
    ranks = {r: RankRecords(r, tuple(done(5))) for r in range(3)}
    assert hang_verdict(records(ranks, 0)) is None
    assert hang_verdict(records(ranks, None)) is None


def test_the_rank_that_never_issued_the_collective_is_missing() -> None:
    waiting = [*done(4), entry(5, done=False)]
    ranks = {
        r: RankRecords(r, tuple(done(3)), (proof(r, "stall", waiting, func="all_reduce"),))
        for r in (0, 1)
    }
    ranks[2] = RankRecords(2, tuple(done(3)), (proof(2, "stall", done(4), func="load"),))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "missing_rank" and v.rank == 2 and v.step == 5
    g = v.groups[0]
    assert (g.pg, g.seq, g.op, g.bytes, g.ranks, g.waiting) == (
        "0", 5, "all_reduce", 64, (2,), (0, 1),
    )  # fmt: skip
    assert v.ranks[2].where is not None and v.ranks[2].where.function == "load"
    assert "Rank 2 never issued all_reduce seq 5 (64 bytes) on the default group" in v.headline
    assert v.unfinished_step == 5


def test_a_coalesced_collective_counts_all_its_members() -> None:
    # FSDP groups all-gathers under one seq: two entries of seq 5 (64 + 32 bytes).
    pair = [entry(5, op="all_gather", done=False), entry(5, op="all_gather", nbytes=32, done=False)]
    waiting = [*done(4), *pair]
    ranks = {r: RankRecords(r, (), (proof(r, "stall", waiting),)) for r in (0, 1)}
    ranks[2] = RankRecords(2, (), (proof(2, "stall", done(4), func="load"),))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "missing_rank" and v.rank == 2
    g = v.groups[0]
    assert (g.seq, g.op, g.bytes, g.waiting) == (5, "all_gather", 96, (0, 1))


def test_different_sizes_at_one_seq_are_a_desync_blaming_the_odd_side() -> None:
    ring = [*done(4), entry(5, done=False)]
    odd = [*done(4), entry(5, nbytes=68, done=False)]
    ranks = {r: RankRecords(r, (), (proof(r, "stall", ring),)) for r in (0, 1)}
    ranks[2] = RankRecords(2, (), (proof(2, "stall", odd),))
    v = hang_verdict(records(ranks, None))
    assert v is not None and v.kind == "desync" and v.rank == 2
    assert v.groups[0].sides == (("all_reduce", 68, (2,)), ("all_reduce", 64, (0, 1)))


def test_every_rank_inside_and_none_out_suspects_the_transport() -> None:
    ring = [*done(4), entry(5, done=False)]
    ranks = {r: RankRecords(r, (), (proof(r, "stall", ring),)) for r in range(3)}
    v = hang_verdict(records(ranks, None))
    assert v is not None and v.kind == "all_entered_none_completed" and v.rank is None
    assert v.groups[0].waiting == (0, 1, 2)
    assert "transport" in v.headline


def test_an_exception_makes_the_crashed_rank() -> None:
    ring = [*done(4), entry(5)]  # retired by the error: the newest entry did not complete
    exc = ev.ExceptionInfo("ValueError", "bad batch", [ev.Frame("/job/data.py", 7, "load")])
    ranks = {r: RankRecords(r, (), (proof(r, "collective_error", ring),)) for r in (0, 2)}
    ranks[1] = RankRecords(1, tuple(done(4)), (proof(1, "exception", done(4), exc=exc),))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "crashed" and v.rank == 1
    assert v.groups[0].seq == 5 and v.groups[0].waiting == (0, 2)
    assert v.ranks[1].exception == "ValueError: bad batch"
    assert v.ranks[1].where is not None and v.ranks[1].where.function == "load"


@pytest.mark.parametrize(("at", "said"), [(10.0, "waited 5 s"), (5.4, "waited 400 ms")])
def test_how_long_the_others_waited_is_said_in_ms_under_a_second(at: float, said: str) -> None:
    # The peers' error came 5 s, or 0.4 s (a dead peer's closed connection), after seq 5.
    ring = [*done(4), entry(5)]
    exc = ev.ExceptionInfo("ValueError", "bad batch", [ev.Frame("/job/data.py", 7, "load")])
    ranks = {r: RankRecords(r, (), (proof(r, "collective_error", ring, at=at),)) for r in (0, 2)}
    ranks[1] = RankRecords(1, tuple(done(4)), (proof(1, "exception", done(4), exc=exc),))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and f"ranks 0 and 2 entered it and {said}" in v.headline, v


def test_a_rank_gone_without_evidence_is_named_by_the_others() -> None:
    ring = [*done(4), entry(5)]
    ranks = {r: RankRecords(r, (), (proof(r, "collective_error", ring),)) for r in (0, 2)}
    ranks[1] = RankRecords(1, tuple(done(2)))  # its log lags: seqs 3 and 4 were not written yet
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "crashed" and v.rank == 1
    assert v.groups[0].seq == 5  # not 3: seqs 3 and 4 completed on the others, so rank 1 joined
    assert v.ranks[1].status == "silent" and v.step is None


def test_a_stall_that_cleared_is_a_late_arrival() -> None:
    ring = [*done(2), entry(3, done=False)]
    log = done(5)
    late = [entry(s, t=4.0 if s == 3 else 0.0) for s in range(1, 6)]
    ranks = {r: RankRecords(r, tuple(log), (proof(r, "stall", ring),)) for r in (0, 1)}
    ranks[2] = RankRecords(2, tuple(late), (proof(2, "stall", done(2), func="sleepy"),))
    v = hang_verdict(records(ranks, 0))
    assert v is not None and v.kind == "late_arrival" and v.rank == 2 and not v.hung
    assert v.groups[0].late_s == 4.0 and v.groups[0].waiting == (0, 1)
    assert v.unfinished_step is None


def test_the_subgroup_holding_the_missing_rank_comes_first() -> None:
    groups = [ev.ProcessGroupInfo("", "", [0, 1, 2, 3]), ev.ProcessGroupInfo("2", "", [2, 3])]
    world_wait = [*done(4), entry(5, done=False)]
    ranks = {r: RankRecords(r, (), (proof(r, "stall", world_wait, groups=groups),)) for r in (0, 1)}
    sub_wait = [*done(4), *done(4, pg="2"), entry(5, pg="2", done=False)]
    ranks[2] = RankRecords(2, (), (proof(2, "stall", sub_wait, groups=groups),))
    ranks[3] = RankRecords(3, (), (proof(3, "stall", [*done(4), *done(4, pg="2")], func="x"),))
    v = hang_verdict(records(ranks, 1, world=4))
    assert v is not None and v.kind == "missing_rank" and v.rank == 3
    assert v.groups[0].pg == "2" and v.groups[0].members == (2, 3)
    assert v.groups[1].pg == "0" and v.groups[1].ranks == (2, 3)
    assert v.groups[1].blocked_elsewhere == ((2, "2", 5),)
    assert "rank 2 is itself waiting in group 2 seq 5" in v.details[0]


def test_a_failure_with_nothing_pending_names_the_exception() -> None:
    exc = ev.ExceptionInfo("KeyError", "'lr'", [ev.Frame("/job/train.py", 3, "save")])
    ranks = {r: RankRecords(r, tuple(done(5))) for r in (0, 2)}
    ranks[1] = RankRecords(1, tuple(done(5)), (proof(1, "exception", done(5), exc=exc),))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "exited" and v.rank == 1
    assert "KeyError" in v.headline and "save" in v.headline


@pytest.mark.parametrize(
    ("trigger", "said"),
    [
        # torchrun's SIGTERM caught rank 0 before it got to seq 5
        ("signal", "the launcher stopped rank 0 before it got there"),
        # rank 1's closed connections failed rank 0 before its ring showed seq 5
        ("collective_error", "rank 0 lost the connection and failed before it got there"),
    ],
)
def test_a_peer_cut_short_on_its_way_is_not_blamed_for_a_dead_rank(
    trigger: ev.Trigger, said: str
) -> None:
    # Rank 1 was SIGKILLed; rank 2 entered seq 5 and failed; rank 0 never got there
    # and never stalled. Rank 1 is the cause, rank 0 collateral.
    ranks = {
        0: RankRecords(0, (), (proof(0, trigger, done(4)),)),
        1: RankRecords(1, tuple(done(3))),
        2: RankRecords(2, (), (proof(2, "collective_error", [*done(4), entry(5)]),)),
    }
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "crashed" and v.rank == 1
    g = v.groups[0]
    assert (g.seq, g.ranks, g.waiting, g.cut_short) == (5, (1,), (2,), (0,))
    assert said in v.headline


def test_a_signalled_peer_that_had_stalled_is_still_missing() -> None:
    # Rank 0 sat in its own code past the stall threshold before the signal: it is
    # the missing rank, whatever else died.
    ranks = {
        0: RankRecords(0, (), (proof(0, "stall", done(4)), proof(0, "signal", done(4), at=12))),
        1: RankRecords(1, tuple(done(3))),
        2: RankRecords(2, (), (proof(2, "collective_error", [*done(4), entry(5)]),)),
    }
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "missing_rank" and v.groups[0].ranks == (0, 1)


def test_every_rank_signalled_while_running_is_stopped_not_hung() -> None:
    # The launcher's SIGTERM reached every rank inside all_reduce seq 5 (in flight, not
    # completed anywhere) and none had stalled: no transport fault, no rank at fault.
    ring = [*done(4), entry(5, done=False)]  # seq 5 entered at 5 s; the signal at 5.5 s
    ranks = {r: RankRecords(r, (), (proof(r, "signal", ring, at=5.5),)) for r in range(3)}
    v = hang_verdict(records(ranks, 1))
    assert v is not None and (v.kind, v.rank, v.groups) == ("stopped", None, ())
    assert v.headline == (
        "The job was stopped by a signal (a signal to every rank, exit code 1) in step 5:"
        " no rank had stalled, so this is no hang"
    )
    # the signal came 5 s into seq 5, past the 2 s stall threshold: a hang, though no
    # rank's watch said so (a rank is judged only once its first step began)
    late = {r: RankRecords(r, (), (proof(r, "signal", ring, at=10),)) for r in range(3)}
    v = hang_verdict(records(late, 1))
    assert v is not None and v.kind == "all_entered_none_completed"
    # one of them had stalled before the signal: that is a hang again
    ranks[2] = RankRecords(2, (), (proof(2, "stall", done(4)), proof(2, "signal", done(4))))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "missing_rank" and v.rank == 2


def test_a_rank_gone_without_a_word_with_nothing_pending_is_named() -> None:
    # Every peer was stopped by the launcher before the next collective.
    ranks = {r: RankRecords(r, (), (proof(r, "signal", done(4)),)) for r in (0, 2)}
    ranks[1] = RankRecords(1, tuple(done(4)))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "exited" and v.rank == 1
    assert "rank 1 died without a word" in v.headline


def stalled_progress(rank: int) -> ev.Progress:
    return ev.Progress(
        schema=ev.PROGRESS_SCHEMA, rank=rank, world_size=3, pid=100 + rank, host="h",
        attempt=0, collector_start_ns=T0, ts_ns=T0 + 9 * S, state="stalled", threshold_s=2.0,
        step=ev.StepState(4, None, None, 5, T0), stalled_since_ns=T0 + 7 * S,
    )  # fmt: skip


def test_a_dead_rank_whose_peers_stalled_without_evidence_is_still_the_crash() -> None:
    # Rank 1 was SIGKILLed; ranks 0 and 2 said "stalled" in their progress records and
    # were killed before their evidence was written: no collective on record.
    ranks = {r: RankRecords(r, tuple(done(4)), (), stalled_progress(r)) for r in (0, 2)}
    ranks[1] = RankRecords(1, tuple(done(4)))
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "crashed" and v.rank == 1 and v.groups == ()
    assert "ranks 0 and 2 stalled after it" in v.headline


def test_a_rank_ended_by_a_fatal_signal_inside_the_collective_died_there() -> None:
    # gloo aborted rank 1 inside seq 5 (a message of the wrong size): faulthandler's
    # stack ends in all_reduce; its collective log lags, its peers waited in seq 5.
    c10d = "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py"
    frames = [ev.Frame("/job/train.py", 40, "main"), ev.Frame(c10d, 9, "all_reduce")]
    fatal = ev.Fatal("Fatal Python error: Aborted", frames)
    ranks = {
        r: RankRecords(r, (), (proof(r, "collective_error", [*done(4), entry(5)]),)) for r in (0, 2)
    }
    ranks[1] = RankRecords(1, tuple(done(4)), fatal=fatal)
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "crashed" and v.rank == 1
    assert v.ranks[1].exception == "Fatal Python error: Aborted"
    assert v.ranks[1].where is not None and v.ranks[1].where.function == "main"
    assert "died of a fatal signal (Fatal Python error: Aborted)" in v.headline
    assert "while inside all_reduce seq 5" in v.headline
    assert v.step is None  # no evidence of its own: its step is not known


def test_evidence_written_but_never_linked_into_place_is_read(tmp_path: Path) -> None:
    # Ranks 0 and 2 were killed by the launcher between writing their evidence and
    # linking it into place; rank 1 (SIGKILLed first) wrote nothing.
    import msgspec

    from rankscope.dashboard.analysis.hang import read_hang_records

    ring = [*done(6), entry(7, done=False)]
    for r in (0, 2):
        e = proof(r, "collective_error", ring, exc=ev.ExceptionInfo("RuntimeError", "reset", []))
        (tmp_path / f".rank{r}.hang.{100 + r}.7.tmp").write_bytes(msgspec.json.encode(e))
    (tmp_path / ".rank1.hang.101.7.tmp").write_bytes(b'{"schema": "rankscope.hang/1", "ra')
    recs = read_hang_records(tmp_path)
    assert sorted(recs.ranks) == [0, 1, 2]
    assert [len(recs.ranks[r].evidence) for r in (0, 1, 2)] == [1, 0, 1]
    assert any("cut short while being written" in p for p in recs.problems), recs.problems
    v = hang_verdict(HangRecords(recs.world_size, recs.ranks, exit_code=1, now_ns=T0 + 60 * S))
    assert v is not None and v.rank == 1, v and v.headline


# --- pipelines: sends and receives (gloo's, in the evidence's ``p2p``)


def waiting_in(rank: int, op: str, peer: int, *, since: float = 4.0, at: float = 10.0,
               failed: bool = False, func: str = "recv") -> ev.Evidence:  # fmt: skip
    """Rank ``rank``'s stall evidence at ``at`` s, blocked in ``op`` with ``peer`` since
    ``since`` s (``failed``: its wait raised then instead, a timeout)."""
    e = ev.P2PEntry(
        pg="0", pg_desc="default_pg", name=op, peer=peer, bytes=4096,
        enqueue_ns=T0 + int(since * S), state="failed" if failed else "in_flight",
        wait_start_ns=T0 + int(since * S), end_ns=T0 + int(at * S) if failed else None,
    )  # fmt: skip
    trigger: ev.Trigger = "collective_error" if failed else "stall"
    return msgspec.structs.replace(proof(rank, trigger, done(3), func=func, at=at), p2p=[e])


def test_the_stage_the_chain_of_waits_ends_at_is_named() -> None:
    # 4 stages: 3 waits for 2, which waits for 1, which waits for 0; rank 0 waits on no
    # one: it is in its own code (a stall evidence with no send or receive under way)
    ranks = {
        0: RankRecords(0, (), (proof(0, "stall", done(3), func="stuck_in_loss"),)),
        1: RankRecords(1, (), (waiting_in(1, "recv", 0),)),
        2: RankRecords(2, (), (waiting_in(2, "recv", 1, since=5.0),)),
        3: RankRecords(3, (), (waiting_in(3, "recv", 2, since=6.5, failed=True),)),
    }
    v = hang_verdict(records(ranks, 1, world=4))
    assert v is not None and v.kind == "p2p_stuck" and v.rank == 0 and v.step == 5
    assert v.headline.startswith("Rank 0 stopped making progress in stuck_in_loss"), v.headline
    # the rank waiting on it directly first; then the rest of the chain, each with its wait
    assert v.headline.endswith(
        "rank 1 waited 6 s in recv from rank 0; rank 2 waited 5 s in recv from rank 1;"
        " rank 3 waited 4 s in recv from rank 2 (then timed out)"
    ), v.headline


def test_a_stage_with_no_record_at_all_is_still_the_one_waited_for() -> None:
    ranks = {r: RankRecords(r, (), (waiting_in(r, "recv", 0),)) for r in (1, 2)}
    v = hang_verdict(records(ranks, 1))
    assert v is not None and v.kind == "p2p_stuck" and v.rank == 0
    assert "Rank 0 left no record" in v.headline


def test_ranks_waiting_for_each_other_in_a_cycle_are_a_deadlock() -> None:
    ranks = {
        0: RankRecords(0, (), (waiting_in(0, "send", 1, func="send"),)),
        1: RankRecords(1, (), (waiting_in(1, "send", 0, func="send"),)),
    }
    v = hang_verdict(records(ranks, 1, world=2))
    assert v is not None and v.kind == "p2p_deadlock" and v.rank is None
    assert "rank 0 in send to rank 1; rank 1 in send to rank 0" in v.headline


def test_a_live_stage_others_wait_for_is_named_as_still_running() -> None:
    # The job still runs (no exit code): stage 0's progress is a second old and says
    # running (under its own stall threshold), while stage 1 stalled in a receive from it
    live = msgspec.structs.replace(stalled_progress(0), state="running", ts_ns=T0 + 59 * S)
    ranks = {0: RankRecords(0, (), (), live), 1: RankRecords(1, (), (waiting_in(1, "recv", 0),))}
    v = hang_verdict(records(ranks, None, world=2))
    assert v is not None and v.kind == "p2p_stuck" and v.rank == 0
    assert v.headline.startswith("Rank 0 kept running (not stalled by its own clock)"), v.headline
    assert v.headline.endswith("rank 1 waited 6 s in recv from rank 0")
