"""A window's edges (start, stop, export) carry no verdict (hand-made light runs).

Two or three ranks start every step together; rank r works ``work[r][s]`` ms
before its last collective of step s, so its evidence in step s is exactly that.
A profiler window's stop lands 500 ms on rank 1 in step 6 (the rank with the
larger trace): without its ``capture`` label that step names rank 1 a straggler.
The recorded steps ("window") are judged as usual, and labelled.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rankscope.dashboard.analysis.wholerun import (
    LightRank,
    capture_labels,
    capture_spans,
    whole_run,
)
from rankscope.profiler.rundir import CAPTURE_PHASES

MS = 1_000_000
T0 = 1_700_000_000_000_000_000
START, WINDOW, STOP, EXPORT = (CAPTURE_PHASES.index(p) + 1 for p in CAPTURE_PHASES)


def light_run(work: np.ndarray, data: np.ndarray, capture: np.ndarray) -> list[LightRank]:
    n, m = work.shape
    starts = T0 + np.concatenate([[0], np.cumsum((work.max(axis=0) + 3.0) * MS)])[:m]
    starts = starts.astype(np.int64)
    ends = np.append(starts[1:], starts[-1] + int((work[:, -1].max() + 3.0) * MS))
    return [
        LightRank(
            rank=r,
            step=np.arange(m, dtype=np.int64),
            start_ns=starts,
            end_ns=ends,
            data_ns=(data[r] * MS).astype(np.int64),
            coll_key=np.arange(m, dtype=np.int64),
            enqueue_ns=starts + (work[r] * MS).astype(np.int64),
            capture=capture[r].astype(np.int64),
        )
        for r in range(n)
    ]


def window_run() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 steps of 10-11 ms; a window starts at step 3, records 4-5, stops at 6, exports
    beside 7. The stop stalls rank 1 by 500 ms, 480 of it in the next batch's wait."""
    work = 10.0 + np.tile([0.0, 1.0], (2, 10))
    data = np.full((2, 20), 1.0)
    work[1, 6] += 500.0
    data[1, 6] += 480.0
    capture = np.zeros((2, 20), dtype=np.int64)
    capture[:, 3] = START
    capture[:, 4:6] = WINDOW
    capture[:, 6] = STOP
    capture[:, 7] = EXPORT
    return work, data, capture


def test_without_the_label_the_window_stop_names_a_data_loading_straggler() -> None:
    """The failure the label prevents: old files (no ``capture``) read as before."""
    work, data, capture = window_run()
    wr = whole_run(light_run(work, data, np.zeros_like(capture)), has_gpu=True)
    assert wr is not None and wr.capture_steps == 0
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, v.cause) == (1, "intermittent", "data_loading")
    assert [s.step for s in v.steps] == [6]
    stop = wr.steps[6]  # its data_ms is rank 1's own wait: 1 ms as always + 480
    assert (stop.late_rank, stop.excess_ms, stop.data_ms) == (1, 500.0, 481.0)


def test_a_windows_edges_are_left_out_and_every_capture_step_labelled() -> None:
    work, data, capture = window_run()
    wr = whole_run(light_run(work, data, capture), has_gpu=True)
    assert wr is not None
    assert wr.diagnosis.stragglers == [] and wr.diagnosis.rotating is None
    assert wr.capture_steps == 3 and wr.diagnosis.n_steps == 17  # steps 3, 6, 7 left out
    assert wr.n_steps == 20 and len(wr.steps) == 20  # every shared step keeps its row
    labels = {s.step: s.capture for s in wr.steps if s.capture}
    assert labels == {3: "start", 4: "window", 5: "window", 6: "stop", 7: "export"}
    stop = wr.steps[6]
    assert (stop.late_rank, stop.excess_ms, stop.data_ms) == (-1, 0.0, 0.0)
    assert stop.step_ms == 513.0  # what the step took stays: 510 ms of work + 3
    excess = wr.diagnosis.excess_ms
    assert excess is not None and excess.shape == (2, 20)
    assert np.isnan(excess[:, [3, 6, 7]]).all()
    assert not np.isnan(excess[:, [0, 1, 2, 4, 5, 8]]).any()
    assert wr.steps[4].late_rank in (0, 1) and wr.steps[4].capture == "window"
    assert capture_spans(wr.steps) == [(3, 3), (6, 7)]  # what the page shades


def test_a_stall_inside_the_window_is_still_found() -> None:
    """What attach and auto-capture aim a window at: its recorded steps stay judged."""
    work, data, capture = window_run()
    work[0, 5] += 300.0  # rank 0 stalls in the last recorded step
    wr = whole_run(light_run(work, data, capture), has_gpu=True)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern, [s.step for s in v.steps]) == (0, "intermittent", [5])
    assert (wr.steps[5].late_rank, wr.steps[5].excess_ms) == (0, 300.0)


def test_a_real_straggler_is_still_found_beside_a_window() -> None:
    """Rank 2 is 20 ms late at every step; the stop at step 6 leaves 19 of 20 to judge."""
    work = 10.0 + np.tile([0.0, 1.0], (3, 10))
    work[2] += 20.0
    data = np.full((3, 20), 1.0)
    capture = np.zeros((3, 20), dtype=np.int64)
    capture[:, 3:6] = WINDOW
    capture[:, 6] = STOP
    work[0, 6] += 700.0  # the stop, on rank 0 this time
    wr = whole_run(light_run(work, data, capture), has_gpu=True)
    assert wr is not None
    (v,) = wr.diagnosis.stragglers
    assert (v.rank, v.pattern) == (2, "persistent")
    assert v.excess_ms_per_step == 20.0
    assert wr.steps[6].capture == "stop" and wr.steps[6].late_rank == -1


def test_the_costliest_phase_names_a_step_the_ranks_disagree_on() -> None:
    work = np.full((2, 4), 10.0)
    capture = np.array([[0, WINDOW, EXPORT, EXPORT], [0, STOP, WINDOW, 0]])
    ranks = light_run(work, np.zeros((2, 4)), capture)
    assert capture_labels(ranks, np.arange(4)) == ["", "stop", "export", "export"]
    # A rank without the field (an older collector) counts as untouched.
    ranks[1] = dataclasses.replace(ranks[1], capture=np.zeros(0, np.int64))
    assert capture_labels(ranks, np.arange(4)) == ["", "window", "export", "export"]


def test_a_run_that_is_all_window_edges_has_no_whole_run_verdict() -> None:
    work = np.full((2, 3), 10.0)
    capture = np.array([[START, STOP, EXPORT], [START, WINDOW, EXPORT]])
    assert whole_run(light_run(work, np.zeros((2, 3)), capture), has_gpu=False) is None
