"""The whole-run verdict from NCCL's GPU times (``duration_ms``), on a hand-made run.

Two ranks, 12 steps, one all_reduce per step. Both CPUs issue it 5-5.2 ms into
the step (a GPU job's CPU runs ahead: the enqueue times look balanced), but rank
1's GPU reaches it 10 ms after rank 0's: rank 0's GPU time for it is 12 ms (10
waiting + 2 transfer), rank 1's 2 ms. So per instance transfer = 2 ms, rank 0
waits 10 ms, rank 1 arrived last; rank 1's evidence is the step's smaller
enqueue gap + 10 ms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rankscope.dashboard.analysis.wholerun import (
    LightRank,
    absent_reason,
    gpu_split,
    light_gaps,
    light_ranks,
    whole_run,
)
from rankscope.dashboard.ingest.run import load_run
from rankscope.profiler import rundir

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
STEPS = 12
STEP_MS = 20.0
ENQUEUE_MS = np.array([[5.0 + 0.1 * (s % 3) for s in range(STEPS)],
                       [5.0 + 0.1 * ((s + 1) % 3) for s in range(STEPS)]])  # fmt: skip
GPU_MS = (12.0, 2.0)  # rank 0 waits 10 ms for rank 1, then 2 ms of transfer


def nccl_run(durations: np.ndarray | None) -> list[LightRank]:
    """The run above; ``durations[r][s]`` is rank r's GPU time (NaN: not timed), None: gloo."""
    starts = T0 + np.arange(STEPS, dtype=np.int64) * int(STEP_MS * MS)
    return [
        LightRank(
            rank=r,
            step=np.arange(STEPS, dtype=np.int64),
            start_ns=starts,
            end_ns=starts + int(STEP_MS * MS),
            data_ns=np.full(STEPS, -1, np.int64),
            coll_key=np.arange(1, STEPS + 1, dtype=np.int64),
            enqueue_ns=starts + (ENQUEUE_MS[r] * MS).astype(np.int64),
            duration_ms=np.zeros(0) if durations is None else durations[r],
        )
        for r in range(2)
    ]


def timed() -> np.ndarray:
    return np.array([[GPU_MS[0]] * STEPS, [GPU_MS[1]] * STEPS])


def test_nccl_gpu_times_split_each_instance_into_transfer_and_wait() -> None:
    split = gpu_split(nccl_run(timed()))
    assert split is not None
    assert split.instances == STEPS
    assert split.transfer_ms == pytest.approx(2.0 * STEPS)
    assert split.wait_ms == {0: pytest.approx(10.0 * STEPS), 1: 0.0}
    assert split.last_arrivals == {0: 0, 1: STEPS}


def test_the_gpu_arrival_is_the_evidence_where_every_rank_timed_the_step() -> None:
    built = light_gaps(nccl_run(timed()))
    assert built is not None
    gaps, _, _, _ = built
    base = ENQUEUE_MS.min(axis=0)  # the step's smaller enqueue gap
    assert np.allclose(gaps.gap_ms, [base, base + 10.0])
    assert np.allclose(gaps.wait_ms, [[10.0] * STEPS, [0.0] * STEPS])


def test_a_rank_late_on_its_gpu_is_the_straggler_though_its_cpu_is_on_time() -> None:
    wr = whole_run(nccl_run(timed()), has_gpu=True)
    assert wr is not None and wr.gpu_steps == STEPS
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern) == (1, "persistent")
    assert v.excess_ms_per_step == pytest.approx(10.0, abs=0.01)
    assert {s.late_rank for s in wr.steps} == {1}
    assert all(s.excess_ms == pytest.approx(10.0) for s in wr.steps)
    # The same run without GPU times (gloo, or NCCL without timing): the CPUs agree.
    cpu = whole_run(nccl_run(None), has_gpu=True)
    assert cpu is not None and cpu.gpu_steps == 0 and cpu.gpu_split is None
    assert cpu.diagnosis.stragglers == []


def test_a_step_without_every_ranks_gpu_time_keeps_the_enqueue_evidence() -> None:
    durations = timed()
    durations[1, 3] = np.nan  # rank 1's instance of step 3 was never retired
    built = light_gaps(nccl_run(durations))
    assert built is not None
    gaps, _, _, _ = built
    assert np.allclose(gaps.gap_ms[:, 3], ENQUEUE_MS[:, 3])
    assert gaps.gap_ms[1, 4] == pytest.approx(ENQUEUE_MS[:, 4].min() + 10.0)
    wr = whole_run(nccl_run(durations), has_gpu=True)
    assert wr is not None and wr.gpu_steps == STEPS - 1
    assert wr.gpu_split is not None and wr.gpu_split.instances == STEPS - 1


def test_ingest_carries_nccl_gpu_times_into_the_whole_run(tmp_path: Path) -> None:
    """The same run as files: ``collectives.jsonl`` rows as the collector writes them."""
    rundir.write_json_atomic(
        tmp_path / rundir.RUN_MANIFEST,
        {"schema": rundir.RUN_SCHEMA, "world_size": 2, "start_ns": T0, "command": [], "config": {}},
    )
    durations = timed()
    durations[1, 0] = np.nan  # not retired: null in the file, NaN after ingest
    for lr in nccl_run(durations):
        r = lr.rank
        rundir.write_json_atomic(
            rundir.rank_meta_path(tmp_path, r),
            {"schema": rundir.RANK_SCHEMA, "rank": r, "world_size": 2, "start_ns": T0},
        )
        steps = [
            {"step": int(s), "start_ns": int(a), "end_ns": int(b)}
            for s, a, b in zip(lr.step, lr.start_ns, lr.end_ns, strict=True)
        ]
        rundir.steps_path(tmp_path, r).write_text(
            json.dumps({"schema": rundir.STEPS_SCHEMA, "rank": r})
            + "\n"
            + "".join(json.dumps(x) + "\n" for x in steps)
        )
        rows = [
            {"seq": int(k), "pg": "0", "pg_desc": "default_pg", "name": "all_reduce",
             "p2p": False, "bytes": 4, "enqueue_ns": int(t), "start_ns": int(t) + MS,
             "end_ns": int(t) + 2 * MS, "state": "completed",
             "duration_ms": None if np.isnan(d) else float(d)}
            for k, t, d in zip(lr.coll_key, lr.enqueue_ns, lr.duration_ms, strict=True)
        ]  # fmt: skip
        rundir.collectives_path(tmp_path, r).write_text("".join(json.dumps(x) + "\n" for x in rows))
    run = load_run(tmp_path)
    comms = run.ranks[1].light_comms
    assert np.isnan(comms["duration_ms"][0]) and comms["duration_ms"][1] == GPU_MS[1]
    assert comms["start_ns"][0] == comms["enqueue_ns"][0] + MS
    lights = light_ranks(run.ranks)
    wr = whole_run(lights, has_gpu=True)
    assert wr is not None and wr.gpu_steps == STEPS - 1
    assert wr.gpu_split is not None and wr.gpu_split.wait_ms[0] == pytest.approx(10.0 * 11)
    assert wr.diagnosis.stragglers[0].rank == 1


def test_the_report_can_say_why_there_is_no_whole_run(tmp_path: Path) -> None:
    rundir.write_json_atomic(
        tmp_path / rundir.RUN_MANIFEST,
        {"schema": rundir.RUN_SCHEMA, "world_size": 1, "start_ns": T0, "command": [], "config": {}},
    )
    rundir.write_json_atomic(
        rundir.rank_meta_path(tmp_path, 0),
        {
            "schema": rundir.RANK_SCHEMA,
            "rank": 0,
            "world_size": 1,
            "start_ns": T0,
            "collectives": {"absent": "no process group (torch.distributed was never initialised)"},
        },
    )
    rundir.steps_path(tmp_path, 0).write_text(
        json.dumps({"schema": rundir.STEPS_SCHEMA, "rank": 0})
        + "\n"
        + json.dumps({"step": 0, "start_ns": T0, "end_ns": T0 + MS})
        + "\n"
    )
    run = load_run(tmp_path)
    assert absent_reason(run.ranks) == (
        "the whole-run verdict compares ranks; this run has 1"
        " (rank 0: no process group (torch.distributed was never initialised))"
    )


def test_no_collective_inside_a_step_is_said_with_the_pipeline_hint(tmp_path: Path) -> None:
    # A gloo pipeline: its send/recv are not in the flight recorder, so each rank's
    # collective log holds only the barrier after its last step.
    rundir.write_json_atomic(
        tmp_path / rundir.RUN_MANIFEST,
        {"schema": rundir.RUN_SCHEMA, "world_size": 2, "start_ns": T0, "command": [], "config": {}},
    )
    for r in range(2):
        rundir.write_json_atomic(
            rundir.rank_meta_path(tmp_path, r),
            {"schema": rundir.RANK_SCHEMA, "rank": r, "world_size": 2, "start_ns": T0},
        )
        steps = [{"step": s, "start_ns": T0 + s * 10 * MS, "end_ns": T0 + (s + 1) * 10 * MS}
                 for s in range(5)]  # fmt: skip
        rundir.steps_path(tmp_path, r).write_text(
            "\n".join(json.dumps(x) for x in [{"schema": rundir.STEPS_SCHEMA, "rank": r}, *steps])
            + "\n"
        )
        barrier = {"seq": 1, "pg": "0", "pg_desc": "default_pg", "name": "barrier",
                   "p2p": False, "bytes": 0, "enqueue_ns": T0 + 60 * MS, "start_ns": None,
                   "end_ns": None, "duration_ms": None, "state": "scheduled"}  # fmt: skip
        rundir.collectives_path(tmp_path, r).write_text(
            json.dumps({"schema": rundir.COLLECTIVES_SCHEMA, "rank": r})
            + "\n"
            + json.dumps(barrier)
            + "\n"
        )
    run = load_run(tmp_path)
    assert len(light_ranks(run.ranks)) == 2
    why = absent_reason(run.ranks)
    assert why is not None and why.startswith(
        "the ranks' collective logs hold no collective inside a step (only barrier,"
    )
    assert "capture a trace window" in why
