"""``CallbackCollector``, what both framework callbacks share: steps, one run, the export."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
from conftest import needs_torch

from rankscope.integrations._core import CallbackCollector
from rankscope.profiler import rundir
from rankscope.profiler.errors import RankscopeError

QUIET = {"nvml_period_ms": 0, "control_period_s": 0, "collectives": False}


def _callback(run: Path, export_to: tuple[str, ...] = ()) -> CallbackCollector:
    return CallbackCollector("test", run, "off", export_to, None, dict(QUIET))


def test_a_bad_setting_fails_where_the_callback_is_made(tmp_path: Path) -> None:
    with pytest.raises(RankscopeError, match="'neptune' is not a tracker"):
        _callback(tmp_path, ("neptune",))
    with pytest.raises(RankscopeError, match="nvml_period_ms"):
        CallbackCollector("test", tmp_path, "off", (), None, {"nvml_period_ms": float("nan")})


@needs_torch
def test_steps_begin_at_the_first_step_and_one_run_is_collected(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cb = _callback(run)
    cb.step_end()  # before training began: nothing
    cb.train_begin()
    assert cb.collector.current_step == 0 and not rundir.read_steps(run, 0)
    for _ in range(3):
        cb.step_begin()
        cb.step_end()
    cb.train_end()
    cb.train_end()  # idempotent
    assert [s["step"] for s in rundir.read_steps(run, 0)] == [0, 1, 2]
    cb.train_begin()  # a second train() with the same callback: said, not collected
    cb.step_begin()
    cb.step_end()
    assert [s["step"] for s in rundir.read_steps(run, 0)] == [0, 1, 2]
    assert "training began again: not collected" in capfd.readouterr().err


@needs_torch
def test_a_failed_export_is_one_line_and_training_ends_normally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mlflow")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the MLflow store should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (blocker / "mlruns").as_uri())
    cb = _callback(tmp_path / "run", ("mlflow",))
    cb.train_begin()
    for _ in range(4):
        cb.step_begin()
        cb.step_end()
    cb.train_end()  # never raises
    err = capfd.readouterr().err
    assert "rankscope: test: rankscope export: MLflow at" in err
    assert "Traceback" not in err


def test_a_callback_not_started_yet_can_be_pickled(tmp_path: Path) -> None:
    """Lightning's ddp_spawn pickles the Trainer's callbacks into each process."""
    cb = CallbackCollector("test", tmp_path / "run", "3-5", ("mlflow",), "p", dict(QUIET))
    copy = pickle.loads(pickle.dumps(cb))
    assert copy.collector is not cb.collector and not copy.collector._started
    assert copy.collector.run_dir == cb.collector.run_dir
    assert copy.collector.plan.spec == cb.collector.plan.spec
    assert (copy.export_to, copy.export_project) == (("mlflow",), "p")


def test_the_lightning_callback_can_be_pickled(tmp_path: Path) -> None:
    pytest.importorskip("lightning", reason="lightning is not installed")
    from rankscope.integrations.lightning import RankscopeCallback

    copy = pickle.loads(pickle.dumps(RankscopeCallback(tmp_path / "run", **QUIET)))
    assert copy.collector.run_dir == tmp_path / "run"


@needs_torch
def test_rank_zero_waits_for_this_runs_manifests_not_an_earlier_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # rank 1's manifest from an earlier job in the same directory: it ended long ago
    rundir.write_json_atomic(rundir.rank_meta_path(run, 1), {"rank": 1, "end_ns": 1})
    cb = _callback(run)
    cb.train_begin()
    cb.train_end()
    assert cb._wait_for_ranks(2, timeout_s=0.3) == [1]
    rundir.write_json_atomic(rundir.rank_meta_path(run, 1), {"rank": 1, "end_ns": time.time_ns()})
    assert cb._wait_for_ranks(2, timeout_s=0.3) == []
