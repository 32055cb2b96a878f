"""The per-rank collector: step timer, telemetry, torch.profiler windows, manifests.

Contract (what a rank leaves in its run directory, see ``rankscope.profiler.rundir``):
``rank{R}.steps.jsonl`` (one ``{step, start_ns, end_ns, data_ns, cpu_ns, runq_ns[, capture]}``
per finished step: ``rankscope.profiler.cputime`` for the CPU and run-queue times),
``rank{R}.collectives.jsonl`` (every collective, from the flight recorder),
``rank{R}.telemetry.jsonl`` (samples every ``nvml_period_ms``),
``rank{R}.step{A}-{B}.pt.trace.json.gz`` per profiler window (its
``ProfilerStep#N`` ranges are collector step N), ``rank{R}.meta.json``
(RANK_SCHEMA) and, on rank 0, ``run.json`` (RUN_SCHEMA).

On-demand windows (``rankscope attach``): the recorder thread polls the run
directory's control channel (``rankscope.profiler.control``) and hands a validated request
to the training thread through one attribute, ``_attach_pending``; the training
thread reads it at each step boundary and opens the window at the request's
warm-up step, exactly like a configured window. Faults there disable attach only.
With auto-capture, rank 0's recorder thread writes such requests itself when
the step times show a slowdown start (``rankscope.profiler.autocapture``).

The light layer besides step times: ``rankscope.profiler.datawait`` times the
DataLoader's ``__next__`` on the training thread (two clock reads per batch),
read at each step boundary; ``rankscope.profiler.collectives`` reads PyTorch's
flight recorder on the recorder thread.

What runs where: the training thread only takes a timestamp, appends to a deque
and drives torch.profiler at window edges. Sampling, file writes and trace
export run on background threads.

A window leaves a footprint: torch starts the profiler and stops it (its
post-processing of the events, and a device synchronize) on the training thread,
and writing the trace holds the GIL for a while on the export thread. Each step
record says which phase of a window touched it (``capture``: "start", "window",
"stop", "export"; ``rundir.CAPTURE_PHASES``), so the review side draws no verdict
from the collector's own cost.

Any error inside a part (steps, telemetry, profiler, manifest, clock) is
reported once (stderr and ``rank{R}.log``) and disables that part only; no
exception ever reaches the training code.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankscope.profiler import __version__, cputime, datawait, hooks, rundir, settings
from rankscope.profiler.control import AttachRequest, ControlChannel
from rankscope.profiler.errors import RankscopeError
from rankscope.profiler.faults import Faults
from rankscope.profiler.placement import Placement, placement, rank_and_world
from rankscope.profiler.recorder import Recorder
from rankscope.profiler.schedule import ProfilePlan, Window, parse_profile_steps
from rankscope.profiler.settings import parse_port
from rankscope.profiler.telemetry import Sampler, open_sampler, with_torch_memory

if TYPE_CHECKING:
    from rankscope.profiler.p2p import P2PLog
    from rankscope.profiler.progress import ProgressWatch

# The collector that owns this process's rank files; a second Collector started
# in the same process defers to it instead of writing the same files twice.
_active: Collector | None = None
_active_lock = threading.Lock()
_EXPORT_WAIT_S = 120.0
# The collector that `rankscope run`'s autostart owns in this process, if any; set by
# ``rankscope.profiler.autostart`` (which imports this module, never the reverse).
_owner_lookup: Callable[[], Collector | None] | None = None
_DEFAULT = settings.DEFAULTS  # each setting's default, defined once in profiler.settings
# This process's pid, refreshed in a forked child (_forget_in_child): the step
# boundary compares it with the collector's own instead of calling os.getpid(),
# a system call on every step.
_pid = os.getpid()


def set_owner_lookup(lookup: Callable[[], Collector | None] | None) -> None:
    """Where ``Collector.start()`` asks whether another collector owns this rank's files."""
    global _owner_lookup
    _owner_lookup = lookup


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


class Collector:
    """Record what this rank does: step times, GPU telemetry, torch.profiler windows.

    Usage::

        from rankscope import Collector

        with Collector("runs/exp1", profile_steps="5-7") as col:
            for batch in loader:
                train_step(batch)
                col.step()          # a training step just ended

    Steps: step 0 begins when the collector starts; each ``step()`` call ends the
    current step and begins the next. With ``steps_from_optimizer=True`` (what
    ``rankscope run`` uses) boundaries come from PyTorch's global optimizer
    step hook instead: the first optimizer's ``step()`` returning marks one
    boundary, and step 0 begins at the first such boundary (before it, the
    collector cannot tell setup from training). If the code also calls
    ``step()``, the manual calls take over from the hook.

    ``profile_steps`` chooses torch.profiler windows, in collector step numbers:

    - ``None`` or ``"off"``: no profiler, only the light layer;
    - ``"5-7"``, ``"5"``, ``"5-7,40-42"``: inclusive step ranges; ``range(5, 8)``,
      an ``int`` or a list of these work too;
    - ``ProfileSchedule(wait, warmup, active, repeat, skip_first)`` or the text
      ``"wait=1,warmup=1,active=3,repeat=2"``: torch.profiler's cycle.

    Explicit ranges get ``warmup_steps`` profiler warm-up steps before them.
    ``record_shapes``, ``profile_memory`` and ``with_stack`` are passed to
    torch.profiler. ``nvml_period_ms`` (0 turns telemetry off) sets the sampling
    period; ``nvml`` injects a pynvml-compatible module (tests).
    ``control_period_s`` is how often the background thread looks for an attach
    request (``rankscope attach``); 0 turns attach and heartbeats off.

    The light layer: ``data_timing`` records each step's DataLoader wait as
    ``data_ns``; ``collectives`` logs every collective from PyTorch's flight
    recorder into ``rank{R}.collectives.jsonl``. The flight recorder keeps its
    ring only if ``TORCH_FR_BUFFER_SIZE`` (e.g. 2000) is in the environment before
    the process group starts: set it in the job's environment (``rankscope run``
    sets it for you); without it this part is off, with one line in the log.
    ``auto_capture=True`` (or a dict of ``autocapture.Policy`` fields) lets rank 0
    ask every rank for a profiler window when steps turn slow (3 steps in a row
    50% and 5 ms over the median of the 50 before; at most 3 windows an hour, 5
    minutes apart); it needs the control channel (``control_period_s`` > 0).
    ``ingest=True`` runs ``rankscope ingest RUN --ranks R`` after each window, in a
    process of its own at the lowest CPU priority (``nice 19``), so the review
    cache (``$RANKSCOPE_CACHE_DIR``: put it on a filesystem the review side
    reads) holds the rank's tables and digest before anyone asks for a report;
    one at a time per rank, never waited for.
    ``stall_after_s`` (else ``$RANKSCOPE_STALL_S``, else 60) is the least time
    without a step after which the rank is ``stalled`` (the threshold is the
    larger of it and 10x the median step): the rank then writes its progress and
    hang evidence (``rankscope.profiler.progress``), as it does on an unhandled
    exception and on SIGTERM/SIGINT.
    ``metrics_port=P`` has rank 0 start ``rankscope metrics RUN --port P`` in a
    process of its own (niced, ended by ``stop()`` or when this process exits):
    Prometheus metrics of every rank's light layer, read from the run directory
    (docs/metrics.md); a port in use or no ``prometheus_client`` is one warning
    line, and training goes on.

    Each setting's default and meaning: ``rankscope.profiler.settings`` (README's table).

    Rank and world size come from torch.distributed when it is initialised,
    else from torchrun's RANK/WORLD_SIZE/LOCAL_RANK, else from Slurm's
    SLURM_PROCID/SLURM_STEP_NUM_TASKS (or SLURM_NTASKS)/SLURM_LOCALID (a task
    that ``srun`` started), else 0/1 (``placement.rank_and_world``). The clock
    offset against rank 0 is measured once through the c10d store when
    torch.distributed is (or becomes) initialised. Importing torch happens in
    ``start()``, never at import time.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        profile_steps: Any = _DEFAULT["profile_steps"],
        *,
        record_shapes: bool = _DEFAULT["record_shapes"],
        profile_memory: bool = _DEFAULT["profile_memory"],
        with_stack: bool = _DEFAULT["with_stack"],
        warmup_steps: int = _DEFAULT["warmup_steps"],
        nvml_period_ms: float = _DEFAULT["nvml_period_ms"],
        flush_period_s: float = _DEFAULT["flush_period_s"],
        steps_from_optimizer: bool = False,
        nvml: Any = None,
        run_config: dict[str, Any] | None = None,
        command: list[str] | None = None,
        clock_timeout_s: float = 15.0,
        control_period_s: float = _DEFAULT["control_period_s"],
        data_timing: bool = _DEFAULT["data_timing"],
        collectives: bool = _DEFAULT["collectives"],
        auto_capture: Any = _DEFAULT["auto_capture"],
        ingest: bool = _DEFAULT["ingest"],
        stall_after_s: float | None = _DEFAULT["stall_after_s"],
        metrics_port: int | None = _DEFAULT["metrics_port"],
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.plan: ProfilePlan = parse_profile_steps(profile_steps, warmup=warmup_steps)
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        try:
            # nan or inf used to turn telemetry off in silence: refuse them by name.
            self.nvml_period_ms = settings.parse_period_ms(str(nvml_period_ms))
        except ValueError as e:
            raise RankscopeError(f"nvml_period_ms: {e}") from None
        self.flush_period_s = float(flush_period_s)
        self.steps_from_optimizer = steps_from_optimizer
        self._nvml = nvml
        self._run_config = run_config or {}
        self._command = command
        self._clock_timeout_s = clock_timeout_s
        self.control_period_s = float(control_period_s)
        self._warmup_steps = max(0, int(warmup_steps))
        self.data_timing = bool(data_timing)
        self.collectives = bool(collectives)
        self.auto_capture = auto_capture
        self.ingest = bool(ingest)
        self._ingest_proc: Any = None
        self.stall_after_s = stall_after_s
        try:
            self.metrics_port = None if metrics_port is None else parse_port(str(metrics_port))
        except ValueError as e:
            raise RankscopeError(f"metrics_port: {e}") from None
        self._exporter: Any = None
        self._progress: ProgressWatch | None = None
        self._data_timed = False

        self.rank = 0
        self.world_size = 1
        self.local_rank = 0
        self._place = Placement(socket.gethostname(), None, None, "hostname")
        self._attempt = 0  # torchrun's restart count (rundir.restart_count), set at start
        self.faults = Faults("rank ?")
        self._started = False
        self._stopped = False
        self._pid = os.getpid()
        self._delegate: Collector | None = None
        self._recorder: Recorder | None = None
        self._p2p: P2PLog | None = None
        self._meta: dict[str, Any] = {}
        self._meta_lock = threading.Lock()
        self._meta_dirty = False
        self._torch: Any = None

        # Step clock (training thread only).
        self._step = 0
        self._step_start_ns: int | None = None
        self._thread_clock = cputime.ThreadClock()
        self._step_clock = (-1, -1)  # (cpu_ns, runq_ns) at the current step's start
        self._steps_source = "optimizer" if steps_from_optimizer else "manual"
        self._last_boundary_source = ""
        self._clock_optimizer: int | None = None
        self._optimizer_hook: Any = None
        # False when the caller (autostart) feeds optimizer steps itself: a hook
        # registered from inside another optimizer hook would break that step.
        self._register_optimizer_hook = True

        # Profiler window in progress (training thread only) and exports in flight.
        self._prof: Any = None
        self._window: Window | None = None
        self._window_start_step = 0
        self._exports: list[threading.Thread] = []
        # Which capture phase touched the current step (training thread; "" none), and
        # the exports in flight / when the last one ended (export threads, under the lock).
        self._step_capture = ""
        self._export_lock = threading.Lock()
        self._exports_running = 0
        self._export_end_ns = 0

        # Attach: the recorder thread sets _attach_pending (one attribute store, no
        # lock); the training thread moves it to _attach_active when the window opens
        # (active first, then pending cleared, so the recorder never sees neither
        # while a request is in hand) and clears _attach_active when it closes.
        self._control: ControlChannel | None = None
        self._attach_pending: AttachRequest | None = None
        self._attach_active: AttachRequest | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Collector:
        """Start collecting on this rank. Never raises for a collection problem."""
        global _active
        if self._started:
            return self
        self._started = True
        try:
            # Under `rankscope run` the launcher's collector owns this rank's files.
            owner = _owner_lookup() if _owner_lookup is not None else None
            with _active_lock:
                owner = owner or _active
                if owner is None:
                    _active = self
            if owner is not None and owner is not self:
                self._delegate = owner
                owner.faults.report(
                    "collector",
                    f"a Collector for {self.run_dir} defers to the one already collecting "
                    f"into {owner.run_dir} (rankscope run's settings win)",
                )
                if not self.steps_from_optimizer:
                    owner._take_manual_steps()
                # else the owner goes on counting optimizer steps until this one's first
                # step() call, which then takes over (_manual_step), as on a Collector of
                # its own with steps_from_optimizer (the framework callbacks' way).
                return self
            self._start()
        except Exception as e:
            self.faults.disable("collector", e)
        return self

    def _start(self) -> None:
        import torch

        self._torch = torch
        start_ns = time.time_ns()
        self._identify()
        self.faults = Faults(f"rank {self.rank}")
        self._attempt = rundir.restart_count()
        if self._attempt > 0:
            # torchrun restarted the job: the attempt before keeps its files, in attemptK/.
            with self.faults.guard("restart"):
                rundir.set_aside_attempt(self.run_dir, self.rank, self.world_size, self._attempt)
        self._meta = self._initial_meta(start_ns)
        self._meta_dirty = True
        run_manifest = self._run_manifest(start_ns) if self.rank == 0 else None
        if self.control_period_s > 0:
            with self.faults.guard("attach"):
                self._control = ControlChannel(
                    self.run_dir,
                    self.rank,
                    self.world_size,
                    self.faults,
                    start_ns=start_ns,
                    current_step=lambda: self._step,
                    capturing=lambda: self._prof is not None,
                    offer=self._offer_attach,
                    withdraw=self._withdraw_attach,
                    poll_s=self.control_period_s,
                    beat_s=max(1.0, self.control_period_s),
                )

        fr_log = None
        # A 1-rank job has collectives too; a lone process gets no log line about them.
        if self.collectives:
            with self.faults.guard("collectives"):
                from rankscope.profiler.collectives import open_log

                fr_log, off = open_log(
                    torch, self.faults, os.environ, distributed=self.world_size > 1
                )
                if off is not None:
                    self._set_meta("collectives", {"absent": off})
            if self.world_size > 1:
                with self.faults.guard("p2p"):
                    from rankscope.profiler import p2p

                    self._p2p = p2p.install(torch)
        auto = None
        if self.auto_capture:
            with self.faults.guard("auto-capture"):
                from rankscope.profiler.autocapture import AutoCapture, Policy

                policy = Policy.from_json(self.auto_capture)
                if self._control is None:
                    self.faults.report("auto-capture", "off: it needs the attach channel")
                elif self.rank == 0:
                    auto = AutoCapture(
                        self.run_dir,
                        self.rank,
                        self.faults,
                        self._control,
                        policy,
                        warmup_steps=self._warmup_steps,
                        current_step=lambda: self._step,
                    )
        if self.data_timing:
            with self.faults.guard("data timing"):
                datawait.install(torch)
                self._data_timed = True

        self._recorder = Recorder(
            self.run_dir,
            self.rank,
            self.faults,
            self._sampler_factory() if self.nvml_period_ms > 0 else None,
            max(self.nvml_period_ms, 1.0) / 1000.0,
            self.flush_period_s,
            self._snapshot_meta,
            run_manifest,
            self._control,
            fr_log,
            auto,
            self._p2p,
        )
        self._recorder.start()
        with self.faults.guard("progress"):
            from rankscope.profiler.progress import ProgressWatch

            self._progress = ProgressWatch(
                self.run_dir, self.rank, self.world_size, self.faults, torch,
                start_ns=start_ns, current=lambda: (self._step, self._step_start_ns),
                stall_after_s=self.stall_after_s, on_terminate=self._on_terminate,
            )  # fmt: skip
            self._progress.start()

        with self.faults.guard("clock"):
            hooks.install()
            if self._dist_initialized():
                self._measure_clock()
            else:
                hooks.on_init(self._on_dist_init)
        hooks.on_destroy(self._on_dist_destroy)
        if self.steps_from_optimizer and self._register_optimizer_hook:
            with self.faults.guard("steps"):
                from torch.optim.optimizer import register_optimizer_step_post_hook

                self._optimizer_hook = register_optimizer_step_post_hook(self._on_optimizer_step)
        if self.metrics_port is not None and self.rank == 0:
            with self.faults.guard("metrics"):
                from rankscope.profiler import exporter

                self._exporter = exporter.start(
                    self.run_dir,
                    self.metrics_port,
                    lambda text: self.faults.report("metrics", text),
                    who=f"rankscope [{self.faults.label}]",
                )
        atexit.register(self.stop)
        if not self.steps_from_optimizer:
            self._step_start_ns = time.time_ns()
            self._begin_step(0)

    def _sampler_factory(self) -> Callable[[], Sampler]:
        device = self._telemetry_device()
        nvml, report = self._nvml, self.faults.report
        torch, local_rank = self._torch, self.local_rank

        def open_it() -> Sampler:
            # Runs on the recorder thread: nvmlInit can take a while.
            return with_torch_memory(open_sampler(nvml, device, report), torch, local_rank, report)

        return open_it

    def stop(self) -> None:
        """Close any profiler window, export it, flush every file. Idempotent."""
        global _active
        if self._delegate is not None or not self._started or self._stopped:
            return
        self._stopped = True
        if os.getpid() != self._pid:
            return  # a forked child: the files and threads belong to the parent
        try:
            atexit.unregister(self.stop)
            hooks.remove(self._on_dist_init)
            hooks.remove(self._on_dist_destroy)
            if self._optimizer_hook is not None:
                self._optimizer_hook.remove()
            self._close_window()
            self._wait_for_exports(_EXPORT_WAIT_S)
            pending, self._attach_pending = self._attach_pending, None
            if pending is not None:
                self._attach_post(pending, "failed", reason=f"the job stopped at step {self._step}")
            with self._meta_lock:
                self._meta["end_ns"] = time.time_ns()
                self._meta["steps_recorded"] = self._step
                self._meta_dirty = True
            if self._exporter is not None:
                from rankscope.profiler import exporter

                exporter.stop(self._exporter)
            if self._progress is not None:
                self._progress.stop()
            if self._recorder is not None:
                self._recorder.stop()
            if self._p2p is not None:
                from rankscope.profiler import p2p

                p2p.close(self._p2p)
        except Exception as e:
            self.faults.report("stop", e)
        finally:
            with _active_lock:
                if _active is self:
                    _active = None

    def _on_terminate(self, wait_s: float) -> None:
        """A signal is about to end the process (SIGTERM, SIGHUP: no atexit, no
        ``stop``): its end time into the meta record and what is buffered onto disk,
        waiting at most ``wait_s``. Runs in the signal handler, on the main thread,
        which may hold a lock: each lock is taken with a timeout, never waited on."""
        if self._meta_lock.acquire(timeout=0.5):
            try:
                self._meta["end_ns"] = time.time_ns()
                self._meta["steps_recorded"] = self._step
                self._meta_dirty = True
            finally:
                self._meta_lock.release()
        if self._recorder is not None:
            self._recorder.request_flush(wait_s)

    def flush(self, wait_s: float = 10.0) -> None:
        """Write out what is buffered now (bounded wait); collection goes on."""
        target = self._delegate or self
        if target._recorder is not None:
            target._recorder.request_flush(wait_s)

    # ------------------------------------------------------------------ steps

    def step(self) -> None:
        """Mark the end of the current training step (and the start of the next)."""
        if self._delegate is not None:
            self._delegate._manual_step()
        else:
            self._manual_step()

    @property
    def current_step(self) -> int:
        return (self._delegate or self)._step

    def _take_manual_steps(self) -> None:
        """A Collector in the code defers to this one: its step() calls now mark steps."""
        if self._steps_source == "manual":
            return
        self._steps_source = "manual"
        self._set_meta("steps_source", "manual")
        if self._step_start_ns is None:
            # Like a Collector of its own: step 0 begins when it starts.
            self._boundary("manual")

    def _manual_step(self) -> None:
        if self._steps_source == "optimizer":
            # The code marks steps itself: stop listening to the optimizer. If the
            # hook already marked this iteration's boundary, this call is the same
            # boundary, not a new step.
            self._steps_source = "manual"
            self._set_meta("steps_source", "manual")
            if self._last_boundary_source == "optimizer":
                self._last_boundary_source = "manual"
                return
        self._boundary("manual")

    def _on_optimizer_step(
        self, optimizer: Any, args: Any = None, kwargs: Any = None, caller: Any = None
    ) -> None:
        """The global optimizer post-hook (``caller``: the frame that runs the hooks)."""
        if self._steps_source == "manual" or self._stopped:
            return
        # With several optimizers (GANs, multi-tower models) only the first one to
        # step keeps time, so one training step is one step.
        if self._clock_optimizer is None:
            self._clock_optimizer = id(optimizer)
        elif id(optimizer) != self._clock_optimizer:
            return
        if caller is None:
            caller = sys._getframe(1)
        if self._profiler_due() and sys.getprofile() is None:
            self._defer_boundary(caller)
        else:
            self._boundary("optimizer")

    def _profiler_due(self) -> bool:
        if self._prof is not None:
            return True
        next_step = 0 if self._step_start_ns is None else self._step + 1
        pending = self._attach_pending
        if pending is not None and pending.first_step - self._warmup_steps <= next_step:
            return True
        if self.plan.empty or self.faults.disabled("profiler"):
            return False
        return self.plan.window_at(next_step) is not None

    def _defer_boundary(self, caller: Any) -> None:
        """Mark the boundary once ``caller`` (torch's optimizer-step wrapper) has returned.

        Post-hooks run inside the ``Optimizer.step#...`` record_function; a
        ProfilerStep edge placed there would cut that range in two (and a window
        stopped there leaves it unfinished). A one-shot profile function on this
        thread waits for the wrapper frame to return, so the edge falls outside
        it. Used only on steps at a profiler window's edges or inside it, and
        only when no other profile function is installed.
        """
        budget = [10_000]  # events; a frame that somehow never returns cannot keep us on

        def on_event(frame: Any, event: str, arg: Any) -> None:
            budget[0] -= 1
            if (frame is caller and event == "return") or budget[0] <= 0:
                sys.setprofile(None)
                self._boundary("optimizer")

        sys.setprofile(on_event)

    def _boundary(self, source: str) -> None:
        if not self._started or self._stopped or _pid != self._pid:
            return
        if self.faults.disabled("steps"):
            return
        try:
            now = time.time_ns()
            self._last_boundary_source = source
            data_ns = datawait.take() if self._data_timed else -1
            # CPU time and run-queue wait of the training thread (rankscope.profiler.cputime)
            cpu, runq = self._thread_clock.read()
            cpu0, runq0 = self._step_clock
            self._step_clock = (cpu, runq)
            if self._step_start_ns is None:
                self._step_start_ns = now
                self._begin_step(0)
                return
            finished = self._step
            capture = self._step_capture
            if not capture and (self._exports_running or self._export_end_ns > self._step_start_ns):
                capture = "export"  # a trace was being written beside this step
            if self._recorder is not None:
                self._recorder.steps.append(
                    (
                        finished,
                        self._step_start_ns,
                        now,
                        data_ns,
                        capture,
                        cpu - cpu0 if min(cpu, cpu0) >= 0 else -1,
                        runq - runq0 if min(runq, runq0) >= 0 else -1,
                    )
                )
            if self._progress is not None:
                self._progress.on_step(finished, self._step_start_ns, now)
            self._step = finished + 1
            self._step_start_ns = now
            self._step_capture = ""
            self._begin_step(finished + 1)
        except Exception as e:
            self.faults.disable("steps", e)

    # ------------------------------------------------------------------ profiler windows

    def _begin_step(self, step: int) -> None:
        """Drive torch.profiler at the start of ``step`` (training thread)."""
        pending = self._attach_pending
        planned = not self.plan.empty and not self.faults.disabled("profiler")
        if self._prof is None and pending is None and not planned:
            return  # the common case with --profile off: two attribute reads
        if self._prof is not None:
            self._advance_window(step)
            self._step_capture = "window" if self._prof is not None else "stop"
        if self._prof is None and pending is not None:
            self._begin_attach(step, pending)
        if self._prof is None and planned:
            try:
                window = self.plan.window_at(step)
                if window is not None and step <= window.last:
                    self._open_window(window, step)
            except Exception as e:
                self._prof = None
                self._window = None
                self.faults.disable("profiler", e)
        if self._prof is not None and not self._step_capture:
            self._step_capture = "start"

    def _advance_window(self, step: int) -> None:
        attach = self._attach_active
        try:
            assert self._window is not None
            if step > self._window.last:
                self._close_window()
            else:
                self._prof.step()
        except Exception as e:
            self._prof = None
            self._window = None
            self._attach_active = None
            if attach is not None:
                self._attach_failed(attach, e)
            else:
                self.faults.disable("profiler", e)

    # ------------------------------------------------------------------ attach

    def _offer_attach(self, request: AttachRequest) -> str | None:
        """A valid request from the control channel (recorder thread): queue it or say why not."""
        begin = max(0, request.first_step - self._warmup_steps)
        current = self._step
        if self.faults.disabled("attach"):
            return "attach is disabled on this rank after an error"
        if self._torch is None or self.faults.disabled("steps"):
            return "this rank does not count steps"
        # Read pending before active: the training thread sets active before it
        # clears pending, so a request in hand is always seen in one or the other.
        busy = self._attach_pending or self._attach_active
        if busy is not None:
            return (
                f"busy with request {busy.id} (steps {busy.first_step}-{busy.last_step}); "
                "one capture at a time"
            )
        if begin <= current:
            return (
                f"start step {request.first_step} is too close: this rank is already at "
                f"step {current} (a window starts at its warm-up step {begin})"
            )
        if request.first_step - current > rundir.MAX_ATTACH_LEAD_STEPS:
            return (
                f"start step {request.first_step} is more than {rundir.MAX_ATTACH_LEAD_STEPS} "
                f"steps ahead of this rank (at step {current})"
            )
        if not self.plan.empty:
            window = self.plan.window_at(begin) or self.plan.next_window(begin)
            if window is not None and window.begin <= request.last_step:
                return (
                    f"steps {request.first_step}-{request.last_step} overlap the configured "
                    f"profiler window {window.first}-{window.last}"
                )
        self._attach_pending = request
        return None

    def _withdraw_attach(self, request: AttachRequest) -> bool:
        """Drop ``request`` if its window has not opened (recorder thread; see control)."""
        if self._attach_pending is not request:
            return False
        self._attach_pending = None
        # The training thread sets active before it clears pending: a window that
        # opened meanwhile shows here, and then the request was not withdrawn.
        return self._attach_active is not request

    def _begin_attach(self, step: int, request: AttachRequest) -> None:
        """Open the requested window once its warm-up step begins (training thread)."""
        try:
            begin = max(0, request.first_step - self._warmup_steps)
            if step < begin:
                return
            if self.faults.disabled("attach"):
                self._attach_pending = None
                return
            if step > request.first_step:
                self._attach_pending = None
                self._attach_post(
                    request,
                    "failed",
                    reason=f"missed: this rank was at step {step} when the window was due "
                    f"to start at step {begin} (another profiler window was running, or the "
                    "request arrived too late)",
                )
                return
            self._attach_active = request
            self._attach_pending = None
            self._open_window(
                Window(request.first_step, request.last_step, request.first_step - step), step
            )
            if self._prof is None:
                self._attach_active = None
                self._attach_post(request, "failed", reason="another torch.profiler is active")
            else:
                self._attach_post(request, "started")
                if self._control is not None:
                    self._control.window_opened(request)
        except Exception as e:
            self._prof = None
            self._window = None
            self._attach_active = None
            self._attach_pending = None
            self._attach_failed(request, e)

    def _attach_post(self, request: AttachRequest, state: str, **fields: Any) -> None:
        control = self._control
        if control is not None:
            control.post(request, state, **fields)

    def _attach_failed(self, request: AttachRequest, error: BaseException) -> None:
        self._attach_post(request, "failed", reason=f"{type(error).__name__}: {error}")
        self.faults.disable("attach", error)

    def _open_window(self, window: Window, step: int) -> None:
        torch = self._torch
        from torch.autograd import profiler as autograd_profiler
        from torch.profiler import ProfilerAction, ProfilerActivity, profile

        if autograd_profiler._is_profiler_enabled:
            # The job runs its own profiler; Kineto allows one at a time, and theirs wins.
            self.faults.report(
                "profiler",
                f"skipped steps {window.first}-{window.last}: another torch.profiler is active",
            )
            return

        def action(n: int) -> Any:
            if n < window.first:
                return ProfilerAction.WARMUP
            if n < window.last:
                return ProfilerAction.RECORD
            if n == window.last:
                return ProfilerAction.RECORD_AND_SAVE
            return ProfilerAction.NONE

        # torch.profiler numbers ProfilerStep#N from its own step_num, starting at 0
        # and asking the schedule for step 0 in its constructor. Offset the schedule
        # for that first question, then set step_num to the collector's step so that
        # every ProfilerStep#N it writes is collector step N.
        offset = [step]
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            activities.append(ProfilerActivity.CUDA)
        prof = profile(
            activities=activities,
            schedule=lambda n: action(n + offset[0]),
            on_trace_ready=self._on_trace_ready,
            record_shapes=self.record_shapes,
            profile_memory=self.profile_memory,
            with_stack=self.with_stack,
        )
        prof.step_num = step
        offset[0] = 0
        self._window = window
        self._window_start_step = step
        self._prof = prof
        prof.__enter__()

    def _close_window(self) -> None:
        prof, self._prof = self._prof, None
        if prof is not None:
            try:
                prof.__exit__(None, None, None)  # saves the trace if it was recording
            finally:
                self._window = None
                self._attach_active = None

    def _on_trace_ready(self, prof: Any) -> None:
        # Called by torch.profiler on the training thread: hand off and return.
        window = self._window
        if window is None:
            return
        first = max(window.first, self._window_start_step)
        # Normally this runs as step window.last + 1 begins; when collection stops
        # (or the job tears down) inside the window, the current step is unfinished
        # and the window ends at the step before it.
        last = min(window.last, self._step - 1)
        request = self._attach_active
        if last < first:
            if request is not None:
                self._attach_post(request, "failed", reason="the job stopped before the window")
            return  # no finished step was recorded: nothing worth a file
        t = threading.Thread(
            target=self._export,
            args=(prof, first, last, request),
            name="rankscope-export",
            daemon=True,
        )
        self._exports = [e for e in self._exports if e.is_alive()]
        self._exports.append(t)
        with self._export_lock:  # counted before it starts: the next step sees it running
            self._exports_running += 1
        try:
            t.start()
        except BaseException:
            with self._export_lock:
                self._exports_running -= 1
            raise

    def _spawn_ingest(self) -> None:
        """``rankscope ingest`` of this rank's traces, niced, in its own session (so a
        signal to the job's process group does not reach it); skipped while the
        previous one still runs (the next one ingests every window)."""
        import shutil
        import subprocess

        if self._ingest_proc is not None and self._ingest_proc.poll() is None:
            return
        env = {k: v for k, v in os.environ.items() if k not in settings.ENV_ALL}
        # The same rankscope as this collector's, without the bootstrap (no autostart).
        bootstrap = os.environ.get(settings.ENV_BOOTSTRAP)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != bootstrap]
        env["PYTHONPATH"] = os.pathsep.join([settings.package_path(), *parts])
        cmd = [sys.executable, "-m", "rankscope", "ingest", str(self.run_dir)]
        cmd += ["--ranks", str(self.rank)]
        nice = shutil.which("nice")
        if nice:
            cmd = [nice, "-n", "19", *cmd]
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._ingest_proc = proc

        def reap() -> None:
            _, err = proc.communicate()
            if proc.returncode:
                tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
                self.faults.report("ingest", f"exit {proc.returncode}: {tail[0]}")

        threading.Thread(target=reap, name="rankscope-ingest", daemon=True).start()

    def _export(
        self, prof: Any, first: int, last: int, request: AttachRequest | None = None
    ) -> None:
        # Not niced: the thread holds the GIL while torch writes the trace, and a niced
        # holder starved of CPU by other processes would keep the training thread waiting.
        try:  # _on_trace_ready counted this export as running
            self._export_now(prof, first, last, request)
        finally:
            with self._export_lock:
                self._exports_running -= 1
                self._export_end_ns = time.time_ns()

    def _export_now(
        self, prof: Any, first: int, last: int, request: AttachRequest | None = None
    ) -> None:
        from rankscope.profiler.export import export_window, origin_tag

        try:
            if self._recorder is not None:
                self._recorder.ready.wait(30)  # the run directory exists by then
            if self.faults.disabled("run directory"):
                if request is not None:
                    self._attach_post(request, "failed", reason="cannot write the run directory")
                return
            tag = origin_tag(rundir.run_id_from_env(), self.rank, self._attempt, first, last)
            window = export_window(prof, self.run_dir, self.rank, first, last, tag)
            if request is not None:
                window["request"] = request.id
                if request.trigger is not None:
                    window["trigger"] = request.trigger
            with self._meta_lock:
                self._meta.setdefault("windows", []).append(window)
                self._meta_dirty = True
            if request is not None:
                # Posted after the manifest change: the recorder's flush writes the
                # manifest before the acks, so "done" means the report will see it.
                self._attach_post(
                    request, "done", first_step=first, last_step=last, file=window["file"]
                )
            if window.get("renumbered_by"):
                self.faults.report(
                    "profiler",
                    f"torch.profiler's step numbers were off by {window['renumbered_by']}",
                )
            if self._recorder is not None:
                self._recorder.request_flush()
            if self.ingest:
                try:
                    self._spawn_ingest()
                except Exception as e:  # the window is written; only the head start is lost
                    self.faults.report("ingest", e)
        except Exception as e:
            self.faults.report(f"export steps {first}-{last}", e)
            if request is not None:
                self._attach_post(request, "failed", reason=f"export: {type(e).__name__}: {e}")

    def _wait_for_exports(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for t in self._exports:
            t.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ torch.distributed

    def _dist_initialized(self) -> bool:
        dist = self._torch.distributed
        return bool(dist.is_available() and dist.is_initialized())

    def _on_dist_init(self) -> None:
        hooks.remove(self._on_dist_init)
        with self.faults.guard("clock"):
            dist = self._torch.distributed
            if int(dist.get_rank()) != self.rank:
                self.faults.report(
                    "collector",
                    f"torch.distributed says rank {dist.get_rank()}, files use rank {self.rank}",
                )
            self._measure_clock()

    def _on_dist_destroy(self) -> None:
        # The job is tearing down: get the window and buffers onto disk now, while
        # the process surely still lives; collection goes on if the job does.
        if self._stopped or os.getpid() != self._pid:
            return
        try:
            self._close_window()
            self._wait_for_exports(_EXPORT_WAIT_S)
            if self._recorder is not None:
                self._recorder.poll_collectives = True  # every collective has completed now
            self.flush()
        except Exception as e:
            self.faults.report("flush at destroy_process_group", e)

    def _measure_clock(self) -> None:
        from rankscope.profiler.clock import measure_clock_offset

        token = hashlib.sha1(
            f"{self.run_dir}|{os.environ.get('TORCHELASTIC_RESTART_COUNT', '')}".encode()
        ).hexdigest()[:12]
        offset, method = measure_clock_offset(
            self._torch.distributed, token, timeout_s=self._clock_timeout_s
        )
        with self._meta_lock:
            self._meta["clock_offset_ns"] = offset
            self._meta["clock_offset_method"] = method
            self._meta_dirty = True

    # ------------------------------------------------------------------ identity and manifests

    def _identify(self) -> None:
        dist = self._torch.distributed
        if dist.is_available() and dist.is_initialized():
            self.rank = int(dist.get_rank())
            self.world_size = int(dist.get_world_size())
        else:
            self.rank, self.world_size = rank_and_world(os.environ)
        self.local_rank = _env_int("LOCAL_RANK") or 0
        self._place = placement(os.environ)
        if self._place.local_rank is not None and _env_int("LOCAL_RANK") is None:
            self.local_rank = self._place.local_rank  # Slurm's SLURM_LOCALID

    def _telemetry_device(self) -> str | None:
        from rankscope.profiler.telemetry import cuda_visible_device

        torch = self._torch
        # Never initialise CUDA here (a fork after that breaks the job's CUDA use):
        # ask torch only if the job already did, else assume torchrun's convention.
        index = self.local_rank
        try:
            if torch.cuda.is_initialized():
                index = int(torch.cuda.current_device())
        except Exception:
            pass
        return cuda_visible_device(index)

    def _initial_meta(self, start_ns: int) -> dict[str, Any]:
        torch = self._torch
        nccl: str | None = None
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:
            pass
        return {
            "schema": rundir.RANK_SCHEMA,
            "rank": self.rank,
            "run_id": rundir.run_id_from_env(),
            "attempt": self._attempt,
            "local_rank": self.local_rank,
            "world_size": self.world_size,
            "host": self._place.host,
            "node_rank": self._place.node,
            "placement_source": self._place.source,
            "pid": os.getpid(),
            "device_name": None,
            "torch_version": str(torch.__version__),
            "cuda_version": torch.version.cuda,
            "nccl_version": nccl,
            "python_version": sys.version.split()[0],
            "rankscope_version": __version__,
            "start_ns": start_ns,
            "clock_offset_ns": 0,
            "clock_offset_method": "not-distributed",
            "steps_source": self._steps_source,
            "profile": self.plan.to_json(),
            "windows": [],
        }

    def _run_manifest(self, start_ns: int) -> dict[str, Any]:
        return {
            "schema": rundir.RUN_SCHEMA,
            "run_id": rundir.run_id_from_env(),
            "attempt": self._attempt,
            "world_size": self.world_size,
            "start_ns": start_ns,
            "command": self._command if self._command is not None else list(sys.orig_argv),
            "config": {
                "profile": self.plan.to_json(),
                "record_shapes": self.record_shapes,
                "profile_memory": self.profile_memory,
                "with_stack": self.with_stack,
                "nvml_period_ms": self.nvml_period_ms,
                "steps_source": self._steps_source,
                "data_timing": self.data_timing,
                "collectives": self.collectives,
                "auto_capture": _jsonable(self.auto_capture),
                "ingest": self.ingest,
                **self._run_config,
            },
            "rankscope_version": __version__,
        }

    def _set_meta(self, key: str, value: Any) -> None:
        with self._meta_lock:
            self._meta[key] = value
            self._meta_dirty = True

    def _snapshot_meta(self) -> dict[str, Any] | None:
        """The rank manifest if it changed since the last write (recorder thread)."""
        recorder = self._recorder
        with self._meta_lock:
            if recorder is not None and recorder.sampler_info:
                for k, v in recorder.sampler_info.items():
                    if self._meta.get(k) != v:
                        self._meta[k] = v
                        self._meta_dirty = True
                if self._meta.get("device_name") is None:
                    self._meta["device_name"] = recorder.sampler_info.get("device_name", "cpu")
            if self._p2p is not None and self._meta.get("p2p") != (info := self._p2p.describe()):
                self._meta["p2p"] = info
                self._meta_dirty = True
            fr_log = recorder.collectives if recorder is not None else None
            if fr_log is not None:
                info = fr_log.describe()
                if self._meta.get("collectives") != info:
                    self._meta["collectives"] = info
                    self._meta_dirty = True
            if not self._meta_dirty:
                return None
            self._meta_dirty = False
            return copy.deepcopy(self._meta)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _forget_in_child() -> None:
    # After fork the child has the collector's objects but none of its threads;
    # the child must not write the parent's rank files.
    global _active, _pid
    _active = None
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
