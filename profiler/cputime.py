"""The training thread's CPU time and run-queue wait, read at each step boundary.

``ThreadClock.read()`` returns ``(cpu_ns, runq_ns)``, both cumulative for the
calling thread: ``time.thread_time_ns()`` (time it ran on a CPU) and field 2 of
``/proc/thread-self/schedstat`` (time it spent runnable on a run queue but not
running: another process or CPU throttling held it off). The schedstat file is
opened once, on the thread it describes (``thread-self`` resolves when opened),
and re-read with ``os.pread`` (one system call; ~1 us a read with the CPU time,
``benchmarks/bench_cputime.py``). The descriptor stays open for the life of the process.

Where a value is unreadable (not Linux, schedstat disabled, another thread)
it is ``-1`` and the steps record leaves that field out: the review side then
has no contention evidence for that rank, and says nothing about it.
"""

from __future__ import annotations

import os
import threading
import time

SCHEDSTAT = "/proc/thread-self/schedstat"


class ThreadClock:
    """Cumulative CPU time and run-queue wait of the thread that first calls ``read``."""

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self._path = path
        self._fd: int | None = None
        self._thread: int | None = None
        self._runq_ok = True

    def read(self) -> tuple[int, int]:
        """``(cpu_ns, runq_ns)`` of the calling thread; -1 for a value it cannot read."""
        me = threading.get_ident()
        if self._thread is None:
            self._thread = me
            try:
                self._fd = os.open(self._path, os.O_RDONLY)
            except OSError:
                self._runq_ok = False
        if me != self._thread:
            return -1, -1  # another thread's clocks are not the training thread's
        cpu = time.thread_time_ns()
        if not self._runq_ok or self._fd is None:
            return cpu, -1
        try:
            fields = os.pread(self._fd, 64, 0).split()
            return cpu, int(fields[1])
        except (OSError, ValueError, IndexError):
            self._runq_ok = False
            return cpu, -1
