"""One ingested trace file: ``TraceRef`` (metadata now, tables when first asked for).

``json_size(path)`` is the JSON a file holds (what parsing it costs), read from a
gzip file's last 4 bytes; ``rank_of(meta, path)`` a trace's rank, from its
``distributedInfo``, else from its file name (None: neither says).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rankscope.dashboard.ingest import cache
from rankscope.dashboard.ingest.kineto import RankTrace, parse_trace
from rankscope.profiler import rundir


def json_size(path: Path) -> int:
    """Bytes of JSON in a trace file: parse time follows this, not the gzipped size.

    A gzip file ends with its uncompressed size (mod 4 GiB), so this reads 4 bytes.
    """
    try:
        size = path.stat().st_size
        if path.name.endswith(".gz") and size >= 18:
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                return max(int.from_bytes(f.read(4), "little"), size)
        return size
    except OSError:
        return 0


def rank_of(meta: dict[str, Any], path: Path) -> int | None:
    """A trace's rank: its ``distributedInfo``, else its file name (None: neither says)."""
    r = meta.get("rank")
    return r if isinstance(r, int) and r >= 0 else rundir.rank_from_filename(path.name)


class TraceRef:
    """One ingested trace file: its metadata now, its tables when first asked for.

    A cache hit reads only the entry's ``meta.json``; ``trace()`` reads the tables
    (and parses the file again should the entry have gone bad meanwhile).
    ``cached``: whether the file's run is cached (``cache.worth_caching``), so a
    parse is stored and the rank's digest too.
    """

    def __init__(
        self,
        path: str,
        meta: dict[str, Any],
        trace: RankTrace | None = None,
        *,
        cached: bool = False,
    ) -> None:
        self.path = path
        self.meta = meta
        self._trace = trace
        self.cached = cached

    def trace(self) -> RankTrace:
        if self._trace is None:
            p = Path(self.path)
            t = cache.load(p)
            if t is None:
                t = parse_trace(p)
                if self.cached:
                    cache.store(t)
            t.path = self.path
            self._trace = t
        return self._trace

    def cpu_start_ns(self) -> int:
        """The first host event's start (0 without any): orders a rank's windows."""
        if self._trace is None:
            summary = cache.load_summary(Path(self.path)) or {}
            start = summary.get("cpu_start_ns")
            if type(start) is int:
                return start
        cpu = self.trace().cpu
        return int(cpu["ts"].min()) if len(cpu) else 0
