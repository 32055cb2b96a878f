"""The one verdict (``analysis.verdict``) from hand-made window and whole-run results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rankscope.dashboard.analysis.diagnosis import Diagnosis
from rankscope.dashboard.analysis.results import RotatingLateness, StepStall, Straggler
from rankscope.dashboard.analysis.verdict import Evidence, queued_ms_at, reconcile, with_contention
from rankscope.dashboard.analysis.wholerun import StepSummary, WholeRun


def straggler(rank: int, cause: str = "unknown", **kw: object) -> Straggler:
    fields: dict[str, object] = {
        "rank": rank,
        "cause": cause,
        "severity": "high",
        "excess_ms_per_step": 20.0,
        "caused_wait_ms_per_step": 20.0,
        "cause_excess_ms_per_step": 20.0,
        "last_arrivals": 10,
        "evidence": "",
        "est_saving_ms_per_step": 20.0,
    }
    return replace(Straggler(**fields), **kw)  # type: ignore[arg-type]


def whole_of(
    excess: np.ndarray, queued: np.ndarray | None = None, step_ms: float = 100.0
) -> WholeRun:
    """A whole run of steps 0..m-1 over ranks 0..n-1 with these per-step excesses."""
    n, m = excess.shape
    return WholeRun(
        diagnosis=Diagnosis([], None, 0.0, [], 1.0, m, excess_ms=excess),
        first_step=0,
        last_step=m - 1,
        n_steps=m,
        steps=[StepSummary(s, step_ms, 0, 0.0, 0.0) for s in range(m)],
        matched_collectives=m,
        unmatched_collectives=0,
        ranks=list(range(n)),
        queued_ms=np.zeros((n, m)) if queued is None else queued,
        steps_index=np.arange(m),
    )


def ev(stragglers: list[Straggler], first: int, last: int, wait: float | None = None) -> Evidence:
    return Evidence(stragglers, None, first, last, wait)


def test_the_same_rank_agrees_the_whole_run_says_when_the_window_says_why() -> None:
    whole = whole_of(np.zeros((2, 40)))
    top = straggler(1, onset_step=15, onset_s=12.5)
    v = reconcile(ev([straggler(1, "cpu_compute")], 20, 25), whole, ev([top], 0, 39))
    assert (v.rank, v.cause, v.agreement, v.source, v.onset_step) == (
        1,
        "cpu_compute",
        "agree",
        "both",
        15,
    )
    assert v.explanation is None
    assert v.headline.startswith("Rank 1 is the straggler from step 15 (~12.5 s in) (more CPU")


def test_a_window_before_the_onset_is_explained_not_a_second_headline() -> None:
    whole = whole_of(np.zeros((2, 40)))
    top = straggler(1, "host_contention", onset_step=15)
    v = reconcile(ev([], 4, 9), whole, ev([top], 0, 39))
    assert (v.rank, v.cause, v.agreement) == (1, "host_contention", "differ")
    assert v.explanation is not None and "steps 4-9" in v.explanation
    assert "does not apply" in v.explanation


def test_a_window_rank_within_the_runs_noise() -> None:
    # Whole run: rank 1 late from step 15. Window (steps 20-25): rank 0, whose whole-run
    # excess at those steps is +2 ms: under max(5% of 100 ms, 5 ms), i.e. noise.
    excess = np.zeros((2, 40))
    excess[0, 20:26] = 2.0
    whole = whole_of(excess)
    v = reconcile(ev([straggler(0)], 20, 25), whole, ev([straggler(1, onset_step=15)], 0, 39))
    assert (v.rank, v.agreement) == (1, "differ")
    assert v.explanation is not None and "within the run's noise" in v.explanation
    assert "+2.0 ms/step" in v.explanation


def test_whole_run_rotation_outranks_the_windows_rank() -> None:
    whole = whole_of(np.zeros((3, 30)))
    rot = RotatingLateness({0: 3, 1: 3, 2: 3}, [StepStall(1, 60.0)], [0], 0.3, 10.0)
    v = reconcile(ev([straggler(2)], 10, 15), whole, Evidence([], rot, 0, 29, 0.3))
    assert (v.rank, v.pattern, v.agreement) == (None, "rotating", "differ")
    assert v.explanation is not None and "moves between ranks" in v.explanation


def test_no_straggler_next_to_a_large_wait_says_why() -> None:
    whole = whole_of(np.zeros((2, 30)))
    v = reconcile(ev([], 10, 15, 0.31), whole, ev([], 0, 29, 0.31))
    assert v.rank is None and "31% of the step" in v.headline
    assert "changes from step to step" in v.headline
    quiet = reconcile(ev([], 10, 15, 0.05), whole, ev([], 0, 29, 0.05))
    assert quiet.headline == "No straggler: no rank holds the others back."


def test_no_straggler_over_fewer_than_three_steps_is_too_few_to_judge() -> None:
    # steps left out as inconsistent leave the whole run one step: no clearing on it
    v = reconcile(None, whole_of(np.zeros((2, 1))), ev([], 0, 0))
    assert v.rank is None and v.headline.startswith(
        "No straggler seen, but over 1 step(s) only: too few to judge"
    )
    three = reconcile(None, whole_of(np.zeros((2, 3))), ev([], 0, 2))
    assert three.headline == "No straggler: no rank holds the others back."


def test_one_source_alone_decides() -> None:
    v = reconcile(ev([straggler(3, "data_loading")], 4, 21), None, None)
    assert (v.rank, v.cause, v.source, v.agreement) == (3, "data_loading", "window", "single")
    periodic = straggler(
        1, pattern="intermittent", period_steps=4, steps=[StepStall(2, 30.0), StepStall(6, 34.0)]
    )
    v = reconcile(None, whole_of(np.zeros((2, 10))), ev([periodic], 0, 9))
    assert "every 4th step" in v.headline and "~32 ms late at each of 2 steps" in v.headline


def test_a_window_straggler_that_was_waiting_for_a_cpu_is_contention() -> None:
    # Window steps 10-12; rank 2's run-queue wait is 18 ms/step beyond the others' median
    # (20 vs 2): at least half of its 20 ms excess, so its cause is host contention.
    queued = np.full((3, 20), 2.0)
    queued[2, 10:13] = 20.0
    whole = whole_of(np.zeros((3, 20)), queued)
    (s,) = with_contention([straggler(2, "cpu_compute")], whole, [10, 11, 12])
    assert (s.cause, s.cause_excess_ms_per_step, s.severity, s.shared_contention) == (
        "host_contention",
        18.0,
        "high",
        False,
    )
    # Every rank queued (16 ms, rank 2 30 ms: 14 beyond them, the others at least half of
    # its wait): the host's load, no alarm.
    queued[:2, 10:13] = 16.0
    queued[2, 10:13] = 30.0
    (s,) = with_contention(
        [straggler(2, "cpu_compute")], whole_of(np.zeros((3, 20)), queued), [10, 11, 12]
    )
    assert (s.cause, s.severity, s.shared_contention) == ("host_contention", "low", True)
    # Mostly its own work (2 ms queued beyond the others of a 20 ms excess): unchanged.
    queued[:] = 2.0
    queued[2, 10:13] = 4.0
    (s,) = with_contention(
        [straggler(2, "cpu_compute")], whole_of(np.zeros((3, 20)), queued), [10, 11, 12]
    )
    assert s.cause == "cpu_compute"
    assert queued_ms_at(whole_of(np.zeros((3, 20)), queued), [10, 12])[2] == 4.0


def test_a_wait_in_point_to_point_receives_reads_as_a_pipeline_not_rotation() -> None:
    # A pipeline traced in a window, no light layer: 40% of the step blocked in recv.
    window = Evidence([], None, 10, 15, 0.40, p2p_share=0.95)
    v = reconcile(window, None, None)
    assert v.rank is None
    assert "40% of the step blocked in point-to-point receives" in v.headline
    assert "changes from step to step" not in v.headline
    collectives = reconcile(Evidence([], None, 10, 15, 0.40, p2p_share=0.1), None, None)
    assert "in collectives" in collectives.headline
