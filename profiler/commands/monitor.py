"""``rankscope monitor``: GPU telemetry of a job without the collector, from outside it.

Parses the options, opens NVML (``pynvml`` or an injected module), runs
``rankscope.profiler.monitor.Monitor`` until Ctrl-C, SIGTERM or ``--duration``, and always
closes it, so every sample taken is on disk when the command returns. Without a
usable NVIDIA GPU it exits with EXIT_ENVIRONMENT and one line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from rankscope.profiler import rundir
from rankscope.profiler.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, RankscopeError
from rankscope.profiler.exporter import pid_exists
from rankscope.profiler.monitor import Monitor


def parse_pids(values: list[str]) -> set[int]:
    pids: set[int] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) <= 0:
                raise RankscopeError(f"--pids: {part!r} is not a process id")
            pids.add(int(part))
    if not pids:
        raise RankscopeError("--pids: no process id given")
    return pids


class SignalStop:
    """Set by SIGINT/SIGTERM without taking a lock; ``Monitor.run`` waits on it.

    A ``threading.Event`` set from a signal handler can deadlock: the handler
    runs in the main thread, which may be inside ``Event.wait`` holding the
    Event's own lock at that moment (seen as a monitor that never stopped on
    SIGTERM). Here the handler only stores the signal number, and the wait is a
    ``select`` on the wakeup fd the interpreter writes to on every signal, so
    a signal ends the wait at once whenever it comes.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._old_fd: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> SignalStop:
        with contextlib.suppress(ValueError):  # not the main thread: poll instead
            self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        if self._old_fd is not None:
            signal.set_wakeup_fd(self._old_fd)
        for fd in (self._read, self._write):
            os.close(fd)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until a signal; True once stopped."""
        if self.signum is None:
            wait = timeout if self._old_fd is not None else min(timeout, 0.1)
            readable, _, _ = select.select([self._read], [], [], wait)
            if readable:
                with contextlib.suppress(OSError):
                    os.read(self._read, 512)
        return self.signum is not None


def _nvml_error(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.removeprefix("NVMLError_")


class MonitorCommand:
    """Sample the GPUs of a job that runs without rankscope, from outside it.

    Finds the job's processes through NVML and records, per process, the
    telemetry of its GPU (utilisation, memory, power, clocks, PCIe/NVLink, GPM)
    and its own share of it (process SM utilisation and memory) into a run
    directory that `rankscope report` and the dashboard read like any other.
    A process's rank comes from RANK / LOCAL_RANK in its environment when
    /proc/PID/environ is readable (same user or root), else from GPU order.
    Stops on Ctrl-C, SIGTERM or after --duration, with everything flushed.

    examples:
      rankscope monitor --out runs/monitor1 --all
      rankscope monitor --out runs/monitor2 --pids 4242,4243 --period-ms 200
      rankscope monitor --out runs/monitor3 --all --duration 600
    """

    name = "monitor"

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml  # a pynvml-compatible module; None imports pynvml

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--pids",
            nargs="+",
            metavar="PID",
            help="only these processes (comma or space separated)",
        )
        which.add_argument(
            "--all", action="store_true", help="every process on every GPU (the default)"
        )
        parser.add_argument(
            "--period-ms",
            type=float,
            default=100.0,
            metavar="N",
            help="sampling period (default 100)",
        )
        parser.add_argument(
            "--duration", type=float, metavar="SEC", help="stop by itself after SEC seconds"
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace the files of an earlier run in DIR"
        )

    def _open_nvml(self) -> Any:
        if self._nvml is not None:
            return self._nvml
        try:
            import pynvml
        except ImportError as e:
            raise RankscopeError(
                f"no NVIDIA GPU monitoring here: cannot import pynvml ({e}); install nvidia-ml-py",
                EXIT_ENVIRONMENT,
            ) from e
        return pynvml

    def run(self, args: argparse.Namespace) -> int:
        if args.period_ms <= 0:
            raise RankscopeError("--period-ms must be positive")
        if args.duration is not None and args.duration <= 0:
            raise RankscopeError("--duration must be positive")
        pids = parse_pids(args.pids) if args.pids else None
        if pids is not None and not any(pid_exists(p) for p in pids):
            raise RankscopeError(
                f"--pids: no such process ({', '.join(map(str, sorted(pids)))})", EXIT_BAD_INPUT
            )
        run_dir = Path(args.out).absolute()
        if run_dir.exists() and not run_dir.is_dir():
            raise RankscopeError(f"--out {args.out} is a file, not a directory")
        if rundir.is_run_dir(run_dir) and not args.overwrite:
            raise RankscopeError(
                f"{args.out} already holds a run; choose another --out or pass --overwrite"
            )

        def report(part: str, error: BaseException | str) -> None:
            print(f"rankscope monitor: {part}: {error}", file=sys.stderr, flush=True)

        monitor = Monitor(
            self._open_nvml(),
            run_dir,
            pids=pids,
            period_s=args.period_ms / 1000.0,
            report=report,
            command=["rankscope", *sys.argv[1:]],
        )
        # A second signal while it closes is caught too: close() always finishes.
        with SignalStop() as stop:
            try:
                try:
                    gpus = monitor.open()
                except RankscopeError:
                    raise
                except Exception as e:
                    raise RankscopeError(
                        f"no NVIDIA GPU here: NVML could not start ({_nvml_error(e)})",
                        EXIT_ENVIRONMENT,
                    ) from e
                if gpus == 0:
                    raise RankscopeError(
                        "no NVIDIA GPU here: NVML sees no device", EXIT_ENVIRONMENT
                    )
                which = (
                    "every process"
                    if pids is None
                    else f"pid(s) {', '.join(map(str, sorted(pids)))}"
                )
                print(
                    f"rankscope monitor: {gpus} GPU(s), following {which} every "
                    f"{args.period_ms:g} ms into {args.out}; Ctrl-C to stop",
                    file=sys.stderr,
                    flush=True,
                )
                monitor.run(stop, args.duration)
            finally:
                monitor.close()
        ranks = sorted(t.rank for t in monitor.tracked.values())
        samples = sum(t.samples for t in monitor.tracked.values())
        if ranks:
            print(
                f"rankscope monitor: {args.out}: {samples} sample(s) for rank(s) "
                f"{', '.join(map(str, ranks))}",
                file=sys.stderr,
            )
        else:
            print(
                f"rankscope monitor: {args.out}: no process of the job used a GPU meanwhile",
                file=sys.stderr,
            )
        return 0
