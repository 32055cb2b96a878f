"""Time the training thread spends waiting for the DataLoader, per step.

``install(torch)`` wraps ``torch.utils.data.dataloader._BaseDataLoaderIter.__next__``
once per process: each call adds its wall time (two ``perf_counter_ns`` calls) to
a counter of the calling thread. The step timer calls ``take()`` at each step
boundary, on the training thread, and records what accumulated as the finished
step's ``data_ns``. A DataLoader iterated inside another's ``__next__`` counts once
(the outer call). ``enabled`` turns the counting off without unwrapping.
"""

from __future__ import annotations

import functools
import threading
from time import perf_counter_ns
from typing import Any

enabled = True
_local = threading.local()
_installed = False


def install(torch: Any) -> None:
    """Wrap the DataLoader iterator's ``__next__`` (idempotent)."""
    global _installed
    if _installed:
        return
    from torch.utils.data import dataloader

    cls = dataloader._BaseDataLoaderIter
    original = cls.__next__

    @functools.wraps(original)
    def __next__(self: Any) -> Any:
        if not enabled or getattr(_local, "inside", False):
            return original(self)
        _local.inside = True
        t0 = perf_counter_ns()
        try:
            return original(self)
        finally:
            _local.ns = getattr(_local, "ns", 0) + perf_counter_ns() - t0
            _local.inside = False

    cls.__next__ = __next__  # type: ignore[method-assign]
    _installed = True


def take() -> int:
    """Nanoseconds this thread waited in ``__next__`` since the last ``take()``."""
    ns: int = getattr(_local, "ns", 0)
    _local.ns = 0
    return ns
