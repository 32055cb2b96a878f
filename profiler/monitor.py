"""GPU telemetry of a job that never loaded the collector, sampled from outside it.

``Monitor(nvml, run_dir, pids=...)`` finds the job's processes through NVML
(``nvmlDeviceGetComputeRunningProcesses`` on every GPU; all of them, or only
``pids``), gives each one a rank (``RANK``, else ``LOCAL_RANK``, from
``/proc/PID/environ`` when readable; else the next free number in GPU order)
and writes, like a collector rank would:

- ``rank{R}.telemetry.jsonl``: the header line, then one row per period with
  the device fields of the process's GPU (``rankscope.profiler.telemetry.NVML_FIELDS``,
  read by the same ``NvmlSampler`` the collector uses) plus ``PROCESS_FIELDS``
  (its SM/memory utilisation from ``nvmlDeviceGetProcessUtilization``, absent
  when NVML had no new sample for it, and its GPU memory);
- ``rank{R}.meta.json``: RANK_SCHEMA fields a monitor can know (pid, host,
  device, ``rank_source``, ``collector: "rankscope monitor"``, no windows);
- ``run.json``: world size (from the processes' ``WORLD_SIZE`` when readable),
  start/end, the command, ``config.launcher = "rankscope monitor"``.

A process's GPU is the one where it holds the most memory. Processes that show
up later are picked up at the next sample. Rows are flushed every ``flush_s``
and on ``close()``. NVML is injected (``pynvml``, or a fake in tests).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from rankscope.profiler import __version__, records, rundir
from rankscope.profiler.telemetry import NvmlSampler, Report

EnvironReader = Callable[[int], "dict[str, str] | None"]


def read_environ(pid: int) -> dict[str, str] | None:
    """A process's environment from /proc, or None when it cannot be read (not ours)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read(1 << 20)
    except OSError:
        return None
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(4096).replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _env_int(env: dict[str, str] | None, key: str) -> int | None:
    try:
        return int(env[key]) if env is not None else None
    except (KeyError, ValueError):
        return None


class Stop(Protocol):
    """What ``Monitor.run`` waits on: a ``threading.Event`` or the command's SignalStop."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


@dataclass
class Tracked:
    """One process of the job: the rank it writes as, and where it runs."""

    pid: int
    rank: int
    rank_source: str
    local_rank: int | None
    world_size: int | None
    device: int
    devices: set[int] = field(default_factory=set)
    command: str = ""
    samples: int = 0
    file: IO[str] | None = None
    pending: list[str] = field(default_factory=list)


class Monitor:
    def __init__(
        self,
        nvml: Any,
        run_dir: Path,
        *,
        pids: set[int] | None = None,
        period_s: float = 0.1,
        flush_s: float = 1.0,
        environ: EnvironReader = read_environ,
        report: Report | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.nvml = nvml
        self.run_dir = Path(run_dir)
        self.pids = pids
        self.period_s = period_s
        self.flush_s = flush_s
        self._environ = environ
        self._report_fn = report
        self._reported: set[str] = set()
        self.command = command if command is not None else list(sys.argv)
        self.tracked: dict[int, Tracked] = {}
        self._handles: list[Any] = []
        self._samplers: dict[int, NvmlSampler] = {}
        self._util_seen_us: dict[int, int] = {}
        self._broken: set[tuple[int, str]] = set()  # (device, query) that failed once
        self._initialised = False
        self.start_ns = time.time_ns()
        self.host = socket.gethostname()

    # --- lifecycle ---

    def open(self) -> int:
        """Start NVML and the run directory; the number of GPUs. NVML errors propagate."""
        self.nvml.nvmlInit()
        self._initialised = True
        count = int(self.nvml.nvmlDeviceGetCount())
        self._handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_run_manifest(end_ns=None)
        return count

    def run(self, stop: Stop, duration_s: float | None = None) -> None:
        """Sample every period until ``stop`` is set (a signal) or ``duration_s`` passed."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_flush = time.monotonic() + self.flush_s
        next_sample = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            self.sample()
            if now >= next_flush:
                self.flush()
                next_flush = now + self.flush_s
            next_sample += self.period_s * max(1, int((now - next_sample) / self.period_s) + 1)
            wake = next_sample if deadline is None else min(next_sample, deadline)
            stop.wait(max(0.0, wake - time.monotonic()))

    def close(self) -> None:
        """Flush every row, finish the manifests, shut NVML down. Safe to call twice."""
        end_ns = time.time_ns()
        self.flush()
        for t in self.tracked.values():
            self._write_rank_meta(t, end_ns)
            if t.file is not None:
                with contextlib.suppress(OSError):
                    t.file.close()
                t.file = None
        if self._handles or self.tracked:
            self._write_run_manifest(end_ns)
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()

    # --- sampling ---

    def _report(self, part: str, error: BaseException | str) -> None:
        if part in self._reported:
            return
        self._reported.add(part)
        if self._report_fn is not None:
            self._report_fn(part, error)

    def _query(self, device: int, name: str, call: Callable[[], Any], default: Any) -> Any:
        """One NVML call that, failing, is reported once and not asked again for that GPU."""
        if (device, name) in self._broken:
            return default
        try:
            return call()
        except Exception as e:
            not_found = getattr(self.nvml, "NVML_ERROR_NOT_FOUND", 6)
            if getattr(e, "value", None) == not_found:
                return default  # "no samples since last time": normal for an idle process
            self._broken.add((device, name))
            self._report(f"gpu {device} {name}", f"disabled ({type(e).__name__}: {e})")
            return default

    def _processes(self) -> dict[int, dict[int, int]]:
        """pid -> {device index: used bytes} for the processes to follow."""
        found: dict[int, dict[int, int]] = {}
        get = self.nvml.nvmlDeviceGetComputeRunningProcesses
        for index, handle in enumerate(self._handles):
            procs = self._query(index, "compute processes", functools.partial(get, handle), [])
            for p in procs:
                pid = int(p.pid)
                if self.pids is not None and pid not in self.pids:
                    continue
                used = getattr(p, "usedGpuMemory", None)
                found.setdefault(pid, {})[index] = int(used) if used is not None else 0
        return found

    def _process_util(self, index: int) -> dict[int, tuple[int, int]]:
        """pid -> (SM %, memory %) from the newest NVML sample since the last call."""
        handle = self._handles[index]
        since = self._util_seen_us.get(index, 0)
        samples = self._query(
            index,
            "process utilization",
            lambda: self.nvml.nvmlDeviceGetProcessUtilization(handle, since),
            [],
        )
        out: dict[int, tuple[int, int, int]] = {}
        for s in samples:
            ts = int(s.timeStamp)
            if ts <= since:
                continue
            prev = out.get(int(s.pid))
            if prev is None or ts > prev[2]:
                out[int(s.pid)] = (int(s.smUtil), int(s.memUtil), ts)
        if out:
            self._util_seen_us[index] = max(v[2] for v in out.values())
        return {pid: (v[0], v[1]) for pid, v in out.items()}

    def _track(self, pid: int, devices: dict[int, int]) -> Tracked:
        env = self._environ(pid)
        taken = {t.rank for t in self.tracked.values()}
        rank, source = _env_int(env, "RANK"), "RANK"
        if rank is None:
            rank, source = _env_int(env, "LOCAL_RANK"), "LOCAL_RANK"
        if rank is None or rank < 0 or rank in taken:
            why = "environment not readable" if env is None else "no RANK in its environment"
            if rank is not None and rank in taken:
                why = f"{source}={rank} is taken by another process"
            source = f"order ({why})"
            rank = next(r for r in range(len(taken) + 1) if r not in taken)
        device = max(devices, key=lambda d: devices[d])
        t = Tracked(
            pid=pid,
            rank=rank,
            rank_source=source,
            local_rank=_env_int(env, "LOCAL_RANK"),
            world_size=_env_int(env, "WORLD_SIZE"),
            device=device,
            devices=set(devices),
            command=_cmdline(pid),
        )
        path = rundir.telemetry_path(self.run_dir, rank)
        t.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        header = {
            "schema": rundir.TELEMETRY_SCHEMA,
            "rank": rank,
            "source": "nvml",
            "period_ms": round(self.period_s * 1000),
        }
        t.file.write(records.encode_line(header).decode())
        self.tracked[pid] = t
        if device not in self._samplers:
            self._samplers[device] = NvmlSampler(self.nvml, str(device), self._report)
        self._write_rank_meta(t, None)
        self._write_run_manifest(None)
        return t

    def sample(self) -> None:
        processes = self._processes()
        for pid, devices in processes.items():
            if pid not in self.tracked:
                self._track(pid, devices)
            else:
                self.tracked[pid].devices.update(devices)
        device_rows = {d: s.sample() for d, s in self._samplers.items()}
        util = {d: self._process_util(d) for d in device_rows}
        for pid, t in self.tracked.items():
            if pid not in processes:
                continue  # exited (or not on a GPU this moment): no row
            row = dict(device_rows[t.device])
            sm_mem = util[t.device].get(pid)
            if sm_mem is not None:
                row["proc_sm_util_pct"], row["proc_mem_util_pct"] = sm_mem
            row["proc_mem_used_b"] = processes[pid].get(t.device, 0)
            t.pending.append(records.encode_line(row).decode())
            t.samples += 1

    def flush(self) -> None:
        for t in self.tracked.values():
            if t.file is not None and t.pending:
                t.file.write("".join(t.pending))
                t.file.flush()
                t.pending.clear()

    # --- manifests ---

    def _device_info(self, index: int) -> dict[str, Any]:
        sampler = self._samplers.get(index)
        info = sampler.describe() if sampler is not None else {}
        return {
            "device_name": info.get("device_name"),
            "device_uuid": info.get("device_uuid"),
        }

    def _write_rank_meta(self, t: Tracked, end_ns: int | None) -> None:
        meta: dict[str, Any] = {
            "schema": rundir.RANK_SCHEMA,
            "rank": t.rank,
            "local_rank": t.local_rank,
            "world_size": t.world_size,
            "host": self.host,
            "pid": t.pid,
            "command": t.command,
            **self._device_info(t.device),
            "device_index": t.device,
            "devices": sorted(t.devices),
            "collector": "rankscope monitor",
            "rank_source": t.rank_source,
            "rankscope_version": __version__,
            "telemetry_source": "nvml",
            "start_ns": self.start_ns,
            "steps_recorded": 0,
            "windows": [],
        }
        if end_ns is not None:
            meta["end_ns"] = end_ns
            meta["samples"] = t.samples
        rundir.write_json_atomic(rundir.rank_meta_path(self.run_dir, t.rank), meta)

    def _write_run_manifest(self, end_ns: int | None) -> None:
        sizes = [t.world_size for t in self.tracked.values() if t.world_size]
        manifest: dict[str, Any] = {
            "schema": rundir.RUN_SCHEMA,
            "world_size": max(sizes) if sizes else len(self.tracked) or None,
            "start_ns": self.start_ns,
            "command": self.command,
            "config": {
                "launcher": "rankscope monitor",
                "period_ms": round(self.period_s * 1000),
                "pids": sorted(self.pids) if self.pids is not None else "all",
            },
            "rankscope_version": __version__,
        }
        if end_ns is not None:
            manifest["end_ns"] = end_ns
        rundir.write_json_atomic(self.run_dir / rundir.RUN_MANIFEST, manifest)
