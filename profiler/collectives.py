"""Every collective's arrival on this rank, read from PyTorch's flight recorder.

``FlightRecorderLog.poll()`` runs on the recorder thread (never the training
thread): it dumps the flight recorder's ring buffer(s), keeps the entries it has
not written yet (``NewEntries``: by record id, so a ring that wrapped or an entry
seen in several dumps is written once), converts each with ``convert_entry`` to
one line of ``rank{R}.collectives.jsonl`` (format in ``rankscope.profiler.rundir``)
and returns the lines for the recorder to append at its next flush.

Sources: torch keeps one ring for gloo/CPU process groups
(``torch._C._distributed_c10d._dump_fr_trace``) and, in CUDA builds, one for NCCL
(``_dump_nccl_trace``); torch 2.13 has no public API for either (the public
``torch.distributed.flight_recorder`` only analyses dump files), so both are
looked up by name and this part switches off with one log line where neither
exists. A ring exists only when ``TORCH_FR_BUFFER_SIZE`` (or
``TORCH_NCCL_TRACE_BUFFER_SIZE``) was set before the process group started:
``rankscope run`` sets it (DEFAULT_BUFFER entries) unless the job's environment
already has one; with the ``Collector`` API the job sets it itself.

Cost: a dump holds the GIL for the whole ring (about 10-30 us per entry on a
2-core CPU machine, so ~20-60 ms for 2000 entries), whatever is new. So a poll
happens when the ring is expected to be about half full of new entries (from the
rate seen so far), at least every MAX_PERIOD_S and at most every MIN_PERIOD_S, and
never more often than keeps dump time under BUDGET of wall time. Entries that
left the ring before a poll (a job issuing collectives faster than that budget
allows) are counted as ``dropped`` (record ids skipped) and said once in the log.
An entry still in flight is held back until it completes (NCCL) or retires
(gloo); the final poll at stop writes what is left, state and all.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable
from typing import Any

from rankscope.profiler.faults import Faults

DEFAULT_BUFFER = 2000
MIN_PERIOD_S = 2.0
MAX_PERIOD_S = 30.0
BUDGET = 0.01  # share of wall time the dumps may take (they hold the GIL)

# Bytes per element of the dtype names the flight recorder writes (c10 ScalarType names).
DTYPE_BYTES = {
    "Byte": 1,
    "Char": 1,
    "Bool": 1,
    "Float8_e4m3fn": 1,
    "Float8_e5m2": 1,
    "Float8_e4m3fnuz": 1,
    "Float8_e5m2fnuz": 1,
    "Short": 2,
    "Half": 2,
    "BFloat16": 2,
    "UInt16": 2,
    "Int": 4,
    "Float": 4,
    "UInt32": 4,
    "ComplexHalf": 4,
    "Long": 8,
    "Double": 8,
    "UInt64": 8,
    "ComplexFloat": 8,
    "ComplexDouble": 16,
}

# Backend op names -> the canonical names the review side uses.
_CANONICAL = {
    "allreduce": "all_reduce",
    "allreduce_coalesced": "all_reduce_coalesced",
    "allgather": "all_gather",
    "_allgather_base": "all_gather",
    "all_gather_into_tensor": "all_gather",
    "allgather_into_tensor_coalesced": "all_gather_coalesced",
    "all_gather_into_tensor_coalesced": "all_gather_coalesced",
    "allgather_coalesced": "all_gather_coalesced",
    "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter_coalesced",
    "reducescatter": "reduce_scatter",
    "alltoall": "all_to_all",
    "alltoall_base": "all_to_all",
    "all_to_all_single": "all_to_all",
}

# Dump functions of torch._C._distributed_c10d, tried in this order; each is its own ring.
_SOURCES = (("nccl", "_dump_nccl_trace"), ("fr", "_dump_fr_trace"))


def canonical_name(profiling_name: str) -> str:
    """``"gloo:all_reduce"`` -> ``"all_reduce"``; ``"nccl:send 0->1"`` -> ``"send"``."""
    op = profiling_name.split(":", 1)[-1].strip()
    op = op.split(" ", 1)[0] if op else op
    return _CANONICAL.get(op, op)


def entry_bytes(sizes: Any, dtypes: Any) -> int:
    """Input elements x dtype size over all input tensors; -1 when a dtype is unknown."""
    if not isinstance(sizes, list) or not isinstance(dtypes, list) or len(sizes) != len(dtypes):
        return -1
    total = 0
    for shape, dtype in zip(sizes, dtypes, strict=True):
        width = DTYPE_BYTES.get(dtype) if isinstance(dtype, str) else None
        if width is None or not isinstance(shape, list):
            return -1
        if not all(type(d) is int and d >= 0 for d in shape):
            return -1
        total += math.prod(shape) * width
    return total


def _ns(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def convert_entry(entry: dict[str, Any]) -> dict[str, Any] | None:
    """One flight-recorder entry as a ``collectives.jsonl`` record, or None if unusable."""
    pg = entry.get("process_group")
    name = entry.get("profiling_name")
    created = _ns(entry.get("time_created_ns"))
    if not isinstance(name, str) or created is None:
        return None
    p2p = bool(entry.get("is_p2p", False))
    seq = entry.get("p2p_seq_id" if p2p else "collective_seq_id")
    if type(seq) is not int:
        return None
    pg_name, pg_desc = "", ""
    if isinstance(pg, list | tuple) and len(pg) >= 1:
        pg_name = str(pg[0])
        pg_desc = str(pg[1]) if len(pg) > 1 else ""
    duration = entry.get("duration_ms")
    return {
        "seq": seq,
        "pg": pg_name,
        "pg_desc": pg_desc,
        "name": canonical_name(name),
        "p2p": p2p,
        "bytes": entry_bytes(entry.get("input_sizes"), entry.get("input_dtypes")),
        "enqueue_ns": created,
        "start_ns": _ns(entry.get("time_discovered_started_ns")),
        "end_ns": _ns(entry.get("time_discovered_completed_ns")),
        "duration_ms": float(duration) if isinstance(duration, int | float) else None,
        "state": str(entry.get("state", "")),
    }


def finished(entry: dict[str, Any]) -> bool:
    return bool(entry.get("retired")) or entry.get("state") == "completed"


class NewEntries:
    """Which entries of successive dumps of one ring are new (by ``record_id``).

    Record ids grow by one per entry. ``done_below``: every id under it was
    handled; ``done``: handled ids above it (entries written while an older one
    was still in flight). Both stay within one ring's span, so memory is bounded.
    """

    def __init__(self) -> None:
        self.done_below = 0
        self.done: set[int] = set()
        self.dropped = 0
        self._started = False

    def select(self, entries: list[dict[str, Any]], final: bool = False) -> list[dict[str, Any]]:
        """The entries to write now, oldest first; in-flight ones wait unless ``final``."""
        rows = sorted(
            (e for e in entries if type(e.get("record_id")) is int),
            key=lambda e: e["record_id"],
        )
        if not rows:
            return []
        oldest = rows[0]["record_id"]
        if oldest > self.done_below:
            # The ring wrapped past entries never seen: they are lost. (Not at the first
            # read: a collector started mid-job, or a second one in the same process,
            # begins with what the ring still holds.)
            lost = oldest - self.done_below - sum(1 for i in self.done if i < oldest)
            if self._started:
                self.dropped += max(0, lost)
            self.done = {i for i in self.done if i >= oldest}
            self.done_below = oldest
        self._started = True
        out = []
        for e in rows:
            rid = e["record_id"]
            if rid < self.done_below or rid in self.done:
                continue
            if final or finished(e):
                out.append(e)
                self.done.add(rid)
        while self.done_below in self.done:
            self.done.remove(self.done_below)
            self.done_below += 1
        return out


Dump = Callable[[], dict[str, Any]]


def find_dumps(c10d: Any) -> list[tuple[str, Dump]]:
    """The flight-recorder dump functions this torch build has, as ``(source, dump)``."""
    found: list[tuple[str, Dump]] = []
    for source, name in _SOURCES:
        fn = getattr(c10d, name, None)
        if fn is not None:

            def dump(fn: Any = fn) -> dict[str, Any]:
                # Pickle, not JSON: about half the cost, and the GIL is held throughout.
                data = pickle.loads(fn(True, False, False))
                return data if isinstance(data, dict) else {}

            found.append((source, dump))
            continue
        fn = getattr(c10d, name + "_json", None)
        if fn is not None:

            def dump_json(fn: Any = fn) -> dict[str, Any]:
                import json

                data = json.loads(fn(True, False))
                return data if isinstance(data, dict) else {}

            found.append((source, dump_json))
    return found


class FlightRecorderLog:
    """Polls the flight recorder rings on the recorder thread; see the module docstring."""

    def __init__(
        self,
        dumps: list[tuple[str, Dump]],
        faults: Faults,
        *,
        buffer_size: int = DEFAULT_BUFFER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dumps = dumps
        self.faults = faults
        self.buffer_size = max(1, buffer_size)
        self._clock = clock
        self._seen = {source: NewEntries() for source, _ in dumps}
        self._next_poll = clock() + MIN_PERIOD_S
        self._last_poll: float | None = None
        self.polls = 0
        self.entries_written = 0
        self.dump_s = 0.0  # total time spent dumping and decoding (benchmark)
        self.dumped_entries = 0
        self._dropped_said = 0

    @property
    def disabled(self) -> bool:
        return self.faults.disabled("collectives")

    def next_deadline(self) -> float:
        return self._next_poll

    def tick(self, now: float) -> list[dict[str, Any]]:
        if self.disabled or now < self._next_poll:
            return []
        return self.poll(now)

    def poll(self, now: float | None = None, final: bool = False) -> list[dict[str, Any]]:
        """New records from every ring (all remaining ones when ``final``); never raises."""
        now = self._clock() if now is None else now
        out: list[dict[str, Any]] = []
        if self.disabled:
            return out
        try:
            t0 = time.perf_counter()
            raw: list[tuple[str, list[dict[str, Any]]]] = []
            for source, dump in self.dumps:
                entries = dump().get("entries") or []
                raw.append((source, entries if isinstance(entries, list) else []))
            cost = time.perf_counter() - t0
            for source, entries in raw:
                self.dumped_entries += len(entries)
                for e in self._seen[source].select(entries, final=final):
                    row = convert_entry(e) if isinstance(e, dict) else None
                    if row is not None:
                        out.append(row)
            self.dump_s += cost
            self.polls += 1
            self.entries_written += len(out)
            self._schedule(now, len(out), cost)
            self._say_dropped()
        except Exception as e:
            self.faults.disable("collectives", e)
        return out

    def _schedule(self, now: float, new: int, cost: float) -> None:
        period = MAX_PERIOD_S
        if self._last_poll is not None and new > 0 and now > self._last_poll:
            rate = new / (now - self._last_poll)
            period = 0.5 * self.buffer_size / rate
        period = min(MAX_PERIOD_S, max(MIN_PERIOD_S, period, cost / BUDGET))
        self._last_poll = now
        self._next_poll = now + period

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._seen.values())

    def _say_dropped(self) -> None:
        dropped = self.dropped
        if dropped > self._dropped_said and self._dropped_said == 0:
            self.faults.log(
                "collectives",
                f"{dropped} collective(s) left the flight recorder's ring ({self.buffer_size} "
                "entries) before they were read; a larger TORCH_FR_BUFFER_SIZE keeps them "
                "(each read costs more)",
            )
        self._dropped_said = dropped

    def describe(self) -> dict[str, Any]:
        """What the rank manifest says about this log."""
        return {
            "sources": [s for s, _ in self.dumps],
            "buffer_size": self.buffer_size,
            "polls": self.polls,
            "written": self.entries_written,
            "dropped": self.dropped,
            "dump_ms_per_entry": round(1e3 * self.dump_s / self.dumped_entries, 4)
            if self.dumped_entries
            else None,
        }


def buffer_size_from_env(environ: dict[str, str] | Any) -> int:
    """The ring size torch uses (TORCH_FR_BUFFER_SIZE, else TORCH_NCCL_TRACE_BUFFER_SIZE), or 0."""
    for name in ("TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE"):
        text = environ.get(name)
        if text:
            try:
                return max(0, int(text))
            except ValueError:
                return 0
    return 0


def open_log(torch: Any, faults: Faults, environ: Any) -> FlightRecorderLog | None:
    """The log for this process, or None (with one log line) where it cannot work."""
    size = buffer_size_from_env(environ)
    if size <= 0:
        faults.report(
            "collectives",
            "off: the flight recorder has no buffer (set TORCH_FR_BUFFER_SIZE=2000 before the "
            "process group starts; rankscope run does it)",
        )
        return None
    c10d = getattr(getattr(torch, "_C", None), "_distributed_c10d", None)
    dumps = find_dumps(c10d) if c10d is not None else []
    if not dumps:
        faults.report("collectives", "off: this torch has no flight recorder dump")
        return None
    return FlightRecorderLog(dumps, faults, buffer_size=size)
