"""Pipelines (``analysis.pipeline``) on hand-simulated GPipe schedules.

``gpipe`` plays a GPipe step on p stages: every micro-batch forward (receive from
the stage before, compute ``fwd[s]`` ms, send on), then every backward (receive
from the stage after, compute 2 x ``fwd[s]``, send back). A send and its receive
are a rendezvous: both end 1 µs (the transfer) after the later of the two has
started. With equal stages of f ms the step takes (m+p-1) x 3f and each stage is
blocked (p-1) x 3f of it: the schedule's ideal bubble (p-1)/(m+p-1), exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rankscope.dashboard.analysis.pipeline import light_pipelines, pipelines_of
from rankscope.dashboard.ingest.table import Table

MS = 1_000_000
TRANSFER_MS = 0.001


def _program(s: int, p: int, m: int, fwd: float) -> list[tuple[str, float, tuple[int, ...]]]:
    ops: list[tuple[str, float, tuple[int, ...]]] = []
    for i in range(m):
        if s > 0:
            ops.append(("recv", 0, (s - 1, s, i, 0)))
        ops.append(("compute", fwd, ()))
        if s < p - 1:
            ops.append(("send", 0, (s, s + 1, i, 0)))
    for i in range(m):
        if s < p - 1:
            ops.append(("recv", 0, (s + 1, s, i, 1)))
        ops.append(("compute", 2 * fwd, ()))
        if s > 0:
            ops.append(("send", 0, (s, s - 1, i, 1)))
    return ops


def gpipe(fwd: list[float], m: int, steps: int) -> dict[int, list[tuple[str, float, float]]]:
    """Per stage, ``steps`` steps played back to back: its send/recv ops as (kind, start
    ms, end ms), and a ("step", start, start) mark where each of its steps begins."""
    p = len(fwd)
    progs = []
    for s in range(p):
        prog: list[tuple[str, float, tuple[int, ...]]] = []
        for k in range(steps):
            prog.append(("step", 0, (k,)))
            prog += [(kind, ms, (*key, k)) for kind, ms, key in _program(s, p, m, fwd[s])]
        progs.append(prog)
    pc, clock = [0] * p, [0.0] * p
    out: dict[int, list[tuple[str, float, float]]] = {s: [] for s in range(p)}
    while any(pc[s] < len(progs[s]) for s in range(p)):
        moved = False
        for s in range(p):
            while pc[s] < len(progs[s]) and progs[s][pc[s]][0] in ("compute", "step"):
                if progs[s][pc[s]][0] == "step":
                    out[s].append(("step", clock[s], clock[s]))
                clock[s] += progs[s][pc[s]][1]
                pc[s] += 1
                moved = True
            if pc[s] >= len(progs[s]):
                continue
            kind, _, key = progs[s][pc[s]]
            peer = key[1] if kind == "send" else key[0]
            other = "recv" if kind == "send" else "send"
            if pc[peer] < len(progs[peer]) and progs[peer][pc[peer]] == (other, 0, key):
                end = max(clock[s], clock[peer]) + TRANSFER_MS
                out[s].append((kind, clock[s], end))
                out[peer].append((other, clock[peer], end))
                clock[s] = clock[peer] = end
                pc[s] += 1
                pc[peer] += 1
                moved = True
        assert moved, "the simulated schedule deadlocked"
    for s in range(p):
        out[s].append(("step", clock[s], clock[s]))  # where the next step would begin
    return out


def tables(
    fwd: list[float], m: int, ranks: list[int] | None = None, steps: int = 3, shift_ms: float = 0.0
) -> tuple[dict[int, Table], dict[int, dict[int, tuple[int, int]]]]:
    """Each rank's comms table and step windows for ``steps`` steps of ``gpipe``; stage s
    runs on ``ranks[s]``; every time moved by ``shift_ms``."""
    ranks = ranks or list(range(len(fwd)))
    sched = gpipe(fwd, m, steps)
    comms, windows = {}, {}
    for s, rank in enumerate(ranks):
        rows = [(a + shift_ms, b - a, kind) for kind, a, b in sched[s] if kind != "step"]
        marks = [a + shift_ms for kind, a, _ in sched[s] if kind == "step"]
        start = np.array([r[0] for r in rows]) * MS
        comms[rank] = Table.build(
            {
                "ts": start.astype(np.int64),
                "launch_ts": start.astype(np.int64),
                "dur": (np.array([r[1] for r in rows]) * MS).astype(np.int64),
                "seq": np.full(len(rows), -1, dtype=np.int64),
                "bytes": np.full(len(rows), -1, dtype=np.int64),
                "name": [r[2] for r in rows],
                "pg": ["0"] * len(rows),
            },
            strings=("name", "pg"),
        )
        windows[rank] = {
            k: (int(marks[k] * MS), int(marks[k + 1] * MS)) for k in range(len(marks) - 1)
        }
    return comms, windows


STEADY = [1, 2]  # step 0 fills the pipeline from cold


def test_a_balanced_pipeline_has_the_schedules_ideal_bubble_and_no_bottleneck() -> None:
    comms, windows = tables([1.0] * 4, m=4)
    (p,) = pipelines_of(comms, windows, STEADY)
    assert p.ranks == [0, 1, 2, 3] and p.order_source == "first send"
    assert p.micro_batches == 4 and p.ideal_bubble == pytest.approx(3 / 7, abs=1e-4)
    assert p.step_ms == pytest.approx(21.0, abs=0.05)  # (m + p - 1) x 3 ms
    assert [s.bubble for s in p.stages] == pytest.approx([3 / 7] * 4, abs=2e-3)
    assert [s.busy_ms for s in p.stages] == pytest.approx([12.0] * 4, abs=0.05)
    assert p.bottleneck_stage is None and p.saving_ms_per_step == 0.0


def test_a_slow_stage_is_the_bottleneck_with_the_rebalancing_saving() -> None:
    comms, windows = tables([1.0, 1.0, 3.0, 1.0], m=4)
    (p,) = pipelines_of(comms, windows, STEADY)
    assert p.bottleneck_stage == 2 and p.bottleneck_rank == 2
    assert p.busy_ratio == pytest.approx(3.0, abs=0.01)
    # busy 12, 12, 36, 12 ms: mean 18, so (m - 1)(36 - 18)/m = 13.5 ms
    assert p.saving_ms_per_step == pytest.approx(13.5, abs=0.05)
    assert p.stages[2].bubble < min(s.bubble for s in p.stages if s.stage != 2)


def test_a_stage_busier_by_the_wall_clock_only_is_no_bottleneck() -> None:
    # stage 2 busy 36 ms a step against 12, but its thread ran 12.5 ms of CPU like the
    # others' 12: it waited for a CPU (a loaded host) or for I/O, not on more work
    comms, windows = tables([1.0, 1.0, 3.0, 1.0], m=4)
    cpu = {0: 12.0, 1: 12.2, 2: 12.5, 3: 11.9}
    (p,) = pipelines_of(comms, windows, STEADY, cpu_ms=cpu)
    assert p.busy_ratio == pytest.approx(3.0, abs=0.01)
    assert p.cpu_ratio == pytest.approx(12.5 / 12.1, abs=1e-3)
    assert p.bottleneck_stage is None and p.saving_ms_per_step == 0.0
    assert [s.cpu_ms for s in p.stages] == [12.0, 12.2, 12.5, 11.9]
    # the same wall clock with 3x the CPU time: the bottleneck
    cpu[2] = 36.0
    (p,) = pipelines_of(comms, windows, STEADY, cpu_ms=cpu)
    assert p.bottleneck_stage == 2 and p.cpu_ratio == pytest.approx(36 / 12.1, abs=1e-3)


def test_stages_are_ordered_by_who_talks_to_whom_not_by_rank() -> None:
    comms, windows = tables([1.0, 1.0, 1.0, 2.5], m=4, ranks=[2, 0, 3, 1])
    (p,) = pipelines_of(comms, windows, STEADY)
    assert p.ranks == [2, 0, 3, 1]
    assert p.bottleneck_stage == 3 and p.bottleneck_rank == 1


def test_two_pipelines_side_by_side_are_two_pipelines() -> None:
    # Data parallel x pipeline: ranks 0 -> 1 and 2 -> 3, the second 0.3 ms behind.
    a, wa = tables([1.0, 1.0], m=4, ranks=[0, 1])
    b, wb = tables([1.0, 2.0], m=4, ranks=[2, 3], shift_ms=0.3)
    found = pipelines_of({**a, **b}, {**wa, **wb}, STEADY)
    assert [p.ranks for p in found] == [[0, 1], [2, 3]]
    assert [p.bottleneck_rank for p in found] == [None, 3]


def test_no_point_to_point_is_no_pipeline() -> None:
    comms, windows = tables([1.0, 1.0], m=2)
    for t in comms.values():
        t.vocab["name"] = ["all_reduce" for _ in t.vocab["name"]]
    assert pipelines_of(comms, windows, STEADY) == []


def test_the_verdict_of_a_balanced_pipeline_names_its_bubble_not_a_rank() -> None:
    from rankscope.dashboard.analysis.verdict import Evidence, reconcile, with_pipeline

    comms, windows = tables([1.0] * 4, m=4)
    pipes = pipelines_of(comms, windows, STEADY)
    plain = reconcile(Evidence([], None, 1, 2, 3 / 7, p2p_share=1.0), None, None)
    v = with_pipeline(plain, pipes, has_gpu=False)
    assert v is not None and v.rank is None
    assert v.headline.startswith("No straggler: the pipeline's 4 stages are balanced")
    assert "blocked on their neighbours 43% of the step (the schedule's ideal is 43%)" in (
        v.headline
    )


# --- over the whole run: the collector's own rows of gloo's sends and receives
# (``light_pipelines``: peers named, the wait timed, the step timer's steps)


def light_tables(
    fwd: list[float], m: int, ranks: list[int], steps: int = 3
) -> tuple[dict[int, Table], dict[int, Table]]:
    """The same ``gpipe`` schedule as the collector logs it: per rank, its
    ``collectives.jsonl`` rows (each operation called and waited for at once, naming
    its peer) and its step timer's marks; stage s runs on ``ranks[s]``."""
    p = len(fwd)
    sched = gpipe(fwd, m, steps)
    comms, marks = {}, {}
    for s, rank in enumerate(ranks):
        peers = [
            ranks[key[1] if kind == "send" else key[0]]
            for _ in range(steps)
            for kind, _, key in _program(s, p, m, fwd[s])
            if kind != "compute"
        ]
        ops = [(kind, a, b) for kind, a, b in sched[s] if kind != "step"]
        assert len(ops) == len(peers)
        start = (np.array([a for _, a, _ in ops]) * MS).astype(np.int64)
        end = (np.array([b for _, _, b in ops]) * MS).astype(np.int64)
        n = len(ops)
        comms[rank] = Table.build(
            {
                "pg": ["0"] * n,
                "name": [kind for kind, _, _ in ops],
                "pg_desc": ["default_pg"] * n,
                "seq": np.arange(1, n + 1, dtype=np.int64),
                "enqueue_ns": start,
                "start_ns": np.full(n, -1, np.int64),
                "end_ns": end,
                "duration_ms": np.full(n, np.nan),
                "p2p": np.ones(n, np.int8),
                "peer": np.array(peers, np.int64),
                "wait_start_ns": start,
            },
            strings=("pg", "name", "pg_desc"),
        )
        at = [int(a * MS) for kind, a, _ in sched[s] if kind == "step"]
        marks[rank] = Table.build(
            {
                "step": np.arange(len(at) - 1, dtype=np.int64),
                "start_ns": np.array(at[:-1], np.int64),
                "end_ns": np.array(at[1:], np.int64),
            }
        )
    return comms, marks


def test_the_light_layer_gives_the_same_stages_as_the_trace_window() -> None:
    comms, marks = light_tables([1.0] * 4, 4, [0, 1, 2, 3])
    (p,) = light_pipelines(comms, marks)
    assert p.source == "light" and (p.first_step, p.last_step) == (1, 2)  # step 0: start-up
    assert p.ranks == [0, 1, 2, 3] and p.order_source == "first send" and p.micro_batches == 4
    assert [s.bubble for s in p.stages] == pytest.approx([3 / 7] * 4, abs=2e-3)
    assert p.bottleneck_stage is None
    comms, marks = light_tables([1.0, 1.0, 3.0, 1.0], 4, [0, 1, 2, 3])
    (p,) = light_pipelines(comms, marks)
    assert p.bottleneck_stage == 2 and p.saving_ms_per_step == pytest.approx(13.5, abs=0.05)


def test_the_light_layer_orders_stages_by_the_peers_they_name() -> None:
    # stages on ranks 2, 0, 3, 1: the chain comes from the peers, stage 0 from its first send
    comms, marks = light_tables([1.0, 1.0, 3.0, 1.0], 4, [2, 0, 3, 1])
    (p,) = light_pipelines(comms, marks)
    assert p.ranks == [2, 0, 3, 1] and p.bottleneck_rank == 3


def test_rows_without_a_timed_wait_give_no_light_pipeline() -> None:
    # NCCL's flight recorder rows (no wait_start_ns): not this analysis's evidence
    comms, marks = light_tables([1.0] * 2, 4, [0, 1])
    untimed = {
        r: Table({**t.cols, "wait_start_ns": np.full(len(t), -1, np.int64)}, t.vocab)
        for r, t in comms.items()
    }
    assert light_pipelines(untimed, marks) == []


def test_a_stage_late_behind_its_pipelines_bottleneck_is_not_the_verdict() -> None:
    from dataclasses import replace

    from rankscope.dashboard.analysis.verdict import RunVerdict, with_pipeline

    comms, marks = light_tables([1.0, 3.0], 4, [2, 3])  # rank 3 computes 3x
    (p,) = light_pipelines(comms, marks)
    assert p.bottleneck_rank == 3
    late2 = RunVerdict(
        headline="Rank 2 is the straggler (time off the CPU ...)", rank=2, cause="unknown",
        pattern="persistent", source="whole_run", agreement="single",
    )  # fmt: skip
    v = with_pipeline(late2, [p], has_gpu=False)
    assert v is not None and v.rank == 3 and v.source == "whole_run"
    assert v.headline.startswith("Pipeline stage 1 (rank 3) is the bottleneck")
    assert v.explanation is not None and v.explanation.startswith(
        "Rank 2 arrives last at its collectives only because it waits for rank 3"
    )
    # a rank outside the pipeline, late on its own: it leads
    other = replace(late2, rank=5, headline="Rank 5 is the straggler")
    assert with_pipeline(other, [p], has_gpu=False) == other


def test_a_loop_of_ranks_is_a_looped_schedule_in_the_order_its_first_stage_sends() -> None:
    from rankscope.dashboard.analysis.pipeline import _chains, _ring_order

    # interleaved 1F1B on 4 ranks: 0 -> 1 -> 2 -> 3 -> 0; a chain and a tree beside it
    adj = {0: {1, 3}, 1: {0, 2}, 2: {1, 3}, 3: {2, 0}, 4: {5}, 5: {4}}
    assert _chains(adj) == [([0, 1, 2, 3], True), ([4, 5], False)]
    assert _chains({0: {1, 2, 3}, 1: {0}, 2: {0}, 3: {0}}) == []  # a tree: no pipeline
    one = np.zeros(2, np.int64)

    def rows(first_peer: int, sends_first: bool) -> dict[str, np.ndarray]:
        return {
            "start": np.array([0, 1]), "end": np.array([1, 2]), "step": one,
            "send": np.array([sends_first, False]), "peer": np.array([first_peer, first_peer]),
        }  # fmt: skip

    # rank 0 sends first, to rank 1: stage order 0, 1, 2, 3
    r = {0: rows(1, True), 1: rows(0, False), 2: rows(1, False), 3: rows(2, False)}
    assert _ring_order([0, 1, 2, 3], r) == [0, 1, 2, 3]
    # the same loop the other way round: rank 0's first send goes to rank 3
    r[0] = rows(3, True)
    assert _ring_order([0, 1, 2, 3], r) == [0, 3, 2, 1]


def test_an_isend_waited_for_after_a_receive_counts_its_wait_once_in_time_order() -> None:
    # Each 10 ms step of rank 0: isend to 1 called at 1 ms and waited for at 6-8 ms, a
    # receive from 1 waited for at 2-5 ms. In call order the waits are out of time order;
    # blocked is 3 + 2 = 5 ms a step, half of it.
    def ms(x: float) -> int:
        return int(x * MS)

    def table(ops: list[tuple[str, int, float, float, float]]) -> Table:
        n = len(ops)
        return Table.build(
            {
                "pg": ["0"] * n, "name": [o[0] for o in ops], "pg_desc": [""] * n,
                "seq": np.arange(n, dtype=np.int64),
                "enqueue_ns": np.array([ms(o[2]) for o in ops], np.int64),
                "start_ns": np.full(n, -1, np.int64),
                "end_ns": np.array([ms(o[4]) for o in ops], np.int64),
                "duration_ms": np.full(n, np.nan), "p2p": np.ones(n, np.int8),
                "peer": np.array([o[1] for o in ops], np.int64),
                "wait_start_ns": np.array([ms(o[3]) for o in ops], np.int64),
            },
            strings=("pg", "name", "pg_desc"),
        )  # fmt: skip

    steps = range(4)
    # (op, peer, called, wait began, wait ended), ms into the step
    per0 = [("send", 1, 1.0, 6.0, 8.0), ("recv", 1, 2.0, 2.0, 5.0)]
    per1 = [("recv", 0, 0.5, 0.5, 1.2), ("send", 0, 2.0, 2.0, 2.1)]

    def at(k: int, ops: list[tuple[str, int, float, float, float]]) -> list[Any]:
        return [(n, peer, 10 * k + a, 10 * k + b, 10 * k + c) for n, peer, a, b, c in ops]

    r0 = [op for k in steps for op in at(k, per0)]
    r1 = [op for k in steps for op in at(k, per1)]
    marks = Table.build(
        {
            "step": np.arange(4, dtype=np.int64),
            "start_ns": np.array([ms(10 * k) for k in steps], np.int64),
            "end_ns": np.array([ms(10 * k + 10) for k in steps], np.int64),
        }
    )
    (p,) = light_pipelines({0: table(r0), 1: table(r1)}, {0: marks, 1: marks})
    assert p.ranks == [0, 1] and (p.first_step, p.last_step) == (1, 3)
    assert p.stages[0].blocked_ms == pytest.approx(5.0) and p.stages[0].bubble == 0.5
    assert p.stages[1].blocked_ms == pytest.approx(0.8)


def test_sends_one_way_only_are_no_pipeline() -> None:
    # rank 1 sends a metric to rank 0 each step beside data parallel training: a chain of
    # two by its peers, but nothing comes back, so no stage of a training pipeline
    comms, marks = light_tables([1.0, 1.0], 4, [0, 1])
    forward_only = {}
    for r, t in comms.items():
        names = t.strings("name")
        keep = names == ("send" if r == 0 else "recv")
        forward_only[r] = t.filter(keep)
    assert light_pipelines(forward_only, marks) == []
    assert len(light_pipelines(comms, marks)) == 1
