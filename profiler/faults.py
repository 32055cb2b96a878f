"""Failure reporting for code that must never hurt the job it runs in.

``Faults.report(part, error)`` prints one line to stderr the first time a part
fails and queues it for ``rank{R}.log`` (the background writer appends queued
lines, so the training thread never waits on the file). ``Faults.guard(part)``
is a context manager that reports and swallows any exception and marks the part
disabled; ``Faults.disabled(part)`` tells callers to skip it from then on.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Faults:
    def __init__(self, label: str) -> None:
        self.label = label
        self._seen: set[str] = set()
        self._disabled: set[str] = set()
        self._lock = threading.Lock()
        # Bounded: a fault storm cannot grow memory; the first lines matter most.
        self.pending: deque[str] = deque(maxlen=1000)

    def report(self, part: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = " ".join(text.split())  # one line, whatever the exception printed
        with self._lock:
            if part in self._seen:
                return
            self._seen.add(part)
        line = f"rankscope [{self.label}] {part}: {text}"
        # If stderr is closed, the log file still gets the line.
        with contextlib.suppress(Exception):
            print(line, file=sys.stderr, flush=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        self.pending.append(f"{stamp} {line}\n")

    def log(self, part: str, text: str) -> None:
        """Like ``report`` but every time, not once per part: callers rate-limit it."""
        line = f"rankscope [{self.label}] {part}: {' '.join(text.split())}"
        with contextlib.suppress(Exception):
            print(line, file=sys.stderr, flush=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        self.pending.append(f"{stamp} {line}\n")

    def disable(self, part: str, error: BaseException | str) -> None:
        self._disabled.add(part)
        self.report(part, f"disabled after error: {error}" if isinstance(error, str) else error)

    def disabled(self, part: str) -> bool:
        return part in self._disabled

    @contextmanager
    def guard(self, part: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:
            self._disabled.add(part)
            self.report(part, f"disabled after error: {type(e).__name__}: {e}")
