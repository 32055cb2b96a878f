"""``rankscope.profiler.p2p`` on stand-ins for a process group and its works: what a
gloo send or receive writes, what other backends write (nothing), and the bounds.

The real wrappers run in the pipeline jobs of ``tests/integration/diagnosis/test_pipeline.py``."""

from __future__ import annotations

from typing import Any

import pytest

from rankscope.profiler import p2p

torch = pytest.importorskip("torch")


class ProcessGroupGloo:  # the backend's class name is what tells gloo
    pass


class OtherBackend:
    pass


class Group:
    group_name, group_desc = "3", "pipeline"

    def __init__(self, backend: type) -> None:
        self.backend = backend()

    def _get_backend(self, device: Any) -> Any:
        return self.backend


class Work:
    def __init__(self, done: bool = False, source: int = -1) -> None:
        self.done, self.source = done, source

    def is_completed(self) -> bool:
        return self.done

    def _source_rank(self) -> int:
        return self.source


class Torch:  # get_global_rank: group rank r is global rank 10 + r
    class distributed:  # stands in for torch.distributed
        @staticmethod
        def get_global_rank(group: Any, rank: int) -> int:
            return 10 + rank


def test_a_gloo_send_waited_for_is_one_row_naming_its_peer_and_its_wait() -> None:
    log = p2p.P2PLog(Torch)
    work = Work()
    log.started(Group(ProcessGroupGloo), "send", ([torch.zeros(16, 4)], 1, 0), work, 100)
    assert log.drain() == []  # still in flight, not yet due for a check
    log.waited(work, 150, 400, ok=True)
    (row,) = log.drain()
    assert row["name"] == "send" and row["peer"] == 11 and row["bytes"] == 16 * 4 * 4
    assert (row["enqueue_ns"], row["wait_start_ns"], row["end_ns"]) == (100, 150, 400)
    assert row["state"] == "completed" and row["source"] == "collector" and row["p2p"]
    assert (row["pg"], row["pg_desc"], row["seq"]) == ("3", "pipeline", 1)
    assert log.describe()["ops"] == 1


def test_a_receive_from_any_source_learns_its_peer_when_waited_for() -> None:
    log = p2p.P2PLog(Torch)
    work = Work(source=2)
    log.started(Group(ProcessGroupGloo), "recv_anysource", ([torch.zeros(3)], 0), work, 5)
    log.waited(work, 6, 9, ok=True)
    (row,) = log.drain()
    assert row["name"] == "recv" and row["peer"] == 12


def test_other_backends_are_not_logged() -> None:
    # NCCL's flight recorder logs its own sends and receives
    log = p2p.P2PLog(Torch)
    log.started(Group(OtherBackend), "send", ([torch.zeros(3)], 1, 0), Work(), 1)
    assert log.drain(final=True) == [] and log.describe()["ops"] == 0


def test_works_never_waited_for_are_written_once_done_or_at_the_end() -> None:
    log = p2p.P2PLog(Torch)
    g = Group(ProcessGroupGloo)
    done, stuck = Work(done=True), Work(done=False)
    log.started(g, "send", ([torch.zeros(3)], 1, 0), done, 1)  # long ago: due for a check
    log.started(g, "recv", ([torch.zeros(3)], 1, 0), stuck, 2)
    (row,) = log.drain()
    assert row["seq"] == 1 and row["state"] == "completed" and "wait_start_ns" not in row
    (row,) = log.drain(final=True)  # the collector stops: what is left, as it stands
    assert row["seq"] == 2 and row["state"] == "scheduled" and row["end_ns"] is None


def test_past_the_bound_operations_are_counted_as_dropped(monkeypatch: Any) -> None:
    monkeypatch.setattr(p2p, "PENDING_MAX", 2)
    log = p2p.P2PLog(Torch)
    for i in range(5):
        log.started(Group(ProcessGroupGloo), "send", ([torch.zeros(1)], 1, 0), Work(), 10**18 + i)
    assert log.describe()["ops"] == 2 and log.describe()["dropped"] == 3
