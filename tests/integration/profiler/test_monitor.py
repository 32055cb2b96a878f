"""``rankscope monitor``: GPU telemetry from outside a job (fake NVML, real processes)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml
from jobs.collector_jobs import JOBS, job_env, rankscope

from rankscope.profiler import rundir
from rankscope.profiler.commands.monitor import MonitorCommand
from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError
from rankscope.profiler.monitor import Monitor
from rankscope.profiler.telemetry import NVML_FIELDS, PROCESS_FIELDS

GIB = 2**30


@pytest.fixture
def ranks() -> Iterator[dict[int, int]]:
    """Two idle processes with torchrun's environment: rank -> pid."""
    procs = {}
    for rank in (0, 1):
        env = job_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        procs[rank] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"], env=env
        )
    yield {rank: p.pid for rank, p in procs.items()}
    for p in procs.values():
        p.kill()
        p.wait()


def run_monitor(nvml: FakeNvml, *argv: str) -> int:
    command = MonitorCommand(nvml=nvml)
    parser = argparse.ArgumentParser()
    command.prepare_parser(parser)
    return command.run(parser.parse_args(list(argv)))


def rows(run: Path, rank: int) -> list[dict]:
    return rundir.read_telemetry(run, rank)


def test_each_process_becomes_a_rank_with_its_gpu_telemetry(
    tmp_path: Path, ranks: dict[int, int]
) -> None:
    run = tmp_path / "run"
    # Rank 1 runs on GPU 0 and rank 0 on GPU 1: the rank comes from RANK, not GPU order.
    nvml = FakeNvml(
        processes={0: [(ranks[1], 3 * GIB)], 1: [(ranks[0], 2 * GIB), (ranks[1], GIB // 2)]},
        proc_sm_util={ranks[0]: 55, ranks[1]: 20},
    )
    code = run_monitor(nvml, "--out", str(run), "--all", "--period-ms", "50", "--duration", "0.6")
    assert code == 0
    manifest = rundir.read_run_manifest(run)
    assert manifest["schema"] == rundir.RUN_SCHEMA and manifest["world_size"] == 2
    assert manifest["config"]["launcher"] == "rankscope monitor" and "end_ns" in manifest
    assert sorted(manifest["ranks"]) == [0, 1]
    for rank, device, used, sm in ((0, 1, 2 * GIB, 55), (1, 0, 3 * GIB, 20)):
        meta = manifest["ranks"][rank]
        assert meta["pid"] == ranks[rank] and meta["rank_source"] == "RANK"
        assert (meta["local_rank"], meta["world_size"]) == (rank, 2)
        assert meta["device_index"] == device and meta["device_name"] == "NVIDIA H100 80GB HBM3"
        assert meta["windows"] == [] and meta["samples"] == len(rows(run, rank))
        assert "time.sleep(120)" in meta["command"]
        samples = rows(run, rank)
        assert 6 <= len(samples) <= 14  # 0.6 s at 50 ms
        last = samples[-1]
        assert set(last) <= {"ts_ns", "source", *NVML_FIELDS, *PROCESS_FIELDS}
        assert last["source"] == "nvml" and last["gpu_util_pct"] == 87
        assert last["mem_total_b"] == 80 * GIB and last["power_mw"] == 412_000
        assert last["proc_mem_used_b"] == used and last["proc_sm_util_pct"] == sm
        assert last["proc_mem_util_pct"] == 12
    # Rank 1 also holds memory on GPU 1 (a stray context): recorded, not its GPU.
    assert manifest["ranks"][1]["devices"] == [0, 1]
    header = json.loads(rundir.telemetry_path(run, 0).read_text().splitlines()[0])
    assert header == {
        "schema": rundir.TELEMETRY_SCHEMA,
        "rank": 0,
        "source": "nvml",
        "period_ms": 50,
    }
    assert nvml.shutdowns >= 1 and not nvml.initialised


def test_pids_limit_what_is_followed(tmp_path: Path, ranks: dict[int, int]) -> None:
    run = tmp_path / "run"
    nvml = FakeNvml(processes={0: [(ranks[0], GIB)], 1: [(ranks[1], GIB), (999_999, GIB)]})
    code = run_monitor(
        nvml, "--out", str(run), "--pids", str(ranks[1]), "--period-ms", "50", "--duration", "0.3"
    )
    assert code == 0
    manifest = rundir.read_run_manifest(run)
    assert sorted(manifest["ranks"]) == [1] and manifest["ranks"][1]["pid"] == ranks[1]
    assert manifest["config"]["pids"] == [ranks[1]]


def test_without_readable_environment_ranks_follow_gpu_order(tmp_path: Path) -> None:
    nvml = FakeNvml(processes={0: [(222, GIB)], 1: [(111, 4 * GIB), (222, GIB // 4)]})
    env = {333: {"RANK": "0"}}  # a later process claims rank 0, which is taken
    monitor = Monitor(nvml, tmp_path / "run", period_s=0.05, environ=env.get)
    assert monitor.open() == 2
    monitor.sample()
    nvml.processes[1].append((333, GIB))
    monitor.sample()
    monitor.close()
    by_pid = {t.pid: t for t in monitor.tracked.values()}
    assert (by_pid[222].rank, by_pid[222].device) == (0, 0)
    assert (by_pid[111].rank, by_pid[111].device) == (1, 1)
    assert by_pid[222].rank_source == "order (environment not readable)"
    assert by_pid[333].rank == 2 and "RANK=0 is taken" in by_pid[333].rank_source
    assert len(rows(tmp_path / "run", 2)) == 1 and len(rows(tmp_path / "run", 0)) == 2


def test_a_failing_process_query_is_reported_once_and_device_rows_go_on(tmp_path: Path) -> None:
    nvml = FakeNvml(processes={0: [(222, GIB)]}, fail={"nvmlDeviceGetProcessUtilization": 3})
    said: list[tuple[str, str]] = []
    monitor = Monitor(
        nvml,
        tmp_path / "run",
        environ=lambda pid: None,
        report=lambda p, e: said.append((p, str(e))),
    )
    monitor.open()
    for _ in range(3):
        monitor.sample()
    monitor.close()
    samples = rows(tmp_path / "run", 0)
    assert len(samples) == 3 and all("proc_sm_util_pct" not in r for r in samples)
    assert all(r["proc_mem_used_b"] == GIB and r["gpu_util_pct"] == 87 for r in samples)
    assert [p for p, _ in said] == ["gpu 0 process utilization"]


def test_sigterm_stops_it_with_every_sample_on_disk(tmp_path: Path, ranks: dict[int, int]) -> None:
    run = tmp_path / "run"
    processes = {0: [[ranks[0], GIB]], 1: [[ranks[1], GIB]]}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-X",
            "faulthandler",  # a monitor that never stops shows where it is (SIGABRT below)
            str(JOBS / "attach_fake_monitor.py"),
            json.dumps(processes),
            "--out",
            str(run),
            "--period-ms",
            "20",
        ],
        env=job_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "Ctrl-C to stop" in first, first
    time.sleep(1.5)  # one periodic flush at 1 s, then more samples only close() can flush
    proc.send_signal(signal.SIGTERM)
    try:
        _, rest = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, rest = proc.communicate()
        pytest.fail(f"monitor still running 60 s after SIGTERM; its stacks:\n{rest}")
    assert proc.returncode == 0, rest
    assert "sample(s) for rank(s) 0, 1" in rest
    manifest = rundir.read_run_manifest(run)
    assert "end_ns" in manifest
    for rank in (0, 1):
        meta = manifest["ranks"][rank]
        assert "end_ns" in meta and meta["samples"] == len(rows(run, rank)) >= 40
        assert rundir.telemetry_path(run, rank).read_text().endswith("\n")


def test_no_gpu_is_one_line_and_exit_3(tmp_path: Path) -> None:
    for nvml, words in (
        (FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND), "NVML could not start"),
        (FakeNvml(devices=0), "NVML sees no device"),
    ):
        with pytest.raises(RankscopeError) as info:
            run_monitor(nvml, "--out", str(tmp_path / "run"), "--duration", "1")
        assert info.value.exit_code == EXIT_ENVIRONMENT
        assert str(info.value).startswith("no NVIDIA GPU here") and words in str(info.value)


def _real_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return count > 0
    except Exception:
        return False


def test_real_command_without_a_gpu_says_so(tmp_path: Path) -> None:
    if _real_gpu():
        pytest.skip("this machine has a GPU")
    proc = rankscope("monitor", "--out", str(tmp_path / "run"), "--duration", "1")
    assert proc.returncode == EXIT_ENVIRONMENT
    assert proc.stderr.startswith("rankscope monitor: no NVIDIA GPU here")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_usage_errors(tmp_path: Path) -> None:
    for args, words in (
        (["--pids", "12x"], "is not a process id"),
        (["--pids", "999999999"], "no such process"),
        (["--period-ms", "0"], "--period-ms must be positive"),
    ):
        proc = rankscope("monitor", "--out", str(tmp_path / "run"), *args)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr


@pytest.mark.gpu
def test_real_gpu_process_is_followed(tmp_path: Path) -> None:
    if not _real_gpu():
        pytest.skip("no NVIDIA GPU")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    code = (
        "import torch, time\n"
        "x = torch.randn(4096, 4096, device='cuda')\n"
        "t = time.time()\n"
        "while time.time() - t < 8:\n"
        "    x = x @ x; x /= x.norm(); torch.cuda.synchronize()\n"
    )
    job = subprocess.Popen([sys.executable, "-c", code], env=job_env(RANK="0", WORLD_SIZE="1"))
    try:
        time.sleep(4)  # CUDA context up and kernels running
        run = tmp_path / "run"
        proc = rankscope(
            "monitor", "--out", str(run), "--pids", str(job.pid), "--duration", "2", timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        meta = rundir.read_run_manifest(run)["ranks"][0]
        assert meta["pid"] == job.pid and meta["rank_source"] == "RANK"
        samples = rows(run, 0)
        assert len(samples) >= 10
        assert max(r.get("proc_mem_used_b", 0) for r in samples) > 64 * 2**20
        assert max(r.get("gpu_util_pct", 0) for r in samples) > 0
    finally:
        job.kill()
        job.wait()


def test_monitor_thread_free_after_run(tmp_path: Path) -> None:
    """run() returns promptly when stopped from another thread (what a signal does)."""
    monitor = Monitor(FakeNvml(processes={0: [(5, GIB)]}), tmp_path / "run", environ=lambda p: None)
    monitor.open()
    stop = threading.Event()
    t = threading.Thread(target=monitor.run, args=(stop,))
    t.start()
    time.sleep(0.3)
    stop.set()
    t.join(2)
    assert not t.is_alive()
    monitor.close()
    assert len(rows(tmp_path / "run", 0)) >= 2


def test_report_reads_a_monitor_run(tmp_path: Path, ranks: dict[int, int]) -> None:
    """A monitor run has telemetry but no trace: the report says so and shows the GPU numbers."""
    run = tmp_path / "run"
    nvml = FakeNvml(processes={0: [(ranks[0], GIB)], 1: [(ranks[1], GIB)]})
    code = run_monitor(nvml, "--out", str(run), "--all", "--period-ms", "50", "--duration", "0.4")
    assert code == 0
    proc = rankscope("report", str(run), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "no profiler trace" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["run"]["ranks"] == [0, 1] and report["run"]["steps"] == []
    for r in report["ranks"]:
        assert r["gpu_busy_pct"] is None and r["compute_ms"] is None
        assert r["telemetry"]["gpu_util_pct"]["mean"] == 87
        assert r["telemetry"]["power_mw"]["max"] == 412_000
