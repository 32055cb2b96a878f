"""Collective sequence numbers that do not line up across ranks are named (issue 24).

Hand-made ranks: ``STEPS`` steps of 10 ms, ``PER_STEP`` collectives a step in
process group 0, the n-th with seq ``FIRST + n`` on every rank unless shifted.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rankscope.dashboard.analysis.wholerun import (
    LightRank,
    SeqShift,
    coll_keys,
    light_gaps,
    seq_shifts,
    whole_run,
)

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
STEPS = 8
PER_STEP = 3
FIRST = 4  # collectives before step 0 (init): seq 1..3


def rank_of(
    rank: int,
    shift: int = 0,
    work_ms: float = 2.0,
    pg: int = 0,
    p2p_extra: int = 0,
    durations: bool = False,
) -> LightRank:
    starts = T0 + np.arange(STEPS, dtype=np.int64) * 10 * MS
    seq, enq, p2p = [], [], []
    for s in range(STEPS):
        for j in range(PER_STEP):
            seq.append(FIRST + s * PER_STEP + j + shift)
            enq.append(int(starts[s]) + int(work_ms * MS) + j * 100_000)
            p2p.append(False)
        for j in range(p2p_extra):  # sends: their seq counts this rank's own p2p ops
            seq.append(s * p2p_extra + j + rank * 1000)
            enq.append(int(starts[s]) + MS // 2 + j)
            p2p.append(True)
    seqs = np.array(seq, dtype=np.int64)
    return LightRank(
        rank=rank,
        step=np.arange(STEPS, dtype=np.int64),
        start_ns=starts,
        end_ns=starts + 9 * MS,
        data_ns=np.full(STEPS, -1, dtype=np.int64),
        coll_key=coll_keys(np.full(len(seqs), pg), seqs, np.array(p2p, dtype=bool)),
        enqueue_ns=np.array(enq, dtype=np.int64),
        duration_ms=np.where(np.array(p2p), np.nan, 1.0) if durations else np.zeros(0),
        p2p=np.array(p2p, dtype=bool),
        pg_names=("0", "1"),
    )


def test_ranks_that_line_up_show_no_shift() -> None:
    assert seq_shifts([rank_of(0), rank_of(1), rank_of(2)]) == []


def test_a_rank_whose_seq_ids_moved_is_named_with_the_offset() -> None:
    shifts = seq_shifts([rank_of(0), rank_of(1, shift=5)])
    assert shifts == [SeqShift(pg="0", rank=1, reference=0, offset=5, steps=STEPS, compared=STEPS)]


def test_the_odd_rank_is_named_even_when_it_is_the_lowest() -> None:
    shifts = seq_shifts([rank_of(0, shift=-2), rank_of(1), rank_of(2)])
    assert shifts == [SeqShift("0", rank=0, reference=1, offset=-2, steps=STEPS, compared=STEPS)]


def test_each_group_is_compared_on_its_own() -> None:
    ranks = [rank_of(0), rank_of(1), rank_of(2, pg=1), rank_of(3, pg=1, shift=7)]
    assert seq_shifts(ranks) == [SeqShift("1", 3, 2, 7, STEPS, STEPS)]


def test_sends_and_receives_counting_apart_are_no_shift() -> None:
    # A pipeline's stages issue different numbers of p2p operations: their seqs differ.
    assert seq_shifts([rank_of(0, p2p_extra=1), rank_of(1, p2p_extra=2)]) == []


def test_a_few_lost_entries_are_no_shift() -> None:
    # A ring that lost the first collective of two steps on rank 1: not a consistent offset.
    r1 = rank_of(1)
    lost = np.ones(len(r1.coll_key), dtype=bool)
    lost[[0, PER_STEP * 3]] = False
    r1 = LightRank(
        rank=1,
        step=r1.step,
        start_ns=r1.start_ns,
        end_ns=r1.end_ns,
        data_ns=r1.data_ns,
        coll_key=r1.coll_key[lost],
        enqueue_ns=r1.enqueue_ns[lost],
        p2p=r1.p2p[lost],
    )
    assert seq_shifts([rank_of(0), r1]) == []


def test_the_whole_run_matches_nothing_by_seq_when_they_do_not_line_up() -> None:
    # NCCL GPU times are matched by (group, seq): with rank 1's moved, they would pair
    # different collectives. The verdict keeps each rank's own step timing.
    aligned = whole_run([rank_of(0, durations=True), rank_of(1, work_ms=6, durations=True)], True)
    assert aligned is not None and aligned.gpu_steps == STEPS and aligned.seq_shifts == []
    moved = [rank_of(0, durations=True), rank_of(1, shift=5, work_ms=6, durations=True)]
    wr = whole_run(moved, True)
    assert wr is not None and wr.gpu_steps == 0 and wr.gpu_split is None
    assert wr.seq_shifts == [SeqShift("0", 1, 0, 5, STEPS, STEPS)]
    # Counted with the offset taken off: all 24 collectives on both ranks, none missing
    # (by the logged numbers, 19 matched and 10 "unmatched": 5 at each end).
    assert (wr.matched_collectives, wr.unmatched_collectives) == (STEPS * PER_STEP, 0)
    lost = rank_of(1, shift=5, work_ms=6, durations=True)
    keep = lost.coll_key != lost.coll_key.max()  # its last collective never logged
    lost = replace(
        lost, coll_key=lost.coll_key[keep], enqueue_ns=lost.enqueue_ns[keep],
        duration_ms=lost.duration_ms[keep], p2p=lost.p2p[keep],
    )  # fmt: skip
    one_short = whole_run([rank_of(0, durations=True), lost], True)
    assert one_short is not None
    assert (one_short.matched_collectives, one_short.unmatched_collectives) == (23, 1)
    # Arrival lags (several collectives a step) pair by seq too: rank 1's moved numbers
    # pair collectives steps apart. Without them, each rank's work before its last one.
    built = light_gaps(moved, seq_aligned=False)
    assert built is not None
    assert np.allclose(built[0].gap_ms, [[2.2] * STEPS, [6.2] * STEPS])
    paired = light_gaps(moved)
    assert paired is not None and not np.allclose(paired[0].gap_ms, built[0].gap_ms)


def test_a_send_and_a_collective_with_the_same_seq_are_different_instances() -> None:
    from rankscope.dashboard.analysis.wholerun import _match_counts

    # Rank 0 sends p2p #5..; rank 1 issues all_reduce #5.. of the same group: before p2p
    # had a bit of its own in the key, each pair read as one instance both ranks logged.
    a = LightRank(
        rank=0, step=np.arange(1), start_ns=np.zeros(1, np.int64), end_ns=np.ones(1, np.int64),
        data_ns=np.full(1, -1), coll_key=coll_keys(np.zeros(3), np.array([5, 6, 7]),
        np.ones(3, bool)), enqueue_ns=np.zeros(3, np.int64), p2p=np.ones(3, bool),
    )  # fmt: skip
    b = LightRank(
        rank=1, step=np.arange(1), start_ns=np.zeros(1, np.int64), end_ns=np.ones(1, np.int64),
        data_ns=np.full(1, -1), coll_key=coll_keys(np.zeros(3), np.array([5, 6, 7])),
        enqueue_ns=np.zeros(3, np.int64), p2p=np.zeros(3, bool),
    )  # fmt: skip
    assert _match_counts([a, b]) == (0, 6)
    assert _match_counts([a, a]) == (3, 0)


def test_a_subgroups_collectives_are_not_missing_on_the_ranks_outside_it() -> None:
    from rankscope.dashboard.analysis.wholerun import _match_counts

    # Two data-parallel groups of a 2 x 2 pipeline job: ranks 0, 2 in group 1 and ranks
    # 1, 3 in group 2, 4 all-reduces each. Before: "16 of 16 collective instance(s) were
    # logged by only some ranks", as if every rank had to log every group's.
    def rank(r: int, pg: int, seqs: list[int]) -> LightRank:
        n = len(seqs)
        return LightRank(
            rank=r, step=np.arange(1), start_ns=np.zeros(1, np.int64),
            end_ns=np.ones(1, np.int64), data_ns=np.full(1, -1),
            coll_key=coll_keys(np.full(n, pg), np.array(seqs)),
            enqueue_ns=np.zeros(n, np.int64),
        )  # fmt: skip

    full = [1, 2, 3, 4]
    ranks = [rank(0, 1, full), rank(1, 2, full), rank(2, 1, full), rank(3, 2, full)]
    assert _match_counts(ranks) == (8, 0)
    # rank 3's log lost its last all-reduce: one instance of group 2 only rank 1 logged
    ranks[3] = rank(3, 2, [1, 2, 3])
    assert _match_counts(ranks) == (7, 1)
    # rank 3's log is gone (killed): group 2's instances only rank 1 logged are all missing
    ranks = [ranks[0], ranks[1], ranks[2]]
    assert _match_counts(ranks) == (4, 4)
