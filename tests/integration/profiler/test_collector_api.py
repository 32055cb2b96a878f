"""The Collector API on real torch: steps, windows, manifests; failures never stop training."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.fake_nvml import FakeNvml
from jobs.collector_jobs import (  # noqa: F401 - fixture
    API_JOB,
    job_env,
    launcher,
    no_leftover_threads,
    profiler_step_spans,
    range_total_ms,
    read_trace,
)

from rankscope import Collector
from rankscope.profiler import rundir

torch = pytest.importorskip("torch", reason="torch is not installed")

pytestmark = pytest.mark.usefixtures("no_leftover_threads")


ALIGN_NS = 1_000_000 + int(sys.getswitchinterval() * 1e9)


def train(col: Collector | None, steps: int, sleep_s: float = 0.0, call_step: bool = True) -> int:
    """A tiny single-process training loop; returns the steps it completed."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    done = 0
    for _ in range(steps):
        with torch.profiler.record_function("data_loading"):
            time.sleep(sleep_s)
            x = torch.randn(16, 32)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if col is not None and call_step:
            col.step()
        done += 1
    return done


def test_manual_steps_window_and_manifest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, profile_steps="2-4", nvml=FakeNvml(), nvml_period_ms=20) as col:
        train(col, 8, sleep_s=0.005)
        assert col.current_step == 8
    steps = rundir.read_steps(run, 0)
    assert [s["step"] for s in steps] == list(range(8))
    assert all(s["end_ns"] > s["start_ns"] for s in steps)
    assert all(a["end_ns"] == b["start_ns"] for a, b in itertools.pairwise(steps))

    meta = rundir.read_json(rundir.rank_meta_path(run, 0))
    assert meta["schema"] == rundir.RANK_SCHEMA and meta["rank"] == 0
    assert meta["clock_offset_ns"] == 0 and meta["steps_recorded"] == 8
    assert meta["device_name"] == "NVIDIA H100 80GB HBM3"  # from the (fake) NVML device
    assert meta["windows"][0]["first_step"] == 2 and meta["windows"][0]["last_step"] == 4
    run_manifest = rundir.read_json(run / rundir.RUN_MANIFEST)
    assert run_manifest["schema"] == rundir.RUN_SCHEMA and run_manifest["world_size"] == 1
    assert [w.file for w in rundir.capture_windows(run)] == ["rank0.step2-4.pt.trace.json.gz"]

    trace = read_trace(rundir.trace_path(run, 0, 2, 4))
    spans = profiler_step_spans(trace)
    assert sorted(spans) == [2, 3, 4]
    by_step = {s["step"]: s for s in steps}
    for n, (start, end) in spans.items():
        # The profiler's step N is the collector's step N, to within a millisecond.
        # plus one GIL switch interval: the collector's background threads (recorder,
        # progress watch) may hold the GIL between its timestamp and torch's
        assert abs(start - by_step[n]["start_ns"]) < ALIGN_NS
        assert abs(end - by_step[n]["end_ns"]) < ALIGN_NS
    assert range_total_ms(trace, "data_loading") >= 3 * 5

    telemetry = rundir.read_telemetry(run, 0)
    assert len(telemetry) >= 3
    assert all(t["source"] == "nvml" and t["power_mw"] == 412_000 for t in telemetry)
    assert not rundir.log_path(run, 0).exists()  # nothing went wrong


def test_optimizer_hook_counts_steps_without_step_calls(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, steps_from_optimizer=True, nvml_period_ms=0) as col:
        train(col, 6, call_step=False)
    # The first optimizer step opens step 0: six optimizer steps are five steps.
    assert [s["step"] for s in rundir.read_steps(run, 0)] == [0, 1, 2, 3, 4]
    assert not rundir.telemetry_path(run, 0).exists()


def test_manual_steps_take_over_from_the_optimizer_hook(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, steps_from_optimizer=True, nvml_period_ms=0) as col:
        train(col, 6, call_step=True)
    steps = rundir.read_steps(run, 0)
    # One boundary per iteration, not two: the hook's first one stands for the first step() call.
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4]
    assert min(s["end_ns"] - s["start_ns"] for s in steps) > 10_000


def test_second_collector_in_a_process_defers(tmp_path: Path) -> None:
    with Collector(tmp_path / "a", nvml_period_ms=0) as outer:
        with Collector(tmp_path / "b", nvml_period_ms=0) as inner:
            train(inner, 3)
        assert outer.current_step == 3
    assert len(rundir.read_steps(tmp_path / "a", 0)) == 3
    assert not (tmp_path / "b").exists()


def test_a_deferring_collector_on_optimizer_steps_leaves_the_owner_counting(
    tmp_path: Path,
) -> None:
    """It takes over at its first step() call (a framework callback's way), not at start."""
    with Collector(tmp_path / "a", steps_from_optimizer=True, nvml_period_ms=0) as outer:
        with Collector(tmp_path / "b", steps_from_optimizer=True, nvml_period_ms=0) as inner:
            train(inner, 4, call_step=False)
            assert outer.current_step == 3  # still the optimizer's: 4 steps, step 0 at the 1st
            inner.step()  # takes over; the boundary the last optimizer step marked stands for it
            assert outer.current_step == 3
            inner.step()
        assert outer.current_step == 4
    assert not (tmp_path / "b").exists()


def test_unwritable_run_directory_does_not_stop_training(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory's parent should be")
    with Collector(
        blocker / "run", profile_steps="1-2", nvml=FakeNvml(), flush_period_s=0.05
    ) as col:
        assert train(col, 5) == 5
    err = capfd.readouterr().err
    assert "run directory" in err and err.count("rank 0] run directory") == 1
    assert blocker.is_file()


def test_nvml_failing_mid_run_does_not_stop_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    nvml = FakeNvml(fail_after=3)
    with Collector(run, nvml=nvml, nvml_period_ms=10, flush_period_s=0.05) as col:
        assert train(col, 6, sleep_s=0.02) == 6
    telemetry = rundir.read_telemetry(run, 0)
    assert telemetry[0]["gpu_util_pct"] == 87
    assert set(telemetry[-1]) == {"ts_ns", "source"}  # the GPU went away; samples stay timed
    log = rundir.log_path(run, 0).read_text()
    assert "telemetry utilization: disabled" in log
    assert len(rundir.read_steps(run, 0)) == 6


def test_failing_export_does_not_stop_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # A directory where the trace must go: the export's final rename fails.
    rundir.trace_path(run, 0, 1, 2).mkdir(parents=True)
    with Collector(run, profile_steps="1-2", nvml_period_ms=0) as col:
        assert train(col, 5) == 5
    meta = rundir.read_json(rundir.rank_meta_path(run, 0))
    assert meta["windows"] == []
    assert "export steps 1-2" in rundir.log_path(run, 0).read_text()
    assert len(rundir.read_steps(run, 0)) == 5
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left


def test_stop_inside_a_window_exports_the_finished_steps(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, profile_steps="2-9", nvml_period_ms=0) as col:
        train(col, 5)  # steps 0-4 finish; the collector stops during step 5
    (window,) = rundir.read_json(rundir.rank_meta_path(run, 0))["windows"]
    assert (window["first_step"], window["last_step"]) == (2, 4)
    spans = profiler_step_spans(read_trace(run / window["file"]))
    assert {2, 3, 4} <= set(spans)


def test_flush_makes_steps_visible_while_running(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, nvml_period_ms=0, flush_period_s=60) as col:
        train(col, 3)
        col.flush()
        assert len(rundir.read_steps(run, 0)) == 3  # a live run can be followed
        train(col, 1)


@pytest.mark.slow
def test_api_job_on_two_ranks(tmp_path: Path) -> None:
    run = tmp_path / "api"
    proc = subprocess.run(
        [*launcher("module", 2), str(API_JOB), str(run), "--slow-rank", "1", "--profile", "3-5"],
        capture_output=True,
        text=True,
        timeout=180,
        env=job_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = rundir.read_run_manifest(run)
    assert manifest["world_size"] == 2 and sorted(manifest["ranks"]) == [0, 1]
    for rank in (0, 1):
        meta = manifest["ranks"][rank]
        assert meta["clock_offset_method"] == "c10d-store"
        assert abs(meta["clock_offset_ns"]) < 50_000_000  # same host: tiny
        assert [s["step"] for s in rundir.read_steps(run, rank)] == list(range(10))
        assert rundir.read_telemetry(run, rank)[0]["source"] == "host"
        trace = read_trace(rundir.trace_path(run, rank, 3, 5))
        assert trace["distributedInfo"]["rank"] == rank
        assert sorted(profiler_step_spans(trace)) == [3, 4, 5]
    slow = read_trace(rundir.trace_path(run, 1, 3, 5))
    fast = read_trace(rundir.trace_path(run, 0, 3, 5))
    assert range_total_ms(slow, "data_loading") > range_total_ms(fast, "data_loading") + 90


def test_importing_profiler_is_cheap() -> None:
    code = (
        "import sys, profiler, rankscope.profiler.rundir, rankscope.profiler.commands; "
        "heavy = ('torch', 'streamlit', 'dashboard', 'pynvml', 'numpy'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
