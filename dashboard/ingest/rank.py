"""One rank of a run, as the analysis reads it: ``RankData``, each part read when first used.

``rank_data(r, refs, place, manifest)`` assembles rank ``r`` of the run at
``place`` from its trace files (``TraceRef``, in time order: the tables of every
capture window concatenated) and, in a collector run directory, the collector's
own files for that rank: the step timer (``rank{R}.steps.jsonl``), the
telemetry samples and the flight recorder's log (``rank{R}.collectives.jsonl``),
each turned into a ``Table`` (numeric fields; missing values NaN, or -1 for
int64 times).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankscope.dashboard.ingest.kineto import empty_trace
from rankscope.dashboard.ingest.table import Table
from rankscope.dashboard.ingest.tracefile import TraceRef
from rankscope.profiler import readers, records, rundir

_TRACE_TABLES = ("gpu", "cpu", "gpu_ann", "comms", "memory")


class RankData:
    """One rank: its trace tables (every capture window concatenated), the
    collector's step timer and telemetry, and the flight recorder's log.

    - ``gpu``, ``cpu``, ``gpu_ann``, ``comms``, ``memory``: trace tables (``kineto``)
    - ``step_marks``: collector step timer: step, start_ns, end_ns[, data_ns, capture]
      (may be empty; ``capture``: 1-4 = ``rundir.CAPTURE_PHASES``, NaN on other steps)
    - ``telemetry``: NVML/host samples: ts_ns and numeric fields (may be empty)
    - ``light_comms``: the flight recorder's log (``rank{R}.collectives.jsonl``): pg,
      name, pg_desc (strings), seq, enqueue_ns; start_ns, end_ns (when NCCL's watchdog noticed
      it start / end: upper bounds; -1 unknown) and duration_ms (NCCL's GPU time
      from its start to its end event; NaN unknown, always with gloo); empty where
      the collector did not record it; p2p (1: a send or receive, whose seq counts the
      group's p2p operations apart from its collectives); peer and wait_start_ns (-1:
      unknown; gloo's sends and receives, which the collector times itself,
      ``rankscope.profiler.p2p``: the other rank, and when the rank began to wait for
      the operation, until end_ns)

    Each is read when first used: a report over many ranks reads each rank's
    digest (``analysis.digest``), not its events. ``steps_file`` and
    ``telemetry_file`` are where the step timer and the samples come from (None:
    none for this kind of run); ``digest`` holds the digest once made; ``cached``
    says whether the rank's run is cached (``cache.worth_caching``), its digest too.
    ``problems`` lists, one line each, what the collector's files of this rank
    could not give once read: a file that is not readable or belongs to another
    run, a record skipped (file, line, reason).
    """

    def __init__(
        self,
        rank: int,
        files: list[str],
        meta: dict[str, Any],
        gpu: Table | None = None,
        cpu: Table | None = None,
        gpu_ann: Table | None = None,
        comms: Table | None = None,
        step_marks: Table | None = None,
        telemetry: Table | None = None,
        light_comms: Table | None = None,
        *,
        load_tables: Callable[[], dict[str, Table]] | None = None,
        load_steps: Callable[[], Table] | None = None,
        load_telemetry: Callable[[], Table] | None = None,
        load_light: Callable[[], Table] | None = None,
        steps_file: str | None = None,
        telemetry_file: str | None = None,
        cached: bool = False,
    ) -> None:
        self.rank = rank
        self.files = files
        self.meta = meta
        given = {"gpu": gpu, "cpu": cpu, "gpu_ann": gpu_ann, "comms": comms, "memory": None}
        self._tables: dict[str, Table] | None = (
            None
            if load_tables is not None
            else {k: v if v is not None else getattr(empty_trace(), k) for k, v in given.items()}
        )
        self._load_tables = load_tables
        self._step_marks = step_marks
        self._load_steps = load_steps
        self._telemetry = telemetry
        self._load_telemetry = load_telemetry
        self._light = light_comms
        self._load_light = load_light
        self.steps_file = steps_file
        self.telemetry_file = telemetry_file
        self.cached = cached
        self.digest: Any = None
        self.problems: list[str] = []

    def _table(self, name: str) -> Table:
        if self._tables is None:
            assert self._load_tables is not None
            self._tables = self._load_tables()
        return self._tables[name]

    @property
    def tables_loaded(self) -> bool:
        return self._tables is not None

    @property
    def gpu(self) -> Table:
        return self._table("gpu")

    @property
    def cpu(self) -> Table:
        return self._table("cpu")

    @property
    def gpu_ann(self) -> Table:
        return self._table("gpu_ann")

    @property
    def comms(self) -> Table:
        return self._table("comms")

    @property
    def memory(self) -> Table:
        return self._table("memory")

    @property
    def step_marks(self) -> Table:
        if self._step_marks is None:
            self._step_marks = self._load_steps() if self._load_steps else _numeric_table([])
        return self._step_marks

    @property
    def telemetry(self) -> Table:
        if self._telemetry is None:
            self._telemetry = self._load_telemetry() if self._load_telemetry else _numeric_table([])
        return self._telemetry

    @property
    def light_comms(self) -> Table:
        if self._light is None:
            self._light = self._load_light() if self._load_light else _light_comms_table([])
        return self._light

    @property
    def light_collectives(self) -> Table:
        """``light_comms`` without its sends and receives: their seq counts each rank's
        own, so they are never paired across ranks as collectives are."""
        comms = self.light_comms
        if len(comms) and "p2p" in comms and comms["p2p"].any():
            return comms.filter(comms["p2p"] == 0)
        return comms


@dataclass(frozen=True)
class RunPlace:
    """Where a run is (``path``: its folder, or a lone trace file) and its kind: what
    a rank's step timer, telemetry and collective log are read from."""

    kind: str
    path: str


def _stream_light_comms(
    run_dir: Path, rank: int, bad: list[str] | None = None, run_id: str | None = None
) -> Table:
    """``rank{R}.collectives.jsonl`` as a Table, streamed: each record goes straight
    into typed columns (8 bytes a number, a 4-byte code a string), never a dict a
    record, so memory is about what is kept (a 383 MB log: ~70 MB of columns)."""
    ints = {
        k: array("q") for k in ("seq", "enqueue_ns", "start_ns", "end_ns", "peer", "wait_start_ns")
    }
    duration = array("d")
    codes: dict[str, array[int]] = {"pg": array("i"), "name": array("i"), "pg_desc": array("i")}
    vocab: dict[str, dict[str, int]] = {"pg": {}, "name": {}, "pg_desc": {}}
    p2p = array("b")
    # Only to find the records that repeat one (``_repeats``): not kept in the table.
    score, rest = array("b"), array("q")
    path = rundir.collectives_path(run_dir, rank)
    for rec in rundir.iter_records(path, records.CollectiveRecord, bad=bad, run_id=run_id):
        p2p.append(rec.p2p)
        score.append(readers.completeness(rec.state, rec.start_ns, rec.end_ns, rec.duration_ms))
        rest.append(hash((rec.bytes, rec.state)))
        ints["seq"].append(rec.seq)
        ints["enqueue_ns"].append(rec.enqueue_ns)
        ints["start_ns"].append(-1 if rec.start_ns is None else rec.start_ns)
        ints["end_ns"].append(-1 if rec.end_ns is None else rec.end_ns)
        ints["peer"].append(-1 if rec.peer is None else rec.peer)
        ints["wait_start_ns"].append(-1 if rec.wait_start_ns is None else rec.wait_start_ns)
        duration.append(np.nan if rec.duration_ms is None else rec.duration_ms)
        for key, value in (("pg", rec.pg), ("name", rec.name), ("pg_desc", rec.pg_desc)):
            index = vocab[key]
            codes[key].append(index.setdefault(value, len(index)))
    cols: dict[str, np.ndarray] = {
        "pg": np.frombuffer(codes["pg"], dtype=np.int32),
        "name": np.frombuffer(codes["name"], dtype=np.int32),
        "pg_desc": np.frombuffer(codes["pg_desc"], dtype=np.int32),
        **{k: np.frombuffer(v, dtype=np.int64) for k, v in ints.items()},
        "duration_ms": np.frombuffer(duration, dtype=np.float64),
        "p2p": np.frombuffer(p2p, dtype=np.int8),
    }
    order = ("pg", "name", "pg_desc", "seq", "enqueue_ns", "start_ns", "end_ns", "duration_ms")
    table = Table(
        {k: cols[k] for k in (*order, "p2p", "peer", "wait_start_ns")},
        {k: list(v) for k, v in vocab.items()},
    )
    found = _repeats(
        table,
        np.frombuffer(score, dtype=np.int8),
        np.frombuffer(rest, dtype=np.int64),
    )
    if found is None:
        return table
    take, repeated = found
    if len(repeated) and bad is not None:
        pgs, seqs = table.strings("pg")[repeated], table["seq"][repeated]
        bad.append(
            readers.repeated_collectives(
                path.name, list(zip(pgs.tolist(), seqs.tolist(), strict=True))
            )
        )
    return table.filter(take)


def _repeats(t: Table, score: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows of a collective log to keep (in file order), and those that repeat one.

    ``readers.read_collectives``'s rule, on columns (a log may hold millions of rows):
    a row equal in every field to an earlier one (``rest``: a hash of the fields the
    table does not keep) is a repeat, the first kept; of the rows of one
    flight-recorder entry (``readers.collective_identity``) that differ, the most
    complete (``score``; the later on a tie) is kept, in the first one's place. None
    (the usual case, one sort of one key) when no entry has two rows.
    """
    n = len(t)
    if n < 2:
        return None
    pg, seq, enq, p2p = t["pg"].astype(np.int64), t["seq"], t["enqueue_ns"], t["p2p"]
    # A key that differs wherever the identity does (wrapping multiplication: equal
    # identities give equal keys, and two entries rarely share one; the sort checks).
    with np.errstate(over="ignore"):
        key = enq * np.int64(1000003) + seq * np.int64(8191) + pg * np.int64(31) + p2p
    s = np.sort(key)
    if not (s[1:] == s[:-1]).any():
        return None
    row = np.arange(n, dtype=np.int64)
    ident = (pg, p2p.astype(np.int64), seq, enq)
    content = (
        t["name"].astype(np.int64),
        t["pg_desc"].astype(np.int64),
        t["start_ns"],
        t["end_ns"],
        t["duration_ms"].view(np.int64),  # by bits: NaN (unknown) equals NaN
        rest,
    )
    # Rows equal in every field, in file order: all but the first are repeats.
    order = np.lexsort((row, *content[::-1], *ident[::-1]))
    same = np.ones(n - 1, dtype=bool)
    for col in (*ident, *content):
        c = col[order]
        same &= c[1:] == c[:-1]
    drop = np.zeros(n, dtype=bool)
    drop[order[1:][same]] = True
    repeated = np.flatnonzero(drop)
    # Of the rest, each entry's most complete row (the later on a tie) in the first's place.
    left = np.flatnonzero(~drop)
    order = left[np.lexsort((left, score[left], *(c[left] for c in ident[::-1])))]
    again = np.zeros(len(order), dtype=bool)  # the same entry as the row before
    again[1:] = True
    for col in ident:
        c = col[order]
        again[1:] &= c[1:] == c[:-1]
    # The last row of each entry's run is its best; the run's first file position is
    # where that row goes.
    starts = np.flatnonzero(~again)
    ends = np.append(starts[1:], len(order)) - 1
    best, place = order[ends], np.minimum.reduceat(order, starts)
    return best[np.argsort(place, kind="stable")], repeated


def _light_comms_table(rows: list[dict[str, Any]]) -> Table:
    """Flight-recorder records (already validated by ``rundir.read_collectives``) as a Table."""
    return Table.build(
        {
            "pg": [str(r["pg"]) for r in rows],
            "name": [str(r["name"]) for r in rows],
            "pg_desc": [str(r.get("pg_desc", "")) for r in rows],
            "seq": np.array([r["seq"] for r in rows], dtype=np.int64),
            "enqueue_ns": np.array([r["enqueue_ns"] for r in rows], dtype=np.int64),
            "start_ns": _ns_or_minus_one([r["start_ns"] for r in rows]),
            "end_ns": _ns_or_minus_one([r["end_ns"] for r in rows]),
            "duration_ms": np.array(
                [np.nan if r["duration_ms"] is None else r["duration_ms"] for r in rows],
                dtype=np.float64,
            ),
            "p2p": np.array([bool(r.get("p2p", False)) for r in rows], dtype=np.int8),
            "peer": _ns_or_minus_one([r.get("peer") for r in rows]),
            "wait_start_ns": _ns_or_minus_one([r.get("wait_start_ns") for r in rows]),
        },
        strings=("pg", "name", "pg_desc"),
    )


def _ns_or_minus_one(values: list[int | None]) -> np.ndarray:
    return np.array([-1 if v is None else v for v in values], dtype=np.int64)


def _numeric_table(rows: list[dict[str, Any]]) -> Table:
    """JSONL records -> a Table of their numeric fields (missing values are NaN)."""
    keys: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                keys.setdefault(k, None)
    cols: dict[str, Any] = {}
    for k in keys:
        values = [row.get(k) for row in rows]
        if k.endswith("_ns") or k == "step":
            # rundir's readers already dropped rows whose times are not int64.
            cols[k] = np.array([v if _is_int64(v) else -1 for v in values], dtype=np.int64)
        else:
            cols[k] = np.array([_float_or_nan(v) for v in values], dtype=np.float64)
    return Table(cols)


def _is_int64(v: Any) -> bool:
    return type(v) is int and -(1 << 63) <= v < (1 << 63)


def _float_or_nan(v: Any) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return np.nan
    try:
        return float(v)
    except OverflowError:  # an int beyond float range
        return np.nan


def _telemetry_file(folder: Path, rank: int) -> Path | None:
    for p in (rundir.telemetry_path(folder, rank), folder / f"rank{rank}.nvml.jsonl"):
        # Not is_file(): a FIFO or a directory there is read, and named as unreadable.
        if p.exists():
            return p
    return None


def rank_data(r: int, refs: list[TraceRef], place: RunPlace, manifest: dict[str, Any]) -> RankData:
    """Rank ``r`` of the run at ``place``: its traces ``refs`` (in time order) and the
    run's other files for that rank, each read when first used."""
    path = Path(place.path)
    folder = path if path.is_dir() else path.parent
    meta = dict(refs[0].meta) if refs else {"rank": r, "has_gpu": False}
    meta["rank"] = r
    rank_manifest = manifest.get("ranks", {}).get(r, {})
    if rank_manifest:
        meta["manifest"] = rank_manifest
    run_dir = path if place.kind == "run_dir" else None
    tel_file = _telemetry_file(folder, r) if path.is_dir() else None
    run_id = manifest.get("run_id") if isinstance(manifest.get("run_id"), str) else None
    rd = RankData(
        rank=r,
        files=[t.path for t in refs],
        meta=meta,
        load_tables=_tables_loader(refs),
        steps_file=str(rundir.steps_path(run_dir, r)) if run_dir is not None else None,
        telemetry_file=str(tel_file or rundir.telemetry_path(folder, r)) if path.is_dir() else None,
        cached=bool(refs) and all(ref.cached for ref in refs),
    )
    # The loaders name what they could not use in the rank's own problems.
    rd._load_steps = _steps_loader(run_dir, r, rd.problems, run_id)
    # Header lines ({"schema": ...}) carry no timestamp and are not samples.
    rd._load_telemetry = _telemetry_loader(tel_file, rd.problems, run_id)
    rd._load_light = _light_loader(run_dir, r, rd.problems, run_id)
    return rd


def _tables_loader(refs: list[TraceRef]) -> Callable[[], dict[str, Table]]:
    def load() -> dict[str, Table]:
        if not refs:
            empty = empty_trace()
            return {name: getattr(empty, name) for name in _TRACE_TABLES}
        traces = [ref.trace() for ref in refs]
        if len(traces) == 1:
            return {name: getattr(traces[0], name) for name in _TRACE_TABLES}
        return {name: Table.concat([getattr(t, name) for t in traces]) for name in _TRACE_TABLES}

    return load


def _steps_loader(
    run_dir: Path | None, rank: int, bad: list[str], run_id: str | None
) -> Callable[[], Table]:
    return lambda: steps_table(
        rundir.read_step_records(run_dir, rank, bad, run_id) if run_dir else []
    )


def steps_table(recs: list[records.StepRecord]) -> Table:
    """Step records -> their Table, column by column (a column per field some record
    has): times int64 (-1: absent), ``capture`` its phase's number k =
    ``rundir.CAPTURE_PHASES[k-1]`` as a float (NaN: none)."""
    cols: dict[str, np.ndarray] = {}
    for name in ("step", "start_ns", "end_ns", "data_ns", "cpu_ns", "runq_ns"):
        values = list(map(operator.attrgetter(name), recs))
        if None in values:
            if values.count(None) == len(values):
                continue
            values = [-1 if v is None else v for v in values]
        cols[name] = np.array(values, dtype=np.int64)
    phases = [r.capture for r in recs]
    if any(p is not None for p in phases):
        code = {p: float(k) for k, p in enumerate(rundir.CAPTURE_PHASES, 1)}
        cols["capture"] = np.array([np.nan if p is None else code[p] for p in phases])
    return Table(cols)


def _telemetry_loader(
    tel_file: Path | None, bad: list[str], run_id: str | None
) -> Callable[[], Table]:
    return lambda: _numeric_table(rundir.read_samples(tel_file, bad, run_id) if tel_file else [])


def _light_loader(
    run_dir: Path | None, rank: int, bad: list[str], run_id: str | None
) -> Callable[[], Table]:
    return lambda: (
        _stream_light_comms(run_dir, rank, bad, run_id)
        if run_dir is not None
        else _light_comms_table([])
    )
