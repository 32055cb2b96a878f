"""Collective matching (``analysis.comms``) on three ranks and two hand-timed all_reduces.

Times in ms (the tables hold ns). Instance 1 starts at 0, 2 and 7 ms on ranks
0, 1, 2 and ends at 10 ms everywhere: rank 2 arrives last, transfer is its 3 ms.
Instance 2 starts at 24, 20, 22 ms and ends at 26 ms: rank 0 arrives last,
transfer 2 ms.
"""

from __future__ import annotations

import numpy as np
import pytest

from rankscope.dashboard.analysis import comms
from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.ingest.table import Table

MS = 1_000_000
STARTS = {0: (0, 24), 1: (2, 20), 2: (7, 22)}
ENDS = (10, 26)


def comms_table(rank: int, seq: bool = False, name: str = "all_reduce") -> Table:
    starts = np.array(STARTS[rank], dtype=np.int64) * MS
    ends = np.array(ENDS, dtype=np.int64) * MS
    return Table.build(
        {
            "ts": starts,
            "dur": ends - starts,
            "launch_ts": starts,
            "seq": np.array([1, 2] if seq else [-1, -1], dtype=np.int64),
            "bytes": np.array([1_000_000, 1_000_000], dtype=np.int64),
            "name": [name, name],
            "pg": ["0", "0"],
        },
        strings=("name", "pg"),
    )


def matched(seq: bool = False) -> Table:
    windows = {r: {0: (0, 100 * MS)} for r in STARTS}
    return comms.match_collectives({r: comms_table(r, seq) for r in STARTS}, windows, [0])


def column(t: Table, instance: int, name: str) -> dict[int, float]:
    m = t["instance"] == instance
    return dict(zip(t["rank"][m].tolist(), t[name][m].tolist(), strict=True))


@pytest.mark.parametrize("seq", [False, True])
def test_transfer_is_the_shortest_duration_and_the_rest_is_waiting(seq: bool) -> None:
    t = matched(seq)
    assert len(t) == 6 and sorted(set(t["instance"].tolist())) == [0, 1]
    assert column(t, 0, "transfer_ms") == {0: 3.0, 1: 3.0, 2: 3.0}
    assert column(t, 0, "wait_ms") == {0: 7.0, 1: 5.0, 2: 0.0}
    assert set(column(t, 0, "last_rank").values()) == {2}
    assert column(t, 1, "transfer_ms") == {0: 2.0, 1: 2.0, 2: 2.0}
    assert column(t, 1, "wait_ms") == {0: 0.0, 1: 4.0, 2: 2.0}
    assert set(column(t, 1, "last_rank").values()) == {0}


def test_last_arrivals_and_wait_intervals() -> None:
    t = matched()
    assert comms.last_arrivals(t) == {2: 1, 0: 1}
    # Rank 0 waits for rank 2 from 0 to 7 ms; rank 1 waits for rank 0 from 20 to 24 ms.
    for_rank_2 = comms.wait_intervals(t, by_last_rank=2)
    assert iv.length(for_rank_2[0]) == 7 * MS and iv.length(for_rank_2[2]) == 0
    for_rank_0 = comms.wait_intervals(t, by_last_rank=0)
    assert [a.tolist() for a in for_rank_0[1]] == [[20 * MS], [24 * MS]]


def test_collective_summary_per_step() -> None:
    (s,) = comms.collective_summary(matched(), n_steps=1, n_ranks=3)
    assert (s.name, s.pg, s.count, s.bytes) == ("all_reduce", "0", 2, 1_000_000)
    assert s.transfer_ms == 5.0  # 3 + 2 ms in the one step
    assert s.wait_ms == 6.0  # (7 + 9 + 2) ms of waiting over 3 ranks
    assert s.last_arrival_counts == {0: 1, 2: 1}
    assert s.effective_gbps == 0.4  # 1 MB in a 2.5 ms mean transfer


def test_a_collective_seen_on_one_rank_waits_for_no_one() -> None:
    windows = {0: {0: (0, 100 * MS)}}
    t = comms.match_collectives({0: comms_table(0)}, windows, [0])
    assert t["wait_ms"].tolist() == [0.0, 0.0]
    assert t["last_rank"].tolist() == [-1, -1]


def test_collectives_outside_the_steps_are_left_out() -> None:
    windows = {r: {0: (0, 15 * MS)} for r in STARTS}  # only instance 1 was launched in step 0
    t = comms.match_collectives({r: comms_table(r) for r in STARTS}, windows, [0])
    assert len(t) == 3 and set(t["last_rank"].tolist()) == {2}


def test_one_way_sends_and_receives_are_not_paired_by_position() -> None:
    # A 2-stage pipeline traced by gloo (no sequence numbers): rank 0 sends at 0 and
    # 24 ms; rank 1 receives, blocked 0-10 ms and 20-26 ms. Pairing rank 0's "send"
    # with nothing and rank 1's "recv" with nothing: no last arrival, and each side's
    # whole duration is waiting (a blocking send waits for its receiver), not transfer.
    windows = {r: {0: (0, 100 * MS)} for r in (0, 1)}
    t = comms.match_collectives(
        {0: comms_table(0, name="send"), 1: comms_table(1, name="recv")}, windows, [0]
    )
    assert len(t) == 4 and len(set(t["instance"].tolist())) == 4
    assert set(t["last_rank"].tolist()) == {-1}
    recv = t["rank"] == 1
    assert t["wait_ms"][recv].tolist() == [8.0, 6.0] and t["transfer_ms"][recv].tolist() == [0, 0]
    assert t["wait_ms"][~recv].tolist() == [10.0, 2.0]
    assert t["transfer_ms"][~recv].tolist() == [0.0, 0.0]
    assert comms.p2p_wait_share(t) == 1.0


def test_nccl_send_recv_kernels_are_still_matched_as_one_exchange() -> None:
    windows = {r: {0: (0, 100 * MS)} for r in STARTS}
    tables = {r: comms_table(r, name="send_recv") for r in STARTS}
    t = comms.match_collectives(tables, windows, [0])
    assert sorted(set(t["instance"].tolist())) == [0, 1]
    assert set(column(t, 0, "last_rank").values()) == {2}
