"""The job and its channel: signals reach the job, attach requests can be withdrawn,
hostile control files and directories are refused.

Real processes: ``rankscope run -- python job.py`` for signals, a live ``Collector``
(a training loop on a thread) answering ``rankscope attach`` for the channel.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_torch, rankscope_cmd
from jobs.collector_jobs import stepping_collector

from rankscope.profiler import rundir
from rankscope.profiler.commands.attach import answer_for
from rankscope.profiler.control import AttachRequest

SLEEPER = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_DFL)  # die of it, as a job without a handler does
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(60)
"""


def rankscope(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rankscope_cmd(), *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) no longer runs.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# ---------------------------------------------------------------------- signals


@pytest.mark.parametrize("signame", ["SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT"])
def test_signal_to_rankscope_run_reaches_the_job_and_is_recorded(
    signame: str, tmp_path: Path
) -> None:
    signum = getattr(signal, signame)
    job = tmp_path / "job.py"
    job.write_text(SLEEPER)
    pid_file = tmp_path / "job.pid"
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [*rankscope_cmd(), "run", "--out", str(run), "--profile", "off",
         "--nvml-period-ms", "0", "--", sys.executable, str(job), str(pid_file)],
        stderr=subprocess.PIPE, text=True, preexec_fn=_no_core_dumps, cwd=tmp_path,
    )  # fmt: skip
    try:
        job_pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))
        launcher.send_signal(signum)
        _, err = launcher.communicate(timeout=15)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "Traceback" not in err, err
    assert launcher.returncode == 128 + signum, err
    wait_for(lambda: not alive(job_pid), timeout=5)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["exit_code"] == 128 + signum
    assert manifest["end_ns"] >= manifest["start_ns"]


def test_overwrite_removes_partial_files_of_a_killed_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "control").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"schema": rundir.RUN_SCHEMA, "world_size": 1}))
    leftovers = [
        run / ".rank0.step5-7.pt.trace.json.gz.4242.json",  # export, killed mid-way
        run / ".rank0.step5-7.pt.trace.json.gz.4242.tmp",
        run / ".rank0.meta.json.ab12cd.tmp",  # ENOSPC during an atomic write
        run / ".run.json.xyz.tmp",
        run / "control" / ".rank0.heartbeat.json.4242.1.tmp",
    ]
    for p in leftovers:
        p.write_text("{partial")
    proc = rankscope(
        "run", "--out", str(run), "--overwrite", "--profile", "off", "--nvml-period-ms", "0",
        "--", sys.executable, "-c", "pass",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [p for p in leftovers if p.exists()] == []


# ---------------------------------------------------------------------- forged control files


def heartbeat(rank: int, forged: dict[str, Any] | None = None) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "schema": rundir.HEARTBEAT_SCHEMA, "rank": rank, "world_size": 2, "host": "elsewhere",
        "pid": 1, "start_ns": now, "ts_ns": now, "step": 5, "steps_per_s": 2.0,
        "state": "running", **(forged or {}),
    }  # fmt: skip


@pytest.mark.parametrize(
    "forged",
    [
        {"ts_ns": "yesterday"},
        {"ts_ns": 10**30},
        {"world_size": 10**12},
        {"step": -3},
        {"steps_per_s": "fast"},
        {"rank": 10**12},
        {"pid": "1; rm -rf /"},
    ],
    ids=lambda f: next(iter(f)) + "=" + str(next(iter(f.values())))[:12],
)
def test_forged_heartbeat_is_listed_not_a_traceback(forged: dict[str, Any], tmp_path: Path) -> None:
    control = tmp_path / "run" / "control"
    control.mkdir(parents=True)
    (control / "rank0.heartbeat.json").write_text(json.dumps(heartbeat(0)))
    (control / "rank1.heartbeat.json").write_text(json.dumps(heartbeat(1, forged)))
    (control / "rank1.ack.json").write_text('{"schema": "rankscope.attach-ack/1", "history": 7}')
    proc = rankscope("attach", str(tmp_path / "run"), "--status")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "ignored control/rank1.heartbeat.json:" in proc.stdout, proc.stdout


def test_only_forged_heartbeats_exit_1_with_one_line(tmp_path: Path) -> None:
    control = tmp_path / "run" / "control"
    control.mkdir(parents=True)
    (control / "rank0.heartbeat.json").write_text(json.dumps(heartbeat(0, {"ts_ns": "x"})))
    os.mkfifo(control / "rank1.heartbeat.json")
    proc = rankscope("attach", str(tmp_path / "run"), "--status")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "ts_ns" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [["--status"], ["--steps", "2"], ["--cancel"]])
def test_symlinked_control_dir_is_refused(args: list[str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "rank0.heartbeat.json").write_text(json.dumps(heartbeat(0)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "control").symlink_to(elsewhere)
    proc = rankscope("attach", str(run), *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "symlink" in proc.stderr, proc.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["rank0.heartbeat.json"]


# ---------------------------------------------------------------------- a live Collector


@pytest.fixture
def live_run(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """A Collector stepping a tiny model on a thread about every 10 ms."""
    run = tmp_path / "run"
    with stepping_collector(
        run, nvml_period_ms=0, control_period_s=0.05, profile_steps=None
    ) as col:
        wait_for(lambda: col.current_step >= 3 and rundir.read_heartbeats(run))
        yield run, col


def ack_state(run: Path, request_id: str) -> str | None:
    answer = answer_for(rundir.read_acks(run).get(0), request_id)
    return None if answer is None else str(answer["state"])


@needs_torch
def test_attach_cancel_frees_the_channel(live_run: tuple[Path, Any]) -> None:
    run, col = live_run
    far = AttachRequest("far", col.current_step + 50_000, 2, time.time_ns())
    rundir.write_json_atomic(rundir.request_path(run), far.to_json())
    wait_for(lambda: ack_state(run, "far") == "accepted")
    # The channel is held: a new attach is refused while "far" waits.
    busy = rankscope("attach", str(run), "--steps", "1", "--timeout", "5")
    assert busy.returncode == 1 and "in progress" in busy.stderr, busy.stderr

    cancel = rankscope("attach", str(run), "--cancel")
    assert cancel.returncode == 0, cancel.stderr
    assert "removed request far" in cancel.stderr
    assert "cancelled" in cancel.stdout, cancel.stdout
    assert ack_state(run, "far") == "cancelled"
    assert not rundir.request_path(run).exists()

    # Free again: the next request is accepted, and runs to its end.
    soon = AttachRequest("soon", col.current_step + 100, 1, time.time_ns())
    rundir.write_json_atomic(rundir.request_path(run), soon.to_json())
    wait_for(lambda: ack_state(run, "soon") == "done", timeout=15)

    nothing = rankscope("attach", str(run), "--cancel")
    assert nothing.returncode == 1 and "nothing to cancel" in nothing.stderr, nothing.stderr


@needs_torch
def test_far_future_start_step_is_refused(live_run: tuple[Path, Any]) -> None:
    run, col = live_run
    proc = rankscope("attach", str(run), "--steps", "1", "--start-step", str(10**9))
    assert proc.returncode == 2 and "steps ahead" in proc.stderr, proc.stderr
    assert not rundir.request_path(run).exists()
    # Written by hand, the collector refuses it (and the channel stays free).
    req = AttachRequest(
        "toofar", col.current_step + rundir.MAX_ATTACH_LEAD_STEPS + 10, 1, time.time_ns()
    )
    rundir.write_json_atomic(rundir.request_path(run), req.to_json())
    wait_for(lambda: ack_state(run, "toofar") == "refused")
    assert "steps ahead" in rundir.read_acks(run)[0]["reason"]


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(b))


@needs_torch
def test_control_dir_swapped_for_a_symlink_stops_attach(
    live_run: tuple[Path, Any], tmp_path: Path
) -> None:
    run, col = live_run
    outside = tmp_path / "outside"
    outside.mkdir()
    # Swapped in one step (renameat2 RENAME_EXCHANGE): a rename then a symlink
    # leaves a moment with no control/ at all, which the collector reports as
    # "gone" instead, as it should.
    (run / "control.new").symlink_to(outside)
    _exchange(run / "control.new", run / "control")
    time.sleep(1.5)  # a few polls and at least one heartbeat period
    col.flush()
    assert list(outside.iterdir()) == []
    assert "control/ was replaced" in (run / "rank0.log").read_text()
    assert col.current_step > 3  # training went on


@needs_torch
def test_ignored_requests_are_logged_at_a_bounded_rate(live_run: tuple[Path, Any]) -> None:
    run, col = live_run
    for i in range(40):
        rundir.write_json_atomic(rundir.request_path(run), {"schema": "nope", "n": i})
        time.sleep(0.06)  # about one poll each
    col.flush()
    log = (run / "rank0.log").read_text().splitlines()
    ignored = [line for line in log if "ignored" in line]
    assert 1 <= len(ignored) <= 10, log


@needs_torch
@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_request_owned_by_another_user_is_ignored(live_run: tuple[Path, Any]) -> None:
    run, col = live_run
    req = AttachRequest("foreign", col.current_step + 100, 1, time.time_ns())
    staged = run / "foreign.json"  # given away before it lands: the channel never sees it ours
    staged.write_text(json.dumps(req.to_json()))
    os.chown(staged, 54321, -1)
    os.replace(staged, rundir.request_path(run))
    log = rundir.log_path(run, 0)
    wait_for(lambda: log.exists() and "owned by uid 54321" in log.read_text(), timeout=10)
    assert ack_state(run, "foreign") is None  # never accepted: ignored with its reason
