"""Prometheus metrics of a real 2-rank gloo job: ``rankscope run --metrics-port`` and
``rankscope metrics RUN --port``, scraped over localhost and parsed with
prometheus_client's parser.

Assertions hold whatever the machine's load: a scraped last step and its duration
are checked against that step's line in the rank's steps log (the exporter reads
only complete lines, so the line is there), never against a time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs.collector_jobs import JOBS, job_env, launcher, rankscope

from rankscope.profiler import exporter, rundir

pytest.importorskip("torch", reason="torch is not installed")
parser = pytest.importorskip("prometheus_client.parser")

Samples = dict[tuple[str, str], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> tuple[Samples, dict[str, str]]:
    """(name, rank) -> value, and rank -> host label, from one scrape of /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values: Samples = {}
    hosts: dict[str, str] = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name
            if name == "rankscope_rank_state":
                if not s.value:
                    continue
                name += ":" + s.labels["rankscope_rank_state"]
            rank = s.labels.get("rank", "")
            values[(name, rank)] = s.value
            if rank:
                hosts[rank] = s.labels["host"]
    return values, hosts


def scrape_until(port: int, ready: object, timeout: float = 60) -> tuple[Samples, dict[str, str]]:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            got = scrape(port)
        except OSError as e:  # not listening yet
            last = e
        else:
            if ready(got[0]):  # type: ignore[operator]
                return got
        time.sleep(0.3)
    raise AssertionError(f"no such scrape in {timeout} s (last error: {last})")


def both_ranks_stepped(m: Samples) -> bool:
    return all(m.get(("rankscope_last_step", r), -1) >= 2 for r in ("0", "1"))


def check_against_logs(run: Path, m: Samples) -> None:
    """Each rank's scraped last step is a line of its steps log, with the scraped times."""
    for rank in (0, 1):
        last = int(m[("rankscope_last_step", str(rank))])
        rows = {s["step"]: s for s in rundir.read_steps(run, rank)}
        row = rows[last]
        step_s = (row["end_ns"] - row["start_ns"]) / 1e9
        assert m[("rankscope_step_seconds", str(rank))] == pytest.approx(step_s, abs=1e-9)
        if "data_ns" in row:
            wait = m[("rankscope_data_wait_seconds", str(rank))]
            assert wait == pytest.approx(row["data_ns"] / 1e9, abs=1e-9)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.slow
def test_live_job_is_scraped_while_it_runs(tmp_path: Path) -> None:
    run, stop_file, port = tmp_path / "exp", tmp_path / "stop", free_port()
    cmd = [
        sys.executable, "-m", "rankscope.dashboard.cli", "run", "--out", str(run),
        "--profile", "off", "--nvml-period-ms", "200", "--metrics-port", str(port), "--",
        *launcher("module", 2), str(JOBS / "attach_job.py"),
        "--stop-file", str(stop_file), "--step-ms", "15", "--max-steps", "2000",
    ]  # fmt: skip
    job = subprocess.Popen(
        cmd, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        m, hosts = scrape_until(port, both_ranks_stepped)
        check_against_logs(run, m)
        metas = rundir.read_run_manifest(run)["ranks"]
        assert hosts == {"0": metas[0]["host"], "1": metas[1]["host"]}
        assert m[("rankscope_job_finished", "")] == 0
        # a later scrape never goes back
        m2, _ = scrape_until(port, both_ranks_stepped)
        for r in ("0", "1"):
            assert m2[("rankscope_last_step", r)] >= m[("rankscope_last_step", r)]
            assert m2[("rankscope_rank_state:running", r)] == 1
        lags = [m2.get(("rankscope_collective_lag_seconds", r)) for r in ("0", "1")]
        if None not in lags:  # the first arrival of an instance has no lag
            assert min(lags) == 0.0 and max(lags) >= 0.0  # type: ignore[type-var]
        stop_file.touch()
        out, _ = job.communicate(timeout=90)
    finally:
        stop_file.touch()
        stop(job)
    assert job.returncode == 0, out[-3000:]
    assert ": warning:" not in out, out[-3000:]
    # the launcher ended its exporter: the port is free again
    assert exporter.port_problem(port) is None


@pytest.mark.slow
def test_port_in_use_is_a_warning_and_the_metrics_command_serves_the_run(
    tmp_path: Path, held_port: int
) -> None:
    run = tmp_path / "exp"
    proc = rankscope(
        "run", "--out", str(run), "--profile", "off", "--nvml-period-ms", "200",
        "--metrics-port", str(held_port), "--",
        *launcher("module", 2), str(JOBS / "light_layer_job.py"), "--steps", "6",
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ": warning:" in ln]
    assert warnings == [
        f"rankscope run: warning: metrics port {held_port}: Address already in use;"
        " no metrics served (the job runs on)"
    ], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    # `rankscope metrics RUN --port P` on the finished run
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rankscope.dashboard.cli", "metrics", str(run),
         "--port", str(port), "--addr", "127.0.0.1"],
        env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        m, _ = scrape_until(port, both_ranks_stepped, timeout=30)
    finally:
        stop(server)
    check_against_logs(run, m)
    for rank in (0, 1):
        last = max(s["step"] for s in rundir.read_steps(run, rank))
        assert m[("rankscope_last_step", str(rank))] == last
        assert m[("rankscope_rank_state:stopped", str(rank))] == 1
    assert m[("rankscope_job_finished", "")] == 1
    assert m[("rankscope_job_exit_code", "")] == 0
    assert m[("rankscope_world_size", "")] == 2


@pytest.mark.slow
def test_collector_api_rank_0_serves_the_job(tmp_path: Path) -> None:
    """``Collector(metrics_port=P)`` in code, under torchrun: one exporter (rank 0's)."""
    run, stop_file, port = tmp_path / "exp", tmp_path / "stop", free_port()
    cmd = [
        *launcher("module", 2), str(JOBS / "collector_api_job.py"), str(run),
        "--profile", "off", "--steps", "3000", "--step-ms", "10",
        "--stop-file", str(stop_file), "--metrics-port", str(port),
    ]  # fmt: skip
    job = subprocess.Popen(
        cmd, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        m, _ = scrape_until(port, both_ranks_stepped)
        check_against_logs(run, m)
        stop_file.touch()
        out, _ = job.communicate(timeout=90)
    finally:
        stop_file.touch()
        stop(job)
    assert job.returncode == 0, out[-3000:]
    assert "metrics" not in out, out[-3000:]  # rank 1 started no second exporter
    assert exporter.port_problem(port) is None  # rank 0's stop() ended it
