"""Every collective's arrival on this rank, read from PyTorch's flight recorder.

``FlightRecorderLog.poll()`` runs on the recorder thread (never the training
thread): it dumps the flight recorder's ring buffer(s), keeps the entries it has
not written yet (``NewEntries``: by record id, so a ring that wrapped or an entry
seen in several dumps is written once), converts each with ``convert_entry`` to
one line of ``rank{R}.collectives.jsonl`` (format in ``rankscope.profiler.rundir``)
and returns the lines for the recorder to append at its next flush.

Sources: torch keeps one ring for gloo/CPU process groups
(``torch._C._distributed_c10d._dump_fr_trace``) and, in CUDA builds, one for NCCL
(``_dump_nccl_trace``: NCCL's entries are only there); torch has no public API
for either (the public ``torch.distributed.flight_recorder`` only analyses dump
files), so ``find_dumps`` looks up every ring's pickle and ``_json`` variants by
name and ``RingDump`` calls them with the arguments their signature names (they
differ between torch versions). A ring whose dump fails is left out with its
reason; the others go on; the part is off only when all have failed. A ring
exists only when ``TORCH_FR_BUFFER_SIZE`` (or ``TORCH_NCCL_TRACE_BUFFER_SIZE``)
was set before the process group started: ``rankscope run`` sets it
(DEFAULT_BUFFER entries) unless the job's environment already has one; with the
``Collector`` API the job sets it itself. A 1-rank job is logged too (its
process group has collectives); ``describe()`` (the rank manifest's
``collectives``) names the rings that gave entries, what each gave or why it
failed, and why nothing was written (``absent``).

NCCL's times: ``time_discovered_started_ns`` / ``_completed_ns`` are when the
CPU *noticed* the start / end CUDA event (NCCL's watchdog, every ~100 ms, or a
dump), so they bound the GPU's times from above, seldom tighter than the watchdog
period (in the real dump in ``tests/data/nccl_flight_recorder`` both are 1.4 us
apart for a collective whose GPU time was 240 us). ``duration_ms`` (with
``TORCH_NCCL_ENABLE_TIMING=1``) is the GPU's own time between those events, set
when the watchdog retires the entry: a completed entry with a start time is held
back one poll for it.

Cost: a dump holds the GIL for the whole ring (about 10-30 us per entry on a
2-core CPU machine, so ~20-60 ms for 2000 entries), whatever is new. So a poll
happens when the ring is expected to be about half full of new entries (from the
rate seen so far), at least every MAX_PERIOD_S and at most every MIN_PERIOD_S, and
never more often than keeps dump time under BUDGET of wall time. Once the last
STEADY_READS reads saw a steady rate (within STEADY_SPREAD of each other) and no
entry was ever lost, a read waits until STEADY_FILL of the ring is new at the
fastest of those rates: each entry is then dumped ~1.3 times instead of ~2 (the
dump is most of a read's cost); the rate must jump by a third within one period to
lose an entry, and the first loss puts the log back on half a ring for good. Entries that
left the ring before a poll (a job issuing collectives faster than that budget
allows) are counted as ``dropped`` (record ids skipped) and said once in the log.
An entry still in flight is held back until it completes (NCCL) or retires
(gloo); the final poll at stop writes what is left, state and all.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import pickle
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rankscope.profiler.faults import Faults

DEFAULT_BUFFER = 2000
MIN_PERIOD_S = 2.0
MAX_PERIOD_S = 30.0
BUDGET = 0.01  # share of wall time the dumps may take (they hold the GIL)
FILL = 0.5  # share of the ring expected new at a read
STEADY_FILL = 0.75  # ... once the rate has been steady (see the module docstring)
STEADY_READS = 3
STEADY_SPREAD = 1.25  # the fastest of the last reads' rates over the slowest, at most

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
    "_all_gather_base": "all_gather",  # NCCL's name (torch 2.11)
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
    "all_reduce_barrier": "barrier",  # NCCL: a barrier is a 1-element all_reduce
}

# Dump functions of torch._C._distributed_c10d, tried in this order; each is its own ring.
_SOURCES = (("nccl", "_dump_nccl_trace"), ("fr", "_dump_fr_trace"))


# profiling_name -> canonical name: a job has a handful of names and a read converts
# up to a ring of entries, so each is worked out once (bounded: cleared when full).
_NAMES: dict[str, str] = {}
_NAMES_MAX = 4096


def canonical_name(profiling_name: str) -> str:
    """``"gloo:all_reduce"`` -> ``"all_reduce"``; ``"nccl:send 0->1"`` -> ``"send"``."""
    known = _NAMES.get(profiling_name)
    if known is not None:
        return known
    op = profiling_name.split(":", 1)[-1].strip()
    op = op.split(" ", 1)[0] if op else op
    name = _CANONICAL.get(op, op)
    if len(_NAMES) >= _NAMES_MAX:
        _NAMES.clear()
    _NAMES[profiling_name] = name
    return name


def entry_bytes(sizes: Any, dtypes: Any) -> int:
    """Input elements x dtype size over all input tensors; -1 when a dtype is unknown."""
    if not isinstance(sizes, list) or not isinstance(dtypes, list) or len(sizes) != len(dtypes):
        return -1
    total = 0
    for shape, dtype in zip(sizes, dtypes, strict=True):
        width = DTYPE_BYTES.get(dtype) if type(dtype) is str else None
        if width is None or type(shape) is not list:
            return -1
        for d in shape:  # a plain loop: a generator costs more per (short) shape
            if type(d) is not int or d < 0:
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


def awaits_duration(entry: dict[str, Any]) -> bool:
    """A completed NCCL entry whose GPU duration comes when the watchdog retires it.

    NCCL records a start event only with ``TORCH_NCCL_ENABLE_TIMING`` (or desync
    debugging), so a start time marks an entry whose ``duration_ms`` is still to come.
    """
    return (
        not entry.get("retired")
        and entry.get("state") == "completed"
        and _ns(entry.get("time_discovered_started_ns")) is not None
        and not isinstance(entry.get("duration_ms"), int | float)
    )


class NewEntries:
    """Which entries of successive dumps of one ring are new (by ``record_id``).

    Record ids grow by one per entry. ``done_below``: every id under it was
    handled; ``done``: handled ids above it (entries written while an older one
    was still in flight). ``waiting``: completed NCCL entries held back one poll
    for their GPU duration (NCCL's watchdog retires them within ~100 ms). All stay
    within one ring's span, so memory is bounded.
    """

    def __init__(self) -> None:
        self.done_below = 0
        self.done: set[int] = set()
        self.waiting: set[int] = set()
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
            self.waiting = {i for i in self.waiting if i >= oldest}
            self.done_below = oldest
        self._started = True
        out = []
        for e in rows:
            rid = e["record_id"]
            if rid < self.done_below or rid in self.done:
                continue
            if not final and finished(e) and awaits_duration(e) and rid not in self.waiting:
                self.waiting.add(rid)  # written at the next poll, retired or not
                continue
            if final or finished(e):
                out.append(e)
                self.done.add(rid)
                self.waiting.discard(rid)
        while self.done_below in self.done:
            self.done.remove(self.done_below)
            self.done_below += 1
        return out


Dump = Callable[[], dict[str, Any]]

# What we ask a dump for; each torch version takes the subset its signature names.
_WANTED = {"includeCollectives": True, "includeStackTraces": False, "onlyActive": False}


def parameter_names(fn: Any) -> list[str] | None:
    """The parameter names of a dump function (pybind's docstring or Python's), None if unknown."""
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        pass
    doc = getattr(fn, "__doc__", None)
    first = doc.strip().splitlines()[0] if isinstance(doc, str) and doc.strip() else ""
    m = re.match(r"^\s*\w+\((.*)\)\s*(->.*)?$", first)
    if m is None:
        return None
    return re.findall(r"(?:^|,)\s*(\w+)\s*(?::|=|,|$)", m.group(1))


def _decode(raw: Any, json_text: bool) -> dict[str, Any]:
    # Pickle (torch's own dump of plain dicts, lists, strings and numbers) where
    # there is one, not JSON: about half the cost, and the GIL is held throughout.
    data = json.loads(raw) if json_text else pickle.loads(raw)
    if not isinstance(data, dict):
        raise TypeError(f"the dump is a {type(data).__name__}, not a dict")
    return data


class DumpFailed(RuntimeError):
    """Every variant of one ring's dump failed; the message says how each did."""


class RingDump:
    """One ring's dump function(s): the pickle variant, else (or when it fails) the JSON one.

    Arguments are matched to the function's parameter names (they differ between
    torch versions: ``_dump_nccl_trace()`` took none before torch 2.4, the JSON
    variants take no ``includeStackTraces``); stack traces are never asked for.
    A variant that raises is dropped for the next; ``RingDump`` raises only when
    every variant has failed, with the last reason.
    """

    def __init__(self, source: str, variants: list[tuple[str, Any, bool]]) -> None:
        self.source = source
        self._variants = list(variants)  # (function name, function, returns JSON text)
        self.failures: list[str] = []

    @property
    def function(self) -> str | None:
        return self._variants[0][0] if self._variants else None

    def __call__(self) -> dict[str, Any]:
        while self._variants:
            name, fn, json_text = self._variants[0]
            try:
                names = parameter_names(fn)
                kwargs = {k: v for k, v in _WANTED.items() if names and k in names}
                return _decode(fn(**kwargs), json_text)
            except Exception as e:
                self.failures.append(f"{name}: {type(e).__name__}: {e}")
                self._variants.pop(0)
        raise DumpFailed("; ".join(self.failures) or "no dump function")


def find_dumps(c10d: Any) -> list[tuple[str, Dump]]:
    """The flight-recorder rings this torch build can dump, as ``(source, dump)``."""
    found: list[tuple[str, Dump]] = []
    for source, name in _SOURCES:
        variants = [
            (fname, fn, fname.endswith("_json"))
            for fname in (name, name + "_json")
            if callable(fn := getattr(c10d, fname, None))
        ]
        if variants:
            found.append((source, RingDump(source, variants)))
    return found


class _SourceState:
    """What one ring gave: its last dump's size, rows written, and why it failed."""

    def __init__(self, dump: Dump) -> None:
        self.dump = dump
        self.seen = NewEntries()
        self.entries = 0  # in the last dump (the ring's occupancy)
        self.written = 0
        self.timed = 0  # rows written with NCCL's GPU duration
        self.error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "function": getattr(self.dump, "function", None),
            "entries": self.entries,
            "written": self.written,
            "gpu_timed": self.timed,
            "error": self.error,
        }


class FlightRecorderLog:
    """Polls the flight recorder rings on the recorder thread; see the module docstring."""

    def __init__(
        self,
        dumps: list[tuple[str, Dump]],
        faults: Faults,
        *,
        buffer_size: int = DEFAULT_BUFFER,
        clock: Callable[[], float] = time.monotonic,
        has_process_group: Callable[[], bool] | None = None,
    ) -> None:
        self.dumps = dumps
        self.faults = faults
        self.buffer_size = max(1, buffer_size)
        self._clock = clock
        self._has_pg = has_process_group
        self._saw_pg = False
        self._sources = {source: _SourceState(dump) for source, dump in dumps}
        self._next_poll = clock() + MIN_PERIOD_S
        # From the start: the first read's rate (what the ring holds over the time since)
        # sets the second read's time. Without it the second read came MAX_PERIOD_S
        # later whatever the rate, and a job issuing more than buffer / MAX_PERIOD_S
        # collectives a second lost entries from the ring meanwhile. A ring that held
        # entries from before makes the rate look higher: the read only comes sooner.
        self._last_poll: float | None = clock()
        self._rates: deque[float] = deque(maxlen=STEADY_READS)  # entries/s between reads
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
        """New records from every ring (all remaining ones when ``final``); never raises.

        A ring whose dump fails is left out from then on (its reason kept for the
        manifest); the others go on. Only when every ring has failed is this part off.
        """
        now = self._clock() if now is None else now
        out: list[dict[str, Any]] = []
        if self.disabled:
            return out
        try:
            self._note_process_group()
            t0 = time.perf_counter()
            raw: list[tuple[_SourceState, list[Any]]] = []
            for source, state in self._sources.items():
                if state.error is not None:
                    continue
                try:
                    entries = state.dump().get("entries") or []
                except Exception as e:
                    state.error = (
                        str(e) if isinstance(e, DumpFailed) else f"{type(e).__name__}: {e}"
                    )
                    self.faults.log("collectives", f"{source} flight recorder left out: {e}")
                    continue
                raw.append((state, entries if isinstance(entries, list) else []))
            cost = time.perf_counter() - t0
            if all(s.error is not None for s in self._sources.values()):
                reasons = "; ".join(f"{k}: {s.error}" for k, s in self._sources.items())
                self.faults.disable("collectives", reasons or "no flight recorder to read")
                return out
            # One collective in two rings (a torch whose rings are one): keep the first.
            keys: set[tuple[Any, ...]] = set()
            for state, entries in raw:
                state.entries = len(entries)
                self.dumped_entries += len(entries)
                dicts = [x for x in entries if isinstance(x, dict)]
                for entry in state.seen.select(dicts, final=final):
                    row = convert_entry(entry)
                    if row is None:
                        continue
                    key = (row["pg"], row["p2p"], row["seq"], row["enqueue_ns"])
                    if key in keys:
                        continue
                    keys.add(key)
                    out.append(row)
                    state.written += 1
                    state.timed += row["duration_ms"] is not None
            self.dump_s += cost
            self.polls += 1
            self.entries_written += len(out)
            self._schedule(now, len(out), cost)
            self._say_dropped()
        except Exception as e:
            self.faults.disable("collectives", e)
        return out

    def _note_process_group(self) -> None:
        if not self._saw_pg and self._has_pg is not None:
            with contextlib.suppress(Exception):
                self._saw_pg = bool(self._has_pg())

    def _schedule(self, now: float, new: int, cost: float) -> None:
        period = MAX_PERIOD_S
        if self._last_poll is not None and new > 0 and now > self._last_poll:
            rate = new / (now - self._last_poll)
            self._rates.append(rate)
            fastest = max(self._rates)
            if (
                len(self._rates) == STEADY_READS
                and fastest <= STEADY_SPREAD * min(self._rates)
                and self.dropped == 0
            ):
                period = STEADY_FILL * self.buffer_size / fastest
            else:
                period = FILL * self.buffer_size / rate
        else:
            self._rates.clear()  # no collective since the last read: start over
        period = min(MAX_PERIOD_S, max(MIN_PERIOD_S, period, cost / BUDGET))
        self._last_poll = now
        self._next_poll = now + period

    @property
    def dropped(self) -> int:
        return sum(s.seen.dropped for s in self._sources.values())

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

    def absent_reason(self) -> str | None:
        """Why nothing was written (None once something was)."""
        if self.entries_written:
            return None
        failed = [f"{k}: {s.error}" for k, s in self._sources.items() if s.error is not None]
        if len(failed) == len(self._sources):
            return "source failed: " + "; ".join(failed)
        if self._has_pg is not None and not self._saw_pg:
            return "no process group (torch.distributed was never initialised)"
        if not self.polls:
            return "not read yet"
        return "no collective in the flight recorder" + (
            " (source failed: " + "; ".join(failed) + ")" if failed else ""
        )

    def describe(self) -> dict[str, Any]:
        """What the rank manifest says about this log (format in ``rundir``)."""
        return {
            # The rings that gave entries, in order ("nccl", "fr"); all of them in
            # ``readers``, with what each gave or why it failed.
            "sources": [k for k, s in self._sources.items() if s.written],
            "readers": {k: s.describe() for k, s in self._sources.items()},
            "buffer_size": self.buffer_size,
            "polls": self.polls,
            "written": self.entries_written,
            "dropped": self.dropped,
            "dump_ms_per_entry": round(1e3 * self.dump_s / self.dumped_entries, 4)
            if self.dumped_entries
            else None,
            "absent": self.absent_reason(),
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


NO_BUFFER = (
    "no buffer: the flight recorder keeps no ring (set TORCH_FR_BUFFER_SIZE=2000 before the "
    "process group starts; rankscope run does it)"
)
NO_DUMP = "no dump function: this torch has no flight-recorder dump"


def open_log(
    torch: Any, faults: Faults, environ: Any, *, distributed: bool = True
) -> tuple[FlightRecorderLog | None, str | None]:
    """The log for this process, or None and why (said once in the log if ``distributed``).

    A process that is not (yet) distributed still gets a log when the ring exists:
    a 1-rank job's process group has collectives too. Its manifest then says
    ``absent: no process group`` if none was ever made.
    """
    size = buffer_size_from_env(environ)
    if size <= 0:
        if distributed:
            faults.report("collectives", "off: " + NO_BUFFER)
        return None, NO_BUFFER
    c10d = getattr(getattr(torch, "_C", None), "_distributed_c10d", None)
    dumps = find_dumps(c10d) if c10d is not None else []
    if not dumps:
        faults.report("collectives", "off: " + NO_DUMP)
        return None, NO_DUMP
    dist = getattr(torch, "distributed", None)

    def has_process_group() -> bool:
        return bool(dist is not None and dist.is_available() and dist.is_initialized())

    return FlightRecorderLog(
        dumps, faults, buffer_size=size, has_process_group=has_process_group
    ), None
