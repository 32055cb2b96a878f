"""Progress, not liveness: notice a stalled rank and leave evidence on the way down.

``ProgressWatch`` is fed by the training thread (``on_step``: one deque append per
step) and runs its own daemon thread, so a busy or stuck recorder thread never
delays a verdict. About every ``tick_s`` it compares the time since the
training thread's last step boundary with the stall threshold (default
``max(60 s, 10 x the median of the last 64 steps)``; the 60 s floor comes from
``stall_after_s`` or ``$RANKSCOPE_STALL_S``). It rewrites ``rank{R}.progress.json``
every ``PROGRESS_PERIOD_S`` and at once when the state changes; a rank past the
threshold is ``stalled``: its flight-recorder ring is read (every
``STALLED_RING_PERIOD_S`` while stalled, never while it runs: a read holds the
GIL) and ``rank{R}.hang.json`` is written once per stall (formats and bounds in
``rankscope.profiler.evidence``). A rank is judged only once step 0 has begun:
before it, start-up (loading, compiling) has no step time to compare with.

On the way down the same evidence is written, from the thread that sees it:
an unhandled exception (``sys.excepthook``, chained; a c10d error or timeout is
a ``collective_error``) and SIGTERM/SIGINT (handlers installed only from the
main thread, chained to the previous handler; a default action is re-raised
with the default disposition, an ignored signal stays ignored). Python runs
signal handlers only between bytecodes, so a rank blocked inside a C++
collective would run its handler only when the call returns (often never: the
launcher's SIGKILL follows). The C-level handler, though, writes the signal's
number to ``signal.set_wakeup_fd`` at once: where no one else set a wakeup fd,
this thread owns one, sees SIGTERM/SIGINT within milliseconds and writes the
signal evidence itself (the training thread's stack is the blocked frame); the
handler's own write is then skipped. A forked child drops the wakeup fd. Nothing
here raises into the job.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from rankscope.profiler import evidence as ev
from rankscope.profiler.faults import Faults
from rankscope.profiler.layout import restart_count, run_id_from_env

ENV_STALL_S = "RANKSCOPE_STALL_S"
DEFAULT_STALL_S = 60.0
STEP_MULTIPLE = 10.0
PROGRESS_PERIOD_S = 2.0
STALLED_RING_PERIOD_S = 5.0
_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")  # SIGHUP: the terminal closed
FINAL_FLUSH_S = 2.0  # the most a terminating signal waits for the rank's last records
_COLLECTIVE_ERRORS = ("DistBackendError", "DistError", "DistNetworkError", "DistStoreError")
_COLLECTIVE_WORDS = ("timed out", "timeout", "gloo", "nccl", "connection closed by peer")


def stall_floor_s(value: float | None, environ: Any = os.environ) -> float:
    if value is not None and value > 0:
        return float(value)
    with contextlib.suppress(KeyError, ValueError):
        from_env = float(environ[ENV_STALL_S])
        if from_env > 0:
            return from_env
    return DEFAULT_STALL_S


def is_collective_error(exc: BaseException) -> bool:
    names = {t.__name__ for t in type(exc).__mro__}
    if names & set(_COLLECTIVE_ERRORS):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _COLLECTIVE_WORDS)


class ProgressWatch:
    def __init__(
        self,
        run_dir: Path,
        rank: int,
        world_size: int,
        faults: Faults,
        torch: Any,
        *,
        start_ns: int,
        current: Callable[[], tuple[int, int | None]],
        stall_after_s: float | None = None,
        tick_s: float | None = None,
        on_terminate: Callable[[float], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.world_size = world_size
        self.faults = faults
        self._torch = torch
        self._start_ns = start_ns
        self._current = current  # () -> (current step, its start ns or None)
        # (wait_s) -> None: write what the rank holds, before a signal ends the process
        self._on_terminate = on_terminate
        self.floor_s = stall_floor_s(stall_after_s)
        self.tick_s = tick_s if tick_s is not None else min(1.0, self.floor_s / 4)
        self._attempt = restart_count()
        self._run_id = run_id_from_env()
        self._host = socket.gethostname()
        self._durations: deque[int] = deque(maxlen=64)
        self._last: tuple[int, int, int] | None = None  # (step, start_ns, end_ns)
        self._training_thread = threading.get_ident()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stalled_since: int | None = None
        self._stall_written = False
        self._last_collectives: list[ev.FrEntry] = []
        self._p2p: list[ev.P2PEntry] = []  # sends/receives not completed, while stalled
        self._next_ring = 0.0
        self._next_progress = 0.0
        self._pid = os.getpid()  # a forked child (a DataLoader worker) inherits the hooks
        self._prev_excepthook: Any = None
        self._prev_signals: dict[int, Any] = {}
        self._wakeup: tuple[int, int] | None = None  # (read, write) of our wakeup pipe
        self._fatal: tuple[Path, Any] | None = None  # our faulthandler file, while enabled
        self._signals_seen: set[int] = set()  # signal evidence written (or being written)
        self._signal_lock = threading.RLock()  # held while it is written: the other waits
        self.written: list[Path] = []

    # --- the training thread ---

    def on_step(self, step: int, start_ns: int, end_ns: int) -> None:
        self._durations.append(end_ns - start_ns)
        self._last = (step, start_ns, end_ns)

    # --- lifecycle ---

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._install_hooks()
        self._thread = threading.Thread(
            target=self._run, name=f"rankscope-progress-{self.rank}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        wakeup = self._wakeup
        if wakeup is not None:
            # Wake the watch thread out of its tick-long select (byte 0 is no signal).
            with contextlib.suppress(OSError):
                os.write(wakeup[1], b"\0")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._uninstall_hooks()
        with contextlib.suppress(Exception):
            self._write_progress(time.time_ns(), "stopped")

    # --- state ---

    def median_step_s(self) -> float | None:
        durations = sorted(self._durations)
        return durations[len(durations) // 2] / 1e9 if durations else None

    def threshold_s(self) -> float:
        median = self.median_step_s()
        return max(self.floor_s, STEP_MULTIPLE * median) if median is not None else self.floor_s

    def step_state(self) -> ev.StepState:
        current, current_start = self._current()
        last = self._last
        return ev.StepState(
            last_step=last[0] if last else -1,
            last_start_ns=last[1] if last else None,
            last_end_ns=last[2] if last else None,
            current_step=current,
            current_start_ns=current_start,
            median_step_s=self.median_step_s(),
        )

    def _run(self) -> None:
        while not self._wait(self.tick_s):
            try:
                self.tick(time.time_ns())
            except Exception as e:
                self.faults.disable("progress", e)
                return

    def _wait(self, timeout: float) -> bool:
        """Sleep ``timeout`` (True once stopped), handling signals that arrive meanwhile.

        One wake-up per tick: a signal's byte or ``stop()``'s (byte 0) on the wakeup
        pipe ends the wait early, so there is no shorter poll for either.
        """
        wakeup = self._wakeup
        if wakeup is None:
            return self._stop.wait(timeout)
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                ready, _, _ = select.select([wakeup[0]], [], [], left)
                data = os.read(wakeup[0], 64) if ready else b""
            except OSError:
                self._wakeup = None  # closed under us: back to the plain wait
                return self._stop.wait(max(0.0, left))
            for signum in set(data):
                if signum in self._prev_signals:
                    self._signal_evidence(signum)
        return True

    def _signal_evidence(self, signum: int) -> None:
        """Signal evidence once per signal, from whichever thread sees it first.

        The other waits (at most 5 s) until it is on disk: the main thread's handler
        goes on to the default action, which ends the process.
        """
        got = self._signal_lock.acquire(timeout=5.0)
        try:
            if signum in self._signals_seen:
                return
            self._signals_seen.add(signum)
            with contextlib.suppress(Exception):
                self.write_evidence("signal", signal.Signals(signum).name)
        finally:
            if got:
                self._signal_lock.release()

    def tick(self, now_ns: int) -> None:
        """One look at the training thread's progress (the watch thread; tests call it)."""
        _, since = self._current()
        stalled = since is not None and (now_ns - since) / 1e9 > self.threshold_s()
        mono = time.monotonic()
        if stalled and self._stalled_since is None:
            self._stalled_since = since
            self._next_ring = 0.0
        elif not stalled and self._stalled_since is not None:
            self._stalled_since, self._stall_written = None, False
            self._last_collectives, self._p2p = [], []
            self._next_progress = 0.0
        if stalled and since is not None and mono >= self._next_ring:
            self._next_ring = mono + STALLED_RING_PERIOD_S
            if not self._stall_written:
                self._stall_written = True
                self._write_progress(now_ns, "stalled")  # the verdict first, then the bulk
                self.write_evidence("stall", f"no step for {(now_ns - since) / 1e9:.1f} s")
                self._write_progress(now_ns, "stalled")  # now with the last collectives
            else:
                with contextlib.suppress(Exception):
                    _, ring, _ = ev.read_ring(self._torch)
                    self._last_collectives = ev.last_per_group(ring)
                self._p2p = self._p2p_snapshot()
            self._next_progress = 0.0
        if mono >= self._next_progress:
            self._next_progress = mono + PROGRESS_PERIOD_S
            self._write_progress(now_ns, "stalled" if stalled else "running")

    def _p2p_snapshot(self) -> list[ev.P2PEntry]:
        """The sends and receives not completed now (``rankscope.profiler.p2p``)."""
        try:
            from rankscope.profiler import p2p

            return [ev.P2PEntry(**e) for e in p2p.snapshot()]
        except Exception as e:
            self.faults.report("progress", f"point-to-point log unreadable: {e}")
            return []

    def _write_progress(self, now_ns: int, state: ev.State) -> None:
        if self.faults.disabled("progress"):
            return
        progress = ev.Progress(
            schema=ev.PROGRESS_SCHEMA,
            rank=self.rank,
            world_size=self.world_size,
            pid=os.getpid(),
            host=self._host,
            attempt=self._attempt,
            collector_start_ns=self._start_ns,
            ts_ns=now_ns,
            state=state,
            threshold_s=round(self.threshold_s(), 3),
            step=self.step_state(),
            stalled_since_ns=self._stalled_since,
            last_collectives=self._last_collectives,
            run_id=self._run_id,
            p2p=self._p2p,
        )
        ev.write_progress(ev.progress_path(self.run_dir, self.rank), progress)

    # --- evidence ---

    def write_evidence(
        self, trigger: ev.Trigger, detail: str, exc: BaseException | None = None
    ) -> Path | None:
        """Ring, stacks and steps into the next free ``rank{R}.hang.json``; never raises."""
        if os.getpid() != self._pid:
            return None  # a forked child: not the rank's training process
        if not self._lock.acquire(timeout=5.0):
            return None  # another write is under way (and bounded): it says enough
        try:
            source: str = ""
            ring: list[ev.FrEntry] = []
            groups: list[ev.ProcessGroupInfo] = []
            try:
                source, ring, groups = ev.read_ring(self._torch)
            except Exception as e:
                self.faults.report("progress", f"flight recorder unreadable: {e}")
            p2p_ops = self._p2p_snapshot()
            if trigger == "stall":
                self._last_collectives = ev.last_per_group(ring)
                self._p2p = p2p_ops
            record = ev.Evidence(
                schema=ev.EVIDENCE_SCHEMA,
                rank=self.rank,
                world_size=self.world_size,
                pid=os.getpid(),
                host=self._host,
                attempt=self._attempt,
                collector_start_ns=self._start_ns,
                ts_ns=time.time_ns(),
                trigger=trigger,
                detail=detail,
                threshold_s=round(self.threshold_s(), 3),
                step=self.step_state(),
                ring=ring,
                process_groups=groups,
                threads=ev.thread_stacks(self._training_thread),
                exception=ev.exception_info(exc) if exc is not None else None,
                ring_source=source,
                run_id=self._run_id,
                p2p=p2p_ops,
            )
            path = ev.write_evidence(self.run_dir, self.rank, record)
            if path is not None:
                self.written.append(path)
                self.faults.log("progress", f"{trigger}: {detail}; evidence in {path.name}")
            return path
        except Exception as e:
            self.faults.report("progress", e)
            return None
        finally:
            self._lock.release()

    # --- the way down: exceptions and signals ---

    def _install_hooks(self) -> None:
        self._prev_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self._enable_faulthandler()
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name in _SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) == signal.SIG_IGN:
                    continue  # ignored (nohup): it ends nothing, so it is no evidence
                self._prev_signals[signum] = signal.signal(signum, self._on_signal)
        if self._prev_signals:
            self._own_wakeup_fd()

    def _own_wakeup_fd(self) -> None:
        """Take the process's signal wakeup fd, unless someone (asyncio) holds it."""
        r, w = os.pipe()
        try:
            os.set_blocking(w, False)
            os.set_blocking(r, False)
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError):
            os.close(r)
            os.close(w)
            return
        if old != -1:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return
        self._wakeup = (r, w)
        with contextlib.suppress(Exception):
            os.register_at_fork(after_in_child=self._forget_wakeup_fd)

    def _forget_wakeup_fd(self) -> None:
        # A forked child (a DataLoader worker): its signals are not the rank's.
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is None or os.getpid() == self._pid:
            return
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
        for fd in wakeup:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _enable_faulthandler(self) -> None:
        """A fatal signal's Python stacks into ``rank{R}.fatal.txt`` (see evidence).

        Only where the job has not enabled faulthandler itself (its choice stands).
        """
        if faulthandler.is_enabled():
            return
        try:
            opened = ev.open_fatal(self.run_dir, self.rank)
            if opened is None:
                return
            faulthandler.enable(file=opened[1], all_threads=True)
        except Exception as e:
            self.faults.report("progress", f"faulthandler not enabled: {e}")
            return
        self._fatal = opened
        with contextlib.suppress(Exception):
            os.register_at_fork(after_in_child=self._child_drops_faulthandler)

    def _child_drops_faulthandler(self) -> None:
        # A forked child (a DataLoader worker) must not write its crash as the rank's.
        if self._fatal is not None and os.getpid() != self._pid:
            self._fatal = None
            with contextlib.suppress(Exception):
                faulthandler.disable()

    def _disable_faulthandler(self) -> None:
        fatal, self._fatal = self._fatal, None
        if fatal is None:
            return
        path, f = fatal
        with contextlib.suppress(Exception):
            faulthandler.disable()
        with contextlib.suppress(Exception):
            f.close()
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()

    def _uninstall_hooks(self) -> None:
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_excepthook
        self._disable_faulthandler()
        if threading.current_thread() is not threading.main_thread():
            return
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            with contextlib.suppress(ValueError, OSError):
                current = signal.set_wakeup_fd(-1)
                if current != wakeup[1]:
                    signal.set_wakeup_fd(current)  # someone took it since: leave theirs
            for fd in wakeup:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for signum, prev in self._prev_signals.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        self._prev_signals = {}

    def _excepthook(
        self, kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        # A KeyboardInterrupt is SIGINT's default handler at work: already written.
        if not isinstance(exc, KeyboardInterrupt):
            with contextlib.suppress(Exception):
                trigger: ev.Trigger = (
                    "collective_error" if is_collective_error(exc) else "exception"
                )
                self.write_evidence(trigger, f"{kind.__name__}: {str(exc)[:300]}", exc)
        prev = self._prev_excepthook or sys.__excepthook__
        prev(kind, exc, tb)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal_evidence(signum)
        prev = self._prev_signals.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:
            # The default action (terminate): first the records the rank holds (steps,
            # collectives, its end time), bounded; then restore it and deliver again.
            if self._on_terminate is not None:
                with contextlib.suppress(Exception):
                    self._on_terminate(FINAL_FLUSH_S)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


# ---------------------------------------------------------------------- reading, for --status


def _group(pg: str, desc: str) -> str:
    return "the default group" if pg == "0" or desc == "default_pg" else f"group {pg}"


def _who(ranks: list[int]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return "ranks " + ", ".join(map(str, ranks[:-1])) + f" and {ranks[-1]}"


def stall_lines(records: dict[int, ev.Progress], now_ns: int) -> list[str]:
    """One line per stalled rank: how long without a step, and where it stands against
    the others in each group (the ranks' last collectives, read at the stall).

    A rank that has not begun its first step is not judged (start-up has no step time
    to compare with), but past its threshold since the collector started it gets a
    line saying so: a hang before the first step looks like a long start-up.

    A rank "has not issued" a group's newest collective only while some rank waits in
    it (issued, not completed): a collective one rank completed, every member issued,
    so a rank without it is no member. A rank with no entry of a group at all is said
    to be behind in the default group only (everyone's); a subgroup's membership is
    not in the progress records, and a guess would name a rank outside it.
    """
    lines = []
    front: dict[str, _Front] = {}
    for rank, p in records.items():
        for x in p.last_collectives:
            f = front.get(x.pg)
            if f is None or x.seq > f.seq:
                front[x.pg] = f = _Front(x.seq, x.name, x.pg_desc)
            if x.seq == f.seq:
                if x.completed:
                    f.completed = True
                else:
                    f.waiting.append(rank)
                    f.entered_ns = min(f.entered_ns or x.enqueue_ns, x.enqueue_ns)
    for rank, p in sorted(records.items()):
        if p.state == "running" and p.step.current_start_ns is None and p.step.last_step < 0:
            # Not judged before its first step (nothing to compare with), but not "fine"
            # either past the threshold: a start-up hang looks exactly like this.
            waited = (now_ns - p.collector_start_ns) / 1e9
            if waited > p.threshold_s:
                lines.append(
                    f"rank {rank}: no first step after {waited:.0f} s (loading or compiling,"
                    " or stuck before its first optimizer step; `py-spy dump --pid"
                    f" {p.pid}` shows where)"
                )
            continue
        if p.state != "stalled":
            continue
        since = p.stalled_since_ns or p.step.current_start_ns or p.ts_ns
        text = (
            f"rank {rank}: no step for {(now_ns - since) / 1e9:.0f} s (step {p.step.current_step})"
        )
        mine = {x.pg: x for x in p.last_collectives}
        behind, inside = [], []
        # A rank that has not read its ring yet (its first stalled record) says nothing.
        for pg, f in sorted(front.items()) if mine else ():
            last = mine.get(pg)
            if last is not None and not last.completed and last.seq >= f.seq:
                inside.append(f"waits in {last.name} seq {last.seq} on {_group(pg, f.desc)}")
                continue
            missing = last is None and _group(pg, f.desc) == "the default group"
            behind_it = missing or (last is not None and last.seq < f.seq)
            if behind_it and f.waiting and f.entered_ns is not None and not f.completed:
                ago = (now_ns - f.entered_ns) / 1e9
                behind.append(
                    f"has not issued {f.op} seq {f.seq} on {_group(pg, f.desc)} that "
                    f"{_who(sorted(f.waiting))} entered {ago:.0f} s ago"
                )
        parts = behind or inside
        if not parts:
            parts = _p2p_parts(rank, p, records, now_ns)
        lines.append(text + ("; " + "; ".join(parts) if parts else ""))
    return lines


def _p2p_parts(
    rank: int, p: ev.Progress, records: dict[int, ev.Progress], now_ns: int
) -> list[str]:
    """A stalled rank's sends and receives (a pipeline): the one it waits in, else the
    ranks waiting for it in theirs."""
    mine = ev.p2p_waits(p.p2p, "in_flight")
    if mine:
        x = min(mine, key=lambda y: y.enqueue_ns)
        assert x.wait_start_ns is not None
        to = "to" if x.name == "send" else "from"
        return [
            f"waits in {x.name} {to} rank {x.peer} for {(now_ns - x.wait_start_ns) / 1e9:.0f} s"
        ]
    waiting = sorted(
        r
        for r, q in records.items()
        if r != rank and any(x.peer == rank for x in ev.p2p_waits(q.p2p, "in_flight"))
    )
    return [f"{_who(waiting)} wait for it in send/recv"] if waiting else []


@dataclass
class _Front:
    """A group's newest collective among the ranks' last ones."""

    seq: int
    op: str
    desc: str
    waiting: list[int] = field(default_factory=list)  # issued it, not completed
    entered_ns: int | None = None  # the earliest of their enqueue times
    completed: bool = False  # some rank completed it: every member issued it
