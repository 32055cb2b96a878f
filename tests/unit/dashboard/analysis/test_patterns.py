"""When and how a rank holds the others back, on hand-made light-layer runs.

``run_of(work, runq)``: rank r does ``work[r][s]`` ms before issuing the last
collective of step s, of which ``runq[r][s]`` ms it was runnable but waiting
for a CPU; every rank starts step s together, which lasts the slowest rank's
work + 3 ms. So rank r's excess in step s is ``work[r][s]`` minus the other
ranks' median, and its run-queue wait is exactly ``runq[r][s]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankscope.dashboard.analysis.wholerun import LightRank, light_gaps, whole_run

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def run_of(
    work: np.ndarray, runq: np.ndarray | None = None, cpu: np.ndarray | None = None
) -> list[LightRank]:
    n, m = work.shape
    starts = np.zeros(m, dtype=np.int64)
    t = T0
    for s in range(m):
        starts[s] = t
        t += int((work[:, s].max() + 3.0) * MS)
    ends = np.append(starts[1:], t)
    return [
        LightRank(
            rank=r,
            step=np.arange(m, dtype=np.int64),
            start_ns=starts,
            end_ns=ends,
            data_ns=np.zeros(m, np.int64),
            coll_key=np.arange(m, dtype=np.int64),
            enqueue_ns=starts + (work[r] * MS).astype(np.int64),
            runq_ns=None if runq is None else (runq[r] * MS).astype(np.int64),
            cpu_ns=None if cpu is None else (cpu[r] * MS).astype(np.int64),
        )
        for r in range(n)
    ]


def flat(n: int, m: int, seed: int = 0) -> np.ndarray:
    """10 ms of work per step, +-1 ms of noise."""
    return 10.0 + np.random.default_rng(seed).uniform(-1.0, 1.0, (n, m))


def test_run_queue_wait_is_its_own_component() -> None:
    work = np.array([[10.0, 10.0], [30.0, 12.0]])
    # 50 ms queued in a step whose gap is 12 ms: 38 ms of it came after the rank's last
    # collective (woken, then waiting for a CPU), so its evidence there is the 50 ms
    runq = np.array([[1.0, 0.0], [18.0, 50.0]])
    built = light_gaps(run_of(work, runq))
    assert built is not None
    gaps, comps, _, _ = built
    assert np.allclose(gaps.gap_ms, [[10.0, 10.0], [30.0, 50.0]])
    assert np.allclose(comps["host_contention"], [[1.0, 0.0], [18.0, 50.0]])
    assert np.allclose(comps["other"], [[9.0, 10.0], [12.0, 0.0]])
    assert np.allclose(gaps.wait_ms, [[20.0, 40.0], [0.0, 0.0]])


@pytest.mark.parametrize(("has_gpu", "cause"), [(False, "cpu_compute"), (True, "unknown")])
def test_more_cpu_time_than_the_others_is_cpu_compute_without_a_gpu(
    has_gpu: bool, cause: str
) -> None:
    # Rank 1 of 3 does 3x the batch: 9 ms late a step, and 9 ms more CPU time.
    work = flat(3, 30)
    work[1] += 9.0
    cpu = work * 0.9
    wr = whole_run(run_of(work, np.zeros((3, 30)), cpu), has_gpu=has_gpu)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.cause) == (1, "persistent", cause)
    if not has_gpu:  # ~8.1 ms more CPU time of ~9 ms late
        assert 7.0 < v.cause_breakdown["cpu_compute"] < 9.0, v.cause_breakdown


def test_a_rank_slowed_by_contention_from_step_15_has_cause_and_onset() -> None:
    # Rank 1 of 3: +20 ms a step from step 15 on, 18 of it queued for a CPU.
    work, runq = flat(3, 40), np.zeros((3, 40))
    work[1, 15:] += 20.0
    runq[1, 15:] = 18.0
    wr = whole_run(run_of(work, runq), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.cause, v.onset_step, v.end_step) == (
        1,
        "persistent",
        "host_contention",
        15,
        None,
    )
    assert 19 < v.excess_ms_per_step < 21  # while it holds: the 20 ms, not 20 x 25/40
    assert v.severity == "high" and not v.shared_contention
    # onset in seconds: steps 0-14 last the slowest rank's ~11 ms + 3 ms each
    assert v.onset_s is not None and 0.19 < v.onset_s < 0.22


def test_the_same_extra_time_without_run_queue_wait_is_no_contention() -> None:
    work = flat(3, 40)
    work[1, 15:] += 20.0
    wr = whole_run(run_of(work, np.zeros((3, 40))), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.cause, v.onset_step) == ("unknown", 15)


def test_a_pattern_that_stops_has_an_end() -> None:
    work = flat(2, 40)
    work[0, 10:25] += 30.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.onset_step, v.end_step) == (0, 10, 24)


def test_late_throughout_has_no_onset() -> None:
    work = flat(3, 30)
    work[2] += 15.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.onset_step, v.end_step) == (2, "persistent", None, None)


def test_four_times_slower_every_fourth_step_has_a_period() -> None:
    # Rank 1 of 2 does 40 ms instead of 10 at steps 2, 6, 10, ...: 30 ms late there.
    work = flat(2, 40)
    work[1, 2::4] = 40.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.period_steps) == (1, "intermittent", 4)
    assert [st.step for st in v.steps] == list(range(2, 40, 4))
    # what-if: 10 of 40 steps lose ~30 ms: ~7.5 ms per step
    assert 7.0 < v.est_saving_ms_per_step < 8.0


def test_each_rank_late_at_its_own_phase_is_rotation_not_stragglers() -> None:
    work = flat(3, 36)
    for s in range(36):
        work[s % 3, s] += 60.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None
    assert wr.diagnosis.stragglers == []
    assert wr.diagnosis.rotating is not None
    assert sorted(wr.diagnosis.rotating.counts) == [0, 1, 2]


def test_contention_every_rank_sees_is_no_alarm() -> None:
    # A loaded host: every rank queues 10-30 ms a step; rank 0 a little more, every step.
    rng = np.random.default_rng(3)
    runq = rng.uniform(10.0, 30.0, (3, 40))
    runq[0] += 12.0
    work = flat(3, 40) + runq
    wr = whole_run(run_of(work, runq), has_gpu=False)
    assert wr is not None
    for v in wr.diagnosis.stragglers:
        assert v.cause == "host_contention" and v.shared_contention and v.severity == "low"


def test_balanced_noise_has_no_onset_or_period() -> None:
    for seed in range(5):
        wr = whole_run(run_of(flat(4, 200, seed)), has_gpu=False)
        assert wr is not None and wr.diagnosis.stragglers == [], seed


def test_heavy_tailed_noise_has_no_onset_end_or_period() -> None:
    # Student-t (2 degrees of freedom) noise: the odd 100 ms hiccup on a busy host
    for seed in range(20):
        rng = np.random.default_rng(seed)
        work = np.clip(20.0 + rng.standard_t(2, (3, 45)) * 4.0, 1.0, None)
        wr = whole_run(run_of(work), has_gpu=False)
        assert wr is not None
        for v in wr.diagnosis.stragglers:
            assert (v.onset_step, v.end_step, v.period_steps) == (None, None, None), seed


def test_more_work_hidden_by_the_others_run_queue_waits_is_still_named() -> None:
    # A host short of CPU (an uneven batch beside a busy process, seen on a real run):
    # rank 1 computes 14 ms a step, rank 0 7 ms, but rank 0 then queues ~5 ms for a CPU
    # after each collective that held it, so it reaches the next one at ~12 ms: rank 1
    # is only ~2 ms late, under the 5 ms a persistent straggler needs.
    rng = np.random.default_rng(7)
    cpu = np.vstack([7.0 + rng.uniform(-0.5, 0.5, 30), 14.0 + rng.uniform(-0.5, 0.5, 30)])
    runq = np.vstack([rng.uniform(3.0, 7.0, 30), rng.uniform(0.0, 0.3, 30)])
    work = cpu + runq
    wr = whole_run(run_of(work, runq, cpu), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.cause) == (1, "persistent", "cpu_compute")
    assert 6.0 < v.excess_ms_per_step < 8.0  # the 7 ms of extra work, less rank 0's noise
    assert v.hidden_by_queue_ms is not None and 4.0 < v.hidden_by_queue_ms < 6.0
    assert v.hint is not None and "short of CPU" in v.hint
    # The same run on a GPU: the thread's CPU time says nothing, so nothing is unmasked.
    gpu = whole_run(run_of(work, runq, cpu), has_gpu=True)
    assert gpu is not None and gpu.diagnosis.stragglers == []


@pytest.mark.parametrize("seed", range(6))
def test_balanced_ranks_on_a_host_short_of_cpu_stay_silent(seed: int) -> None:
    # The same work on every rank, each queued 0-10 ms a step at random: no pass names one.
    rng = np.random.default_rng(seed)
    cpu = 7.0 + rng.uniform(-0.7, 0.7, (4, 40))
    runq = rng.uniform(0.0, 10.0, (4, 40))
    wr = whole_run(run_of(cpu + runq, runq, cpu), has_gpu=False)
    assert wr is not None
    assert [v for v in wr.diagnosis.stragglers if v.severity != "low"] == []
    assert all(v.hidden_by_queue_ms is None for v in wr.diagnosis.stragglers)


def test_late_by_time_neither_on_a_cpu_nor_queued_is_off_cpu() -> None:
    # Rank 1 of 3 is 20 ms late a step with the others' CPU time and no run-queue wait:
    # it slept, blocked on I/O or on a lock.
    work = flat(3, 30)
    work[1] += 20.0
    cpu = np.full((3, 30), 8.0)
    wr = whole_run(run_of(work, np.zeros((3, 30)), cpu), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.cause, v.cause_detail) == (1, "unknown", "off_cpu")
    assert v.hint is not None and "py-spy dump" in v.hint
    assert "rankscope attach" in v.hint  # a window of those steps still shows more
    # 8 of its 20 ms on the CPU (a stall half busy, half asleep): not "off the CPU".
    cpu[1] += 8.0
    wr = whole_run(run_of(work, np.zeros((3, 30)), cpu), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert v.cause_detail is None


def test_a_period_on_a_loaded_host_is_found_from_its_many_repeats() -> None:
    # A real run (tests/data/README.md): rank 1 ~18 ms late every 4th step, 10 times,
    # beside two busy loops. Its median beat the other steps' by 18.0 ms, under 4 robust
    # sigmas of theirs (18.4): "No straggler". Ten repeats make 6 standard errors of
    # the two medians' difference (~14.7 ms) the bar.
    from rankscope.dashboard.analysis.wholerun import light_ranks, seq_shifts
    from rankscope.dashboard.ingest.run import load_run

    run = load_run(Path(__file__).parents[3] / "data" / "light_runs" / "period_under_load")
    lights = light_ranks(run.ranks)
    wr = whole_run(lights, has_gpu=False, shifts=seq_shifts(lights))
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.period_steps, v.cause) == (1, "intermittent", 4, "cpu_compute")
    assert [st.step for st in v.steps] == list(range(2, 41, 4))


def test_a_rank_already_a_little_late_has_the_onset_of_its_real_lateness() -> None:
    # A real run (tests/data/README.md): rank 1 ~5 ms late a step before a busy loop
    # shares its CPU from step 15, ~46 ms after. It was "persistent, no onset".
    from rankscope.dashboard.analysis.wholerun import light_ranks, seq_shifts
    from rankscope.dashboard.ingest.run import load_run

    data = Path(__file__).parents[3] / "data" / "light_runs" / "onset_after_mild_lateness"
    lights = light_ranks(load_run(data).ranks)
    wr = whole_run(lights, has_gpu=False, shifts=seq_shifts(lights))
    assert wr is not None
    v = wr.diagnosis.stragglers[0]
    assert (v.rank, v.cause, v.onset_step, v.end_step) == (1, "host_contention", 15, None)


def test_recurring_bursts_are_an_intermittent_straggler_at_those_steps() -> None:
    # Rank 1 is 30 ms late at steps 0-4, 20-24, 40-44 and 60-64 (a checkpoint or an
    # evaluation every 20 steps, 5 steps long): no period (5 phases of 20), no onset,
    # not most steps, under a stall: it used to get no verdict at all.
    work = flat(4, 80)
    bursts = [s for s in range(80) if s % 20 < 5]
    work[1, bursts] = 40.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.severity) == (1, "intermittent", "high")
    assert [st.step for st in v.steps] == bursts
    # what-if: 20 of 80 steps lose ~30 ms: ~7.5 ms per step
    assert 7.0 < v.est_saving_ms_per_step < 8.0


def test_bursts_on_two_ranks_in_turn_are_no_straggler_each() -> None:
    # Rank 1 late at steps 0-4, 40-44; rank 2 at 20-24, 60-64: lateness that moves.
    work = flat(4, 80)
    for s in range(80):
        if s % 20 < 5:
            work[1 if s % 40 < 20 else 2, s] = 40.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None
    assert wr.diagnosis.stragglers == []
    assert wr.diagnosis.rotating is not None


def test_a_short_run_of_late_steps_once_is_no_burst() -> None:
    # One 3-step run of lateness (under a stall): not recurring, no verdict.
    work = flat(4, 80)
    work[1, 30:33] = 40.0
    wr = whole_run(run_of(work), has_gpu=False)
    assert wr is not None and wr.diagnosis.stragglers == []


def test_a_stall_half_cpu_half_sleep_points_at_a_window_whatever_its_cause() -> None:
    # A real CI run (tests/data/README.md): rank 2's 300 ms stall, half a busy loop and
    # half a sleep, read as cpu_compute by a hair (0.956 against 0.938 ms/step unknown),
    # and only an unknown cause had the hint to capture a window of those steps.
    from rankscope.dashboard.analysis.wholerun import light_ranks, seq_shifts
    from rankscope.dashboard.ingest.run import load_run

    data = Path(__file__).parents[3] / "data" / "light_runs" / "stall_half_cpu"
    lights = light_ranks(load_run(data).ranks)
    wr = whole_run(lights, has_gpu=False, shifts=seq_shifts(lights))
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern) == (2, "intermittent")
    assert [st.step for st in v.steps] == [120, 241]
    assert v.hint is not None and "rankscope attach" in v.hint, (v.cause, v.hint)
