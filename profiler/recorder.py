"""The collector's background thread: telemetry sampling and every file write of a rank.

``Recorder`` owns ``rank{R}.steps.jsonl``, ``rank{R}.telemetry.jsonl``,
``rank{R}.log`` and the manifests. The training thread only appends to
in-memory deques (``steps``, ``faults.pending``) and marks the manifest dirty;
this thread samples telemetry every ``period_s``, and every ``flush_s`` appends
what accumulated and flushes, so a crashed job still leaves all but the last few
seconds. Files are truncated when the recorder starts (each run starts clean) and
each JSONL file begins with a header line ``{"schema": ..., "rank": ...}`` that
``rundir.read_steps``/``read_telemetry`` skip. Buffers are bounded deques: if
the disk stalls, the oldest unwritten records are dropped, never memory grown.
With a ``control`` channel (``rankscope.profiler.control``) this thread also polls for
attach requests and writes the rank's heartbeat and acknowledgements. With a
``collectives`` log (``rankscope.profiler.collectives``) it reads the flight
recorder when that log's schedule says so (and once more, for everything left,
when it stops) and appends ``rank{R}.collectives.jsonl`` at each flush, with the
rows of a ``p2p`` log (``rankscope.profiler.p2p``: gloo's sends and receives); with
``auto`` (``rankscope.profiler.autocapture``) it feeds every finished step to the
slowdown trigger as soon as it wakes, not only at flushes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from rankscope.profiler import records, rundir
from rankscope.profiler.control import ControlChannel
from rankscope.profiler.faults import Faults
from rankscope.profiler.telemetry import Sampler

if TYPE_CHECKING:
    from rankscope.profiler.autocapture import AutoCapture
    from rankscope.profiler.collectives import FlightRecorderLog
    from rankscope.profiler.p2p import P2PLog

# (step, start_ns, end_ns, data_ns, capture, cpu_ns, runq_ns): -1 (or "" for the
# capture phase, rundir.CAPTURE_PHASES) means not measured and is left out of the line
StepRecord = tuple[int, int, int, int, str, int, int]

_BUFFER_LIMIT = 100_000
# The most a duty (attach poll, heartbeat, flush, flight-recorder read) is moved
# earlier to share a telemetry tick's wake-up.
_MAX_SLACK_S = 0.05


def _line(record: Any) -> str:
    return records.encode_line(record).decode()


class Recorder(threading.Thread):
    def __init__(
        self,
        run_dir: Path,
        rank: int,
        faults: Faults,
        open_sampler: Callable[[], Sampler] | None,
        period_s: float,
        flush_s: float,
        snapshot_meta: Callable[[], dict[str, Any] | None],
        run_manifest: dict[str, Any] | None,
        control: ControlChannel | None = None,
        collectives: FlightRecorderLog | None = None,
        auto: AutoCapture | None = None,
        p2p: P2PLog | None = None,
    ) -> None:
        super().__init__(name=f"rankscope-recorder-{rank}", daemon=True)
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.faults = faults
        self.steps: deque[StepRecord] = deque(maxlen=_BUFFER_LIMIT)
        self._samples: deque[dict[str, Any]] = deque(maxlen=_BUFFER_LIMIT)
        self._open_sampler = open_sampler
        self._period_s = period_s
        self._flush_s = flush_s
        self._snapshot_meta = snapshot_meta
        self._run_manifest = run_manifest
        self.control = control
        self.collectives = collectives
        self.auto = auto
        self.p2p = p2p
        self._finished_steps: deque[StepRecord] = deque(maxlen=_BUFFER_LIMIT)
        self._collective_rows: deque[dict[str, Any]] = deque(maxlen=_BUFFER_LIMIT)
        self.poll_collectives = False  # set by other threads: read the flight recorder now
        self._stop_event = threading.Event()
        self._flush_requested = threading.Event()
        self._flushed = threading.Condition()
        self._flush_count = 0
        self._requests = 0  # flush requests made (request_flush)
        self._served = 0  # requests made before the start of the last finished flush
        self._files: dict[str, IO[str]] = {}
        self.sampler: Sampler | None = None
        self.sampler_info: dict[str, Any] = {}
        self.ready = threading.Event()  # set once files are open and the sampler chosen

    # --- called from other threads ---

    def request_flush(self, wait_s: float = 0.0) -> None:
        """Ask for a flush now; with ``wait_s`` wait (bounded) until it happened."""
        # A flush already under way may have taken its data before this call: wait for
        # one that starts after it (a flush serves the requests made before it began).
        # Bounded lock taking: a signal handler calls this on a thread that may hold it.
        if not self._flushed.acquire(timeout=max(wait_s, 1.0)):
            return
        try:
            self._requests += 1
            target = self._requests
        finally:
            self._flushed.release()
        self._flush_requested.set()
        if wait_s > 0 and self.is_alive() and self._flushed.acquire(timeout=wait_s):
            try:
                self._flushed.wait_for(lambda: self._served >= target, timeout=wait_s)
            finally:
                self._flushed.release()

    def stop(self, wait_s: float = 10.0) -> None:
        self._stop_event.set()
        self._flush_requested.set()
        if self.is_alive():
            self.join(wait_s)

    # --- the thread ---

    def run(self) -> None:
        try:
            self._open_files()
        except Exception as e:
            self.faults.disable("run directory", f"cannot write {self.run_dir}: {e}")
            self.ready.set()
            self._drain_without_files()
            return
        # Before the sampler: nvmlInit can take seconds, and attach waits for heartbeats.
        control = self.control
        if control is not None:
            try:
                control.open()
            except Exception as e:
                self.faults.disable("attach", e)
                control = None
        if self._open_sampler is not None:
            try:
                self.sampler = self._open_sampler()
                self.sampler_info = self.sampler.describe()
                self._write_header("telemetry", rundir.TELEMETRY_SCHEMA, self.sampler.source)
            except Exception as e:
                self.faults.disable("telemetry", e)
        self.ready.set()
        self._flush()
        next_sample = time.monotonic()
        next_flush = next_sample + self._flush_s
        # One wake-up serves every duty due within ``slack`` of it: polls, beats,
        # flushes and flight-recorder reads ride on the sampling ticks instead of
        # waking the thread (and taking the GIL) between them.
        slack = min(self._period_s / 2, _MAX_SLACK_S) if self.sampler is not None else 0.0
        while not self._stop_event.is_set():
            now = time.monotonic()
            due = now + slack
            # Duties are timed from the sampling tick this wake-up serves, not from
            # when the thread got to run: the next ones then fall on ticks too.
            tick = next_sample if self.sampler is not None and now >= next_sample else now
            if control is not None:
                control.tick(tick, due)  # never raises: it disables attach instead
            if self.sampler is not None and now >= next_sample:
                self._sample()
                # Keep the period (not drift by the sampling cost); skip missed ticks.
                next_sample += self._period_s * max(
                    1, int((now - next_sample) / self._period_s) + 1
                )
            self._take_steps()
            fr = self.collectives
            if fr is not None and (self.poll_collectives or due >= fr.next_deadline()):
                self.poll_collectives = False
                self._collective_rows.extend(fr.poll(tick))
            if control is not None and control.flush_wanted:
                control.flush_wanted = False
                self._flush_requested.set()
            if due >= next_flush or self._flush_requested.is_set():
                self._flush_requested.clear()
                self._flush()
                next_flush = tick + self._flush_s
            wake = min(next_flush, next_sample if self.sampler is not None else next_flush)
            if control is not None and not control.disabled:
                wake = min(wake, control.next_deadline())
            if self.collectives is not None and not self.collectives.disabled:
                wake = min(wake, self.collectives.next_deadline())
            self._flush_requested.wait(max(0.0, wake - time.monotonic()))
        if self.collectives is not None:
            self._collective_rows.extend(self.collectives.poll(final=True))
        self._flush()
        if control is not None:
            control.close()
        if self.sampler is not None:
            with contextlib.suppress(Exception):
                self.sampler.close()
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.close()

    def _drain_without_files(self) -> None:
        # Nowhere to write: keep buffers from piling up until stopped.
        while not self._stop_event.wait(self._flush_s):
            self.steps.clear()
            self._finished_steps.clear()
            self._mark_flushed()
        self._mark_flushed()

    def _open_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files["steps"] = open(  # noqa: SIM115 - kept open, closed in run()
            rundir.steps_path(self.run_dir, self.rank), "w", encoding="utf-8"
        )
        self._write_header("steps", rundir.STEPS_SCHEMA, None)
        if self._open_sampler is not None:
            self._files["telemetry"] = open(  # noqa: SIM115 - kept open, closed in run()
                rundir.telemetry_path(self.run_dir, self.rank), "w", encoding="utf-8"
            )
        if self.collectives is not None or self.p2p is not None:
            self._files["collectives"] = open(  # noqa: SIM115 - kept open, closed in run()
                rundir.collectives_path(self.run_dir, self.rank), "w", encoding="utf-8"
            )
            self._write_header("collectives", rundir.COLLECTIVES_SCHEMA, None)
        if self._run_manifest is not None:
            rundir.write_json_atomic(self.run_dir / rundir.RUN_MANIFEST, self._run_manifest)

    def _write_header(self, kind: str, schema: str, source: str | None) -> None:
        header = records.Header(schema, self.rank, run_id=rundir.run_id_from_env())
        if source is not None:
            header.source = source
            header.period_ms = round(self._period_s * 1000)
        self._files[kind].write(records.encode_line(header).decode())

    def _sample(self) -> None:
        assert self.sampler is not None
        try:
            self._samples.append(self.sampler.sample())
        except Exception as e:
            self.faults.disable("telemetry", e)
            self.sampler = None

    def _write_lines(self, kind: str, lines: list[str]) -> None:
        if not lines or self.faults.disabled(f"write {kind}"):
            return
        try:
            if kind == "log" and "log" not in self._files:
                # Opened on the first fault only: a clean run leaves no log file.
                self._files["log"] = open(  # noqa: SIM115 - kept open, closed in run()
                    rundir.log_path(self.run_dir, self.rank), "a", encoding="utf-8"
                )
            f = self._files.get(kind)
            if f is None:
                return
            f.write("".join(lines))
            f.flush()
        except Exception as e:
            self.faults.disable(f"write {kind}", e)

    def _take_steps(self) -> None:
        """Move finished steps off the training thread's deque (and show them to auto)."""
        steps = [self.steps.popleft() for _ in range(len(self.steps))]
        if steps:
            if self.control is not None and not self.control.disabled:
                # Where the heartbeat's rate starts: the end of the first finished step.
                self.control.training_started(steps[0][2], steps[0][0] + 1)
            self._finished_steps.extend(steps)
            if self.auto is not None:
                self.auto.feed(steps)

    def _flush(self) -> None:
        with self._flushed:
            serving = self._requests
        self._take_steps()
        steps = [self._finished_steps.popleft() for _ in range(len(self._finished_steps))]
        self._write_lines("steps", [_step_line(*record) for record in steps])
        if self.p2p is not None:  # once stopping: what is still in flight too
            self._collective_rows.extend(self.p2p.drain(final=self._stop_event.is_set()))
        rows = [self._collective_rows.popleft() for _ in range(len(self._collective_rows))]
        self._write_lines("collectives", [_line(r) for r in rows])
        samples = [self._samples.popleft() for _ in range(len(self._samples))]
        # Strict JSON: a metric NVML answered with NaN is written as null.
        self._write_lines("telemetry", [_line(s) for s in samples])
        pending = self.faults.pending
        self._write_lines("log", [pending.popleft() for _ in range(len(pending))])
        try:
            meta = self._snapshot_meta()
            if meta is not None and not self.faults.disabled("manifest"):
                rundir.write_json_atomic(rundir.rank_meta_path(self.run_dir, self.rank), meta)
        except Exception as e:
            self.faults.disable("manifest", e)
        # Acks after the manifest: a "done" ack promises the window is recorded there.
        if self.control is not None and not self.control.disabled:
            try:
                self.control.write_acks()
            except Exception as e:
                self.faults.disable("attach", e)
        self._mark_flushed(serving)

    def _mark_flushed(self, serving: int | None = None) -> None:
        with self._flushed:
            self._flush_count += 1
            self._served = max(self._served, self._requests if serving is None else serving)
            self._flushed.notify_all()


def _step_line(
    step: int,
    start: int,
    end: int,
    data_ns: int = -1,
    capture: str = "",
    cpu_ns: int = -1,
    runq_ns: int = -1,
) -> str:
    """One ``steps.jsonl`` line; a time at -1 (not measured) and an empty capture are left out."""
    return _line(
        records.StepRecord(
            step,
            start,
            end,
            data_ns if data_ns >= 0 else None,
            cpu_ns=cpu_ns if cpu_ns >= 0 else None,
            runq_ns=runq_ns if runq_ns >= 0 else None,
            # the collector passes only CAPTURE_PHASES names (or "")
            capture=cast("records.CapturePhase", capture) if capture else None,
        )
    )
