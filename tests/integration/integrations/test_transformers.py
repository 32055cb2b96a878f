"""``rankscope.integrations.transformers.RankscopeCallback`` in a real ``transformers.Trainer``.

Two ranks on CPU (gloo) under torchrun, rank 1's forward 40 ms slower: the run
directory holds each rank's step log (one step per optimizer step), the profiler
window, and ``rankscope report`` names rank 1; rank 0 logs the report to an MLflow
file store at the end. ``rankscope attach`` captures a window of a running Trainer.
Under ``rankscope run`` the callback defers to its collector.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import (
    JOBS,
    SLOW_RANK,
    job_env,
    launcher,
    profiler_step_spans,
    rankscope,
    read_trace,
    report_of,
)

from rankscope.profiler import rundir

pytest.importorskip("transformers", reason="transformers is not installed")
pytest.importorskip("accelerate", reason="accelerate is not installed (Trainer needs it)")

JOB = JOBS / "hf_trainer_job.py"
STEPS = 12

pytestmark = [pytest.mark.slow, needs_torch]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # The flight recorder's ring (the whole-run verdict) must be asked for before the
    # process group starts: in the job's environment, as rankscope run does.
    return job_env(TORCH_FR_BUFFER_SIZE="2000", HF_HOME=str(tmp_path / "hf"), **extra)


def test_trainer_callback_on_two_ranks_names_the_slow_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    store = (tmp_path / "mlruns").as_uri()
    args = ["--steps", str(STEPS), "--slow-rank", str(SLOW_RANK), "--profile", "3-5"]
    proc = subprocess.run(
        [*launcher("module", 2), str(JOB), str(run), *args, "--export-to", "mlflow"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(tmp_path, MLFLOW_TRACKING_URI=store),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    manifest = rundir.read_run_manifest(run)
    assert manifest["world_size"] == 2 and sorted(manifest["ranks"]) == [0, 1]
    assert manifest["config"]["launcher"] == "transformers callback"
    assert manifest["config"]["steps_source"] == "manual"
    for rank in (0, 1):
        # One step per optimizer step: step 0 began at the first on_step_begin.
        assert [s["step"] for s in rundir.read_steps(run, rank)] == list(range(STEPS))
        assert manifest["ranks"][rank]["steps_source"] == "manual"
        assert manifest["ranks"][rank]["clock_offset_method"] == "c10d-store"
    assert [w.file for w in rundir.capture_windows(run) if w.rank == 1] == [
        "rank1.step3-5.pt.trace.json.gz"
    ]

    report = json.loads(report_of(run, "json"))
    assert report["stragglers"][0]["rank"] == SLOW_RANK
    assert [s["rank"] for s in report["whole_run"]["stragglers"]] == [SLOW_RANK]

    # rank 0 logged the report to MLflow once every rank had stopped
    assert "logged MLflow run" in proc.stderr
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("rankscope")
    assert experiment is not None
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.tags["rankscope.stragglers"] == str(SLOW_RANK)
    assert logged.data.params["rankscope.world_size"] == "2"


def test_under_rankscope_run_the_callback_defers(tmp_path: Path) -> None:
    """One set of files, rankscope run's; the callback's steps still mark them."""
    run, theirs = tmp_path / "run", tmp_path / "theirs"
    proc = rankscope(
        "run", "--out", str(run), "--profile", "off", "--",
        *launcher("module", 2), str(JOB), str(theirs), "--steps", "6", "--accumulate", "2",
        timeout=180, env=_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not theirs.exists()
    assert "defers to the one already collecting" in proc.stderr
    for rank in (0, 1):
        # Not counted from the optimizer (which would miss the first step): the callback's.
        assert [s["step"] for s in rundir.read_steps(run, rank)] == list(range(6))


def test_attach_captures_a_window_of_a_running_trainer(tmp_path: Path) -> None:
    run, stop_file = tmp_path / "run", tmp_path / "stop"
    args = ["--steps", "100000", "--step-ms", "15", "--stop-file", str(stop_file)]
    job = subprocess.Popen(
        [*launcher("module", 2), str(JOB), str(run), *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            beats = rundir.read_heartbeats(run)
            if len(beats) == 2 and all(h["step"] >= 5 for h in beats.values()):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the job never reached step 5 on both ranks")
        attach = rankscope("attach", str(run), "--steps", "3", timeout=90)
        assert attach.returncode == 0, attach.stdout + attach.stderr
        assert "on 2 of 2 rank(s)" in attach.stdout
        (first,) = {a["first_step"] for a in rundir.read_acks(run).values()}
        for rank in (0, 1):
            trace = read_trace(rundir.trace_path(run, rank, first, first + 2))
            assert sorted(profiler_step_spans(trace)) == [first, first + 1, first + 2]
    finally:
        stop_file.touch()
        out, _ = job.communicate(timeout=60)
    assert job.returncode == 0, out[-3000:]
