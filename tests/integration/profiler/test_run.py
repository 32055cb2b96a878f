"""``rankscope run`` end to end: real jobs and launchers, a script that never imports rankscope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import (
    DDP_JOB,
    SLEEP_MS,
    SLOW_RANK,
    job_env,
    launcher,
    profiler_step_spans,
    range_total_ms,
    rankscope,
    read_trace,
    straggler_run,
)

from rankscope.profiler import autostart, rundir
from rankscope.profiler.commands.run import bootstrap_env


@pytest.fixture(scope="module")
def straggler(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """2 ranks under `python -m torch.distributed.run`, rank 1 slow in data_loading."""
    return straggler_run(tmp_path_factory.mktemp("straggler") / "run", kind="module")


ALIGN_NS = 2_000_000 + int(sys.getswitchinterval() * 1e9)


@pytest.mark.slow
@needs_torch
def test_every_rank_leaves_trace_telemetry_steps_and_manifest(straggler) -> None:
    run, proc = straggler
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rankscope run:" in proc.stderr and "2 rank(s), 2 trace file(s)" in proc.stderr
    manifest = rundir.read_run_manifest(run)
    assert manifest["schema"] == rundir.RUN_SCHEMA
    assert manifest["world_size"] == 2 and manifest["exit_code"] == 0
    assert manifest["command"][-6:] == ["--steps", "12", "--slow-rank", "1", "--sleep-ms", "40.0"]
    assert manifest["config"]["launcher"] == "rankscope run"
    # Only the two workers collected: torchrun's launcher process wrote nothing.
    assert sorted(manifest["ranks"]) == [0, 1]
    assert {p.name.split(".")[0] for p in run.glob("rank*")} == {"rank0", "rank1"}
    for rank in (0, 1):
        meta = manifest["ranks"][rank]
        assert meta["schema"] == rundir.RANK_SCHEMA
        assert (meta["rank"], meta["local_rank"], meta["world_size"]) == (rank, rank, 2)
        assert meta["steps_source"] == "optimizer"
        assert (
            isinstance(meta["clock_offset_ns"], int) and meta["clock_offset_method"] == "c10d-store"
        )
        assert meta["torch_version"].startswith("2.")
        # 12 optimizer steps: the first opens step 0, so 11 steps are timed.
        steps = rundir.read_steps(run, rank)
        assert [s["step"] for s in steps] == list(range(11))
        telemetry = rundir.read_telemetry(run, rank)
        assert len(telemetry) >= 3 and {t["source"] for t in telemetry} == {"host"}
        assert all("rss_b" in t and "host_cpu_pct" in t for t in telemetry)
        (window,) = meta["windows"]
        assert (window["first_step"], window["last_step"]) == (5, 7)  # the default window
        trace = read_trace(run / window["file"])
        assert trace["distributedInfo"]["rank"] == rank
        spans = profiler_step_spans(trace)
        assert sorted(spans) == [5, 6, 7]
        by_step = {s["step"]: s for s in steps}
        for n, (start, end) in spans.items():
            # Between the collector's timestamp and torch's, the training thread may wait
            # up to one GIL switch interval (5 ms) for the collector's background threads
            # (recorder, progress watch) on the 2 busy cores of two ranks: 2 ms + that.
            assert abs(start - by_step[n]["start_ns"]) < ALIGN_NS
            assert abs(end - by_step[n]["end_ns"]) < ALIGN_NS
        # Steps end when the optimizer step returns: torch's Optimizer.step range
        # nests inside its ProfilerStep instead of straddling two of them.
        base = int(trace["baseTimeNanoseconds"])
        opt_ranges = [
            (base + round(e["ts"] * 1000), base + round((e["ts"] + e["dur"]) * 1000))
            for e in trace["traceEvents"]
            if str(e.get("name", "")).startswith("Optimizer.step#") and e.get("ph") == "X"
        ]
        assert len(opt_ranges) == 3
        for a, b in opt_ranges:
            assert any(s <= a and b <= e for s, e in spans.values()), (a, b, spans)


@pytest.mark.slow
@needs_torch
def test_slowed_rank_is_visible_in_its_trace(straggler) -> None:
    run, _ = straggler
    loading = {
        r: range_total_ms(read_trace(rundir.trace_path(run, r, 5, 7)), "data_loading")
        for r in (0, 1)
    }
    assert loading[SLOW_RANK] >= 3 * SLEEP_MS
    assert loading[1 - SLOW_RANK] < SLEEP_MS


@pytest.mark.slow
@needs_torch
def test_report_names_the_slowed_rank(straggler) -> None:
    """Extends to the review side once `rankscope report` exists."""
    pytest.importorskip("rankscope.dashboard.commands.report")
    run, _ = straggler
    proc = rankscope("report", str(run), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["stragglers"][0]["rank"] == SLOW_RANK
    assert report["stragglers"][0]["cause"] == "data_loading"


@pytest.mark.slow
@needs_torch
def test_torchrun_console_script_with_profile_off(tmp_path: Path) -> None:
    run, proc = straggler_run(tmp_path / "run", kind="torchrun", steps=6, profile="off")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = rundir.read_run_manifest(run)
    assert sorted(manifest["ranks"]) == [0, 1]
    assert not list(run.glob("*.pt.trace.json.gz"))
    assert all(len(rundir.read_steps(run, r)) == 5 for r in (0, 1))


@pytest.mark.slow
@needs_torch
def test_plain_python_collects_as_rank0_and_passes_the_exit_code(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "2-3",
        "--",
        *launcher("python", 1),
        str(DDP_JOB),
        "--steps",
        "6",
        "--exit-code",
        "3",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    manifest = rundir.read_run_manifest(run)
    assert manifest["world_size"] == 1 and manifest["exit_code"] == 3
    assert sorted(manifest["ranks"]) == [0]
    assert manifest["ranks"][0]["clock_offset_ns"] == 0
    assert [w.file for w in rundir.capture_windows(run)] == ["rank0.step2-3.pt.trace.json.gz"]


@pytest.mark.slow
@needs_torch
def test_collector_in_code_defers_to_rankscope_run(tmp_path: Path) -> None:
    """A script that uses the Collector API, launched by `rankscope run`: one set of files."""
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, torch\n"
        "from rankscope import Collector\n"
        "model = torch.nn.Linear(8, 2)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        f"with Collector({str(tmp_path / 'theirs')!r}, profile_steps='1-2') as col:\n"
        "    for _ in range(6):\n"
        "        model(torch.randn(4, 8)).sum().backward()\n"
        "        opt.step()\n"
        "        col.step()\n"
    )
    run = tmp_path / "run"
    proc = rankscope(
        "run", "--out", str(run), "--profile", "off", "--", sys.executable, str(script)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "theirs").exists()
    meta = rundir.read_run_manifest(run)["ranks"][0]
    assert meta["steps_source"] == "manual" and meta["windows"] == []
    # Manual steps from the start: step 0 began when the Collector started it.
    assert [s["step"] for s in rundir.read_steps(run, 0)] == list(range(6))
    assert "defers to the one already collecting" in proc.stderr


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["run", "--out", str(tmp_path / "a")], "no command to run"),
        (
            ["run", "--out", str(tmp_path / "b"), "--profile", "7-5", "--", "true"],
            "end before start",
        ),
        (["run", "--out", str(tmp_path / "c"), "--", "no-such-command-xyz"], "command not found"),
    ]
    for args, message in cases:
        proc = rankscope(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_existing_run_needs_overwrite(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rundir.write_json_atomic(run / rundir.RUN_MANIFEST, {"schema": rundir.RUN_SCHEMA})
    (run / "rank0.steps.jsonl").write_text("{}\n")
    proc = rankscope("run", "--out", str(run), "--", "true")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    proc = rankscope("run", "--out", str(run), "--overwrite", "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert not (run / "rank0.steps.jsonl").exists()
    assert rundir.read_json(run / rundir.RUN_MANIFEST)["exit_code"] == 0
    assert "no rank collected" in proc.stderr


def _bootstrapped(
    tmp_path: Path, code: str, extra_path: str = ""
) -> subprocess.CompletedProcess[str]:
    env = job_env()
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path, env["PYTHONPATH"]])
    env = bootstrap_env(tmp_path / "run", {"profile_steps": None}, ["test"], base=env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_bootstrap_never_imports_torch_in_a_process_without_torch(tmp_path: Path) -> None:
    proc = _bootstrapped(
        tmp_path, "import sys, json; print('torch' in sys.modules, 'rankscope' in sys.modules)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
    assert not (tmp_path / "run").exists()


@needs_torch
def test_bootstrap_arms_on_torch_import_but_writes_nothing_without_training(tmp_path: Path) -> None:
    code = (
        "import torch, sys; from rankscope.profiler import autostart; "
        "print(autostart._armed is not None, autostart._armed.collector is None)"
    )
    proc = _bootstrapped(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
    assert not (tmp_path / "run").exists()  # launchers and workers of workers leave nothing


def test_bootstrap_chains_a_shadowed_sitecustomize(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIR_SITE'] = 'ran'\n")
    proc = _bootstrapped(tmp_path, "import os; print(os.environ.get('THEIR_SITE'))", str(theirs))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ran"


def test_launcher_processes_are_recognised() -> None:
    assert autostart.is_launcher(["/venv/bin/torchrun", "--nproc-per-node", "2", "train.py"])
    assert autostart.is_launcher(["python", "-m", "torch.distributed.run", "train.py"])
    assert autostart.is_launcher(["python", "-m", "torch.distributed.launch", "train.py"])
    assert autostart.is_launcher(["python3", "/venv/bin/torchrun", "train.py"])
    assert not autostart.is_launcher(["python", "-u", "train.py", "--local-rank=0"])
    assert not autostart.is_launcher(["python", "-m", "mypkg.train"])
