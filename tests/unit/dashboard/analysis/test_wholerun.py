"""The whole-run diagnosis from light-layer records alone, on hand-made runs.

``light_run(work)``: rank r does ``work[r][s]`` ms before issuing the last
collective of step s; every rank starts step s together (synchronous
training), and the step ends 3 ms after the last rank issued it. So rank r's
evidence in step s is exactly ``work[r][s]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from rankscope.dashboard.analysis.wholerun import LightRank, light_gaps, whole_run

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def light_run(
    work: np.ndarray,
    data: np.ndarray | None = None,
    throttled: np.ndarray | None = None,
    skew_ns: int = 0,
) -> list[LightRank]:
    n, m = work.shape
    starts = np.zeros(m, dtype=np.int64)
    t = T0
    for s in range(m):
        starts[s] = t
        t += int((work[:, s].max() + 3.0) * MS)
    ends = np.append(starts[1:], t)
    out = []
    for r in range(n):
        clock = r * skew_ns  # each rank's own clock is off by this much
        enq = starts + (work[r] * MS).astype(np.int64)
        tel_ts = starts + MS
        out.append(
            LightRank(
                rank=r,
                step=np.arange(m, dtype=np.int64),
                start_ns=starts + clock,
                end_ns=ends + clock,
                data_ns=(
                    np.full(m, -1, np.int64) if data is None else (data[r] * MS).astype(np.int64)
                ),
                coll_key=np.arange(m, dtype=np.int64),
                enqueue_ns=enq + clock,
                tel_ts_ns=tel_ts + clock,
                throttle=(
                    np.zeros(m, np.int64)
                    if throttled is None
                    else np.where(throttled[r], 4, 1).astype(np.int64)  # bit 0: idle only
                ),
            )
        )
    return out


def noisy(n: int, m: int, seed: int = 0) -> np.ndarray:
    return 10.0 + np.random.default_rng(seed).uniform(-1.0, 1.0, (n, m))


def test_the_evidence_is_each_ranks_own_work_whatever_its_clock() -> None:
    work = np.array([[10.0, 12.0], [30.0, 11.0]])
    built = light_gaps(light_run(work, skew_ns=7_000 * MS))  # 7 s of clock skew
    assert built is not None
    gaps, comps, step_ms, (matched, unmatched) = built
    assert np.allclose(gaps.gap_ms, work)
    assert np.allclose(step_ms, [33.0, 15.0])
    assert (matched, unmatched) == (2, 0)
    assert np.allclose(comps["other"], work)  # no data wait recorded, no throttling


def test_two_stalls_in_a_long_run_are_intermittent_at_their_steps() -> None:
    work = noisy(3, 320)
    work[1, 120] += 300.0
    work[1, 241] += 280.0
    wr = whole_run(light_run(work), has_gpu=False)
    assert wr is not None and (wr.first_step, wr.last_step, wr.n_steps) == (0, 319, 320)
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.cause) == (1, "intermittent", "unknown")
    assert [s.step for s in v.steps] == [120, 241]
    assert [round(s.lag_ms, -1) for s in v.steps] == [300.0, 280.0]
    assert v.hint is not None and "rankscope attach" in v.hint
    assert wr.steps[120].late_rank == 1 and wr.steps[120].excess_ms > 290


def test_a_persistent_data_loading_straggler_from_data_wait() -> None:
    work = noisy(4, 50)
    data = np.full((4, 50), 2.0)
    work[2] += 20.0
    data[2] += 20.0  # its extra time is DataLoader wait
    wr = whole_run(light_run(work, data), has_gpu=True)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.cause) == (2, "persistent", "data_loading")
    assert v.cause_breakdown["data_loading"] == pytest.approx(20.0, abs=0.5)
    assert v.est_saving_ms_per_step == pytest.approx(20.0, abs=1.5)


def test_a_throttled_gpu_is_hardware() -> None:
    work = noisy(3, 40)
    work[0] += 15.0
    throttled = np.zeros((3, 40), dtype=bool)
    throttled[0] = True
    wr = whole_run(light_run(work, throttled=throttled), has_gpu=True)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.cause) == (0, "hardware")


def test_balanced_light_runs_raise_nothing() -> None:
    for seed in range(5):
        wr = whole_run(light_run(noisy(4, 300, seed)), has_gpu=False)
        assert wr is not None
        assert wr.diagnosis.stragglers == [] and wr.diagnosis.rotating is None, seed


def test_one_rank_alone_gives_no_whole_run() -> None:
    assert whole_run(light_run(noisy(1, 10)), has_gpu=False) is None
