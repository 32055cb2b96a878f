"""A blocking gloo send/recv is one comms row from the dispatcher's op to the end of its wait.

Times in µs, as Kineto writes them. From a real 2-stage gloo trace: ``c10d::send``
at 0 for 4,220 µs (blocked until the peer receives), then ``gloo:send`` at 4,203 for
64 µs; ``c10d::recv_`` at 10,000 for 52 µs, then ``gloo:recv`` at 10,044 for
74,943 µs (blocked until the peer sends).
"""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.ingest.kineto.collectives import comms_table, merge_p2p
from rankscope.dashboard.ingest.kineto.events import NO_ARGS

SEND_OP = (0.0, 4220.0, "c10d::send", NO_ARGS)
SEND = (4203.0, 64.0, "gloo:send", NO_ARGS)
RECV_OP = (10_000.0, 52.0, "c10d::recv_", NO_ARGS)
RECV = (10_044.0, 74_943.0, "gloo:recv", NO_ARGS)


def test_each_gloo_range_takes_the_op_that_opened_it() -> None:
    rows = merge_p2p([SEND, RECV], [SEND_OP, RECV_OP])
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (0.0, 4267.0, "gloo:send"),  # 0 .. 4,203 + 64
        (10_000.0, 74_987.0, "gloo:recv"),  # 10,000 .. 10,044 + 74,943
    ]


def test_an_op_that_ended_long_before_the_range_is_not_its_opener() -> None:
    late = (SEND[0] + 1000.0, *SEND[1:])  # 1 ms after the op ended: an async isend's wait
    assert merge_p2p([late], [SEND_OP]) == [late]
    assert merge_p2p([SEND], []) == [SEND]


def test_the_comms_table_holds_the_blocked_time_and_no_dispatcher_rows() -> None:
    table, source = comms_table(
        [], {}, [SEND_OP, SEND, RECV_OP, RECV], np.zeros(0), np.zeros(0, np.int64), 0
    )
    assert source == "cpu"
    assert table.strings("name").tolist() == ["send", "recv"]
    assert table["dur"].tolist() == [4_267_000, 74_987_000]  # ns
