"""Helpers for the collector's tests: start real jobs, read what they wrote.

``straggler_run(out_dir, launcher)`` runs the 2-rank gloo job in
``collector_ddp_job.py`` (rank 1 sleeps in ``data_loading``) through
``rankscope run`` and returns the run directory; review-side tests can reuse it
(``SLOW_RANK`` is the rank to expect as the straggler). ``no_leftover_threads``
is an autouse-able fixture that fails a test leaving a rankscope thread alive.
``stepping_collector(run, **kwargs)`` is a started ``Collector`` whose tiny model
takes a step about every 10 ms on a thread, stopped on leaving the block.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

JOBS = Path(__file__).resolve().parent
TESTS = JOBS.parent
REPO = TESTS.parent
DDP_JOB = JOBS / "collector_ddp_job.py"
API_JOB = JOBS / "collector_api_job.py"
SLOW_RANK = 1
SLEEP_MS = 40.0


def job_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # rankscope must be importable by the jobs even without `pip install -e .`
    # (src/ holds only the `rankscope` namespace root).
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def rankscope(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script as ``python -m rankscope.dashboard.cli ARGS``.

    In a session of its own: on a timeout the whole process group (torchrun and
    its workers) is killed, so a hung job never outlives its test.
    """
    cmd = [sys.executable, "-m", "rankscope.dashboard.cli", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or job_env(),
        cwd=cwd or REPO,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def launcher(kind: str, nproc: int) -> list[str]:
    if kind == "torchrun":
        exe = Path(sys.executable).with_name("torchrun")
        return [str(exe), "--standalone", f"--nproc-per-node={nproc}"]
    if kind == "module":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
        ]
    if kind == "python":
        return [sys.executable]
    raise ValueError(kind)


def straggler_run(
    out_dir: Path, kind: str = "module", nproc: int = 2, steps: int = 12, profile: str | None = None
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A finished run directory of the straggler job, and how ``rankscope run`` ended."""
    args = ["run", "--out", str(out_dir), "--nvml-period-ms", "50"]
    if profile is not None:
        args += ["--profile", profile]
    cmd = [
        *launcher(kind, nproc),
        str(DDP_JOB),
        "--steps",
        str(steps),
        "--slow-rank",
        str(SLOW_RANK),
        "--sleep-ms",
        str(SLEEP_MS),
    ]
    proc = rankscope(*args, "--", *cmd, timeout=180)
    return out_dir, proc


def read_trace(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def profiler_step_spans(trace: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """``ProfilerStep#N`` -> (start_ns, end_ns) in CLOCK_REALTIME, as the review side reads it."""
    base = int(trace.get("baseTimeNanoseconds", 0))
    spans: dict[int, tuple[int, int]] = {}
    for ev in trace["traceEvents"]:
        m = re.fullmatch(r"ProfilerStep#(\d+)", str(ev.get("name", "")))
        if m and ev.get("ph") == "X":
            start = base + round(float(ev["ts"]) * 1000)
            spans[int(m.group(1))] = (start, start + round(float(ev["dur"]) * 1000))
    return spans


def range_total_ms(trace: dict[str, Any], name: str) -> float:
    return (
        sum(
            float(ev.get("dur", 0))
            for ev in trace["traceEvents"]
            if ev.get("name") == name and ev.get("ph") == "X"
        )
        / 1000.0
    )


def rankscope_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rankscope")]


@pytest.fixture
def no_leftover_threads() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5
    while rankscope_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = rankscope_threads()
    assert not left, f"test left rankscope threads running: {left}"


def report_of(run: Path, fmt: str) -> str:
    """``rankscope report RUN --format FMT``'s output; a failing report fails the test."""
    out = subprocess.run(
        [sys.executable, "-m", "rankscope", "report", str(run), "--format", fmt],
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@contextlib.contextmanager
def stepping_collector(run: Path, **kwargs: Any) -> Iterator[Any]:
    """A started ``Collector(run, **kwargs)`` stepping a tiny model on a thread about
    every 10 ms, in this process; the thread and the collector stop on leaving."""
    torch = pytest.importorskip("torch")
    from rankscope import Collector

    stop = threading.Event()
    col = Collector(run, **kwargs)
    col.start()

    def loop() -> None:
        model = torch.nn.Linear(8, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        while not stop.is_set():
            time.sleep(0.01)
            model(torch.randn(4, 8)).square().mean().backward()
            opt.step()
            col.step()

    t = threading.Thread(target=loop, name="test-training")
    t.start()
    try:
        yield col
    finally:
        stop.set()
        t.join(10)
        col.stop()
