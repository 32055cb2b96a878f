"""The step rate in a rank's heartbeat: training only, never the start-up before step 1.

attach picks its first step from this rate; a rate through a start-up pause
(here 10 s at step 0, then 50 steps a second) said 2 steps/s and the ranks ran
past the chosen step before they read the request.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rankscope.profiler import control, rundir
from rankscope.profiler.control import ControlChannel
from rankscope.profiler.faults import Faults


def _rates(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    beats: list[tuple[float, int]],
    first_step_end: tuple[float, int] | None = None,
) -> list[float | None]:
    clock = {"ns": 0, "step": 0}
    monkeypatch.setattr(control.time, "time_ns", lambda: clock["ns"])
    ch = ControlChannel(
        tmp_path, 0, 1, Faults("rank 0"), start_ns=0, current_step=lambda: clock["step"],
        capturing=lambda: False, offer=lambda r: None,
    )  # fmt: skip
    ch.open()
    if first_step_end is not None:  # as the recorder says when it takes the first step
        ch.training_started(int(first_step_end[0] * 1e9), first_step_end[1])
    out = []
    for t_s, step in beats:
        clock["ns"], clock["step"] = int(t_s * 1e9), step
        ch.beat()
        out.append(rundir.read_heartbeats(tmp_path)[0].get("steps_per_s"))
    return out


def test_the_rate_skips_the_start_up_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 s of start-up at step 0, then 50 steps/s from t=10 s
    beats = [(1.0, 0), (5.0, 0), (10.0, 0), (11.0, 50), (12.0, 100), (13.0, 150)]
    rates = _rates(tmp_path, monkeypatch, beats)
    assert rates[3] is None  # one beat since training started: no rate yet
    assert rates[4] == pytest.approx(50.0) and rates[5] == pytest.approx(50.0)


def test_a_rank_still_starting_reports_zero_steps_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = _rates(tmp_path, monkeypatch, [(1.0, 0), (2.0, 0)])
    assert rates[-1] == 0.0  # no step yet: attach waits for a positive rate


def test_a_short_run_has_a_rate_from_its_first_finished_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # step 0 ended at t=10.5 s (step 1 began); at the next beat, t=11 s, step 26:
    # 25 steps in 0.5 s. The start-up beats before still do not count.
    rates = _rates(tmp_path, monkeypatch, [(1.0, 0), (10.0, 0), (11.0, 26)], (10.5, 1))
    assert rates[-1] == pytest.approx(50.0)
