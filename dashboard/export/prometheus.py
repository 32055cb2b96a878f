"""A ``live.Snapshot`` as Prometheus metric families, and the HTTP server that serves them.

``families(snapshot, job)`` builds the families (every per-rank series carries
``job``, ``rank`` and ``host`` labels; run-wide ones ``job``); ``LiveCollector``
is the ``prometheus_client`` collector that refreshes a ``live.RunTail`` on a
scrape (at most every ``min_refresh_s``: concurrent or rapid scrapes share one
refresh) and yields them; ``serve`` starts ``prometheus_client``'s threaded
HTTP server on ``/metrics``. ``prometheus_client`` is imported only here and only
when called: ``require()`` raises ``RankscopeError`` (EXIT_ENVIRONMENT) without it.
The metric names and their meaning are listed in docs/metrics.md (``METRICS``
below is that list, one place).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankscope.dashboard.export.live import STATES, RunTail, Snapshot
from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

INSTALL_HINT = "pip install 'rankscope[metrics]'"
PREFIX = "rankscope_"
RANK_LABELS = ("job", "rank", "host")

# name (without PREFIX) -> help; per rank unless listed in RUN_METRICS.
METRICS: dict[str, str] = {
    "last_step": "the last step the rank finished",
    "step_seconds": "duration of the rank's last finished step",
    "step_median_seconds": "median step duration over the rank's recent steps (up to 256)",
    "data_wait_seconds": "time in the DataLoader's __next__ during the rank's last step",
    "data_wait_median_seconds": "median DataLoader wait per step over the recent steps",
    "collective_lag_seconds": (
        "how late the rank issued the latest collective every member logged, after the first"
    ),
    "collective_lag_median_seconds": "median of that arrival lag over the last 32 instances",
    "rank_state": "the rank's state: running, stalled, stopped, lost or unknown",
    "heartbeat_age_seconds": "time since the rank's collector last wrote its heartbeat",
    "straggler": "1 where the whole-run rule names the rank a straggler over the recent steps",
    "straggler_excess_seconds": "the straggler's own extra work per step, beyond the others",
    "gpu_utilization_ratio": "NVML GPU utilisation (0..1) at the latest sample",
    "gpu_memory_used_bytes": "GPU memory used at the latest sample",
    "gpu_memory_total_bytes": "GPU memory of the device",
    "gpu_throttle_reasons": "NVML clock throttle reasons bitmask at the latest sample",
    "gpu_throttled": "1 where a throttle reason other than idle (bit 0) is set",
    "gpu_power_watts": "GPU power draw at the latest sample",
    "gpu_temperature_celsius": "GPU temperature at the latest sample",
    "gpu_sm_clock_hertz": "SM clock at the latest sample",
    "world_size": "ranks in the job (run.json)",
    "ranks_reporting": "ranks with at least one file in the run directory",
    "job_finished": "1 once the launcher recorded the job's exit code",
    "job_exit_code": "the job's exit code (only once finished)",
    "verdict_steps": "steps the latest straggler verdict covered (0: no verdict yet)",
    "verdict_age_seconds": "time since the straggler verdict was computed",
    "exporter_refresh_seconds": "wall time of the exporter's latest read of the run directory",
    "exporter_errors": "refreshes that failed since the exporter started (the last figures stay)",
}
RUN_METRICS = (
    "world_size",
    "ranks_reporting",
    "job_finished",
    "job_exit_code",
    "verdict_steps",
    "verdict_age_seconds",
    "exporter_refresh_seconds",
    "exporter_errors",
)
# telemetry field -> (metric, scale)
_GPU = {
    "gpu_util_pct": ("gpu_utilization_ratio", 0.01),
    "mem_used_b": ("gpu_memory_used_bytes", 1.0),
    "mem_total_b": ("gpu_memory_total_bytes", 1.0),
    "throttle_reasons": ("gpu_throttle_reasons", 1.0),
    "power_mw": ("gpu_power_watts", 1e-3),
    "temp_c": ("gpu_temperature_celsius", 1.0),
    "sm_clock_mhz": ("gpu_sm_clock_hertz", 1e6),
}


def require() -> Any:
    """The ``prometheus_client`` module; RankscopeError (EXIT_ENVIRONMENT) without it."""
    try:
        import prometheus_client
    except ImportError:
        raise RankscopeError(
            f"prometheus_client is not installed: {INSTALL_HINT}", EXIT_ENVIRONMENT
        ) from None
    return prometheus_client


def families(snap: Snapshot, job: str, errors: int = 0) -> list[Any]:
    """The metric families of one snapshot (module docstring)."""
    from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily

    def gauge(name: str, labels: tuple[str, ...] = RANK_LABELS) -> Any:
        return GaugeMetricFamily(PREFIX + name, METRICS[name], labels=list(labels))

    per_rank = {n: gauge(n) for n in METRICS if n not in RUN_METRICS and n != "rank_state"}
    state = StateSetMetricFamily(PREFIX + "rank_state", METRICS["rank_state"], labels=RANK_LABELS)
    for r in snap.ranks:
        labels = [job, str(r.rank), r.host]
        values: dict[str, float | None] = {
            "last_step": r.last_step,
            "step_seconds": r.step_s,
            "step_median_seconds": r.step_median_s,
            "data_wait_seconds": r.data_wait_s,
            "data_wait_median_seconds": r.data_wait_median_s,
            "collective_lag_seconds": r.lag_s,
            "collective_lag_median_seconds": r.lag_median_s,
            "heartbeat_age_seconds": r.heartbeat_age_s,
            "straggler": None if r.straggler is None else float(r.straggler),
            "straggler_excess_seconds": r.straggler_excess_s,
        }
        for field, (name, scale) in _GPU.items():
            if field in r.gpu:
                values[name] = r.gpu[field] * scale
        if "throttle_reasons" in r.gpu:
            values["gpu_throttled"] = float(int(r.gpu["throttle_reasons"]) & ~1 != 0)
        for name, value in values.items():
            if value is not None:
                per_rank[name].add_metric(labels, float(value))
        state.add_metric(labels, {s: s == r.state for s in STATES})
    run = {n: gauge(n, ("job",)) for n in RUN_METRICS}
    run_values: dict[str, float | None] = {
        "world_size": snap.world_size,
        "ranks_reporting": len(snap.ranks),
        "job_finished": float(snap.finished),
        "job_exit_code": snap.exit_code,
        "verdict_steps": snap.verdict_steps,
        "verdict_age_seconds": snap.verdict_age_s,
        "exporter_refresh_seconds": snap.refresh_s,
        "exporter_errors": errors,
    }
    for name, value in run_values.items():
        if value is not None:
            run[name].add_metric([job], float(value))
    return [*per_rank.values(), state, *run.values()]


class LiveCollector:
    """A ``prometheus_client`` collector over a run directory (module docstring)."""

    def __init__(self, tail: RunTail, job: str, *, min_refresh_s: float = 1.0) -> None:
        self.tail = tail
        self.job = job
        self.min_refresh_s = min_refresh_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._at = 0.0
        self.errors = 0
        self._said: set[str] = set()

    def snapshot(self) -> Snapshot | None:
        """The latest snapshot; a refresh that fails keeps the one before (None: none yet).

        A failure is counted (``exporter_errors``) and each distinct one printed once to
        stderr: the exporter's stderr is the job's, and a bad file must not flood it.
        """
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._at >= self.min_refresh_s:
                self._at = now
                try:
                    self._snapshot = self.tail.refresh()
                except Exception as e:  # a bug or a file nobody foresaw: serve what we had
                    self.errors += 1
                    line = f"{type(e).__name__}: {e}"
                    if line not in self._said and len(self._said) < 16:
                        self._said.add(line)
                        print(f"rankscope metrics: refresh failed: {line}", file=sys.stderr)
            return self._snapshot

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        if snap is not None:
            yield from families(snap, self.job, self.errors)


def registry_for(run_dir: Path, job: str, *, verdict_every_s: float = 5.0) -> Any:
    """A registry holding only this run's collector (no process or platform metrics)."""
    prom = require()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(LiveCollector(RunTail(run_dir, verdict_every_s=verdict_every_s), job))
    return registry


def exposition(registry: Any) -> str:
    """The registry's text exposition (what a scrape of ``/metrics`` returns)."""
    text: bytes = require().generate_latest(registry)
    return text.decode()


def serve(registry: Any, port: int, addr: str) -> Any:
    """Serve ``registry`` on ``addr:port`` from a daemon thread; the server (``shutdown()``).

    OSError when the port cannot be bound (in use, no permission).
    """
    server, _thread = require().start_http_server(port, addr=addr, registry=registry)
    return server
