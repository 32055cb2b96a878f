"""Find the traces of a run, ingest them (cached, in parallel) and group them by rank.

``load_run(path)`` accepts a collector run directory, a folder written by
``torch.profiler.tensorboard_trace_handler``, an HTA-style folder
(``rank-N.json.gz``) or one trace file, and returns a ``Run``:

- ``ranks``: rank -> ``RankData`` (the trace tables of every capture window of
  that rank concatenated, plus the collector's step timer and telemetry rows
  when the run directory has them);
- ``skipped_files``: files that could not be used, each with its reason (the
  good ranks are still analysed);
- ``warnings``: one line each, for the user.

A rank comes from the trace's ``distributedInfo``, else from the file name
(``rank3``, ``rank-3``, ``worker3``), else rank 0 for a lone file (with a
warning). Two files claiming one rank is a RankscopeError naming both, except
in a collector run directory, where one rank's files are its capture windows.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankscope.dashboard.ingest import cache
from rankscope.dashboard.ingest.kineto import RankTrace, empty_trace, parse_trace
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler import rundir
from rankscope.profiler.errors import RankscopeError

# Below this much JSON in total, forking workers costs more than it saves.
_PARALLEL_MIN_BYTES = 8_000_000


_TRACE_TABLES = ("gpu", "cpu", "gpu_ann", "comms")


class RankData:
    """One rank: its trace tables (every capture window concatenated), the
    collector's step timer and telemetry, and the flight recorder's log.

    - ``gpu``, ``cpu``, ``gpu_ann``, ``comms``: trace tables (``kineto``)
    - ``step_marks``: collector step timer: step, start_ns, end_ns[, data_ns, capture]
      (may be empty; ``capture``: 1-4 = ``rundir.CAPTURE_PHASES``, NaN on other steps)
    - ``telemetry``: NVML/host samples: ts_ns and numeric fields (may be empty)
    - ``light_comms``: the flight recorder's log (``rank{R}.collectives.jsonl``): pg,
      name (strings), seq, enqueue_ns; empty where the collector did not record it

    Each is read when first used: a report over many ranks reads each rank's
    digest (``analysis.digest``), not its events. ``steps_file`` and
    ``telemetry_file`` are where the step timer and the samples come from (None:
    none for this kind of run); ``digest`` holds the digest once made.
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
    ) -> None:
        self.rank = rank
        self.files = files
        self.meta = meta
        given = {"gpu": gpu, "cpu": cpu, "gpu_ann": gpu_ann, "comms": comms}
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
        self.digest: Any = None

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


@dataclass
class Run:
    path: str
    kind: str  # run_dir | folder | file
    ranks: dict[int, RankData]
    world_size: int
    manifest: dict[str, Any] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


ProgressFn = Callable[[int, int, str], None]


def discover_trace_files(path: Path) -> tuple[Path, str, list[Path]]:
    """The run at ``path``, its kind and its trace files (``rundir.find_run``).

    A RankscopeError when there is no run, or when ``path`` holds several runs.
    """
    found = rundir.find_run(path)
    return found.path, found.kind, list(found.traces)


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


@dataclass(frozen=True)
class RunPlace:
    """Where a run is (``path``: its folder, or a lone trace file) and its kind: what
    a rank's step timer, telemetry and collective log are read from."""

    kind: str
    path: str


def expected_ranks(files: list[Path]) -> dict[str, int]:
    """Files whose name gives a rank no other file's name gives: file -> that rank.

    A worker that parsed such a file can make that rank's digest on the spot
    (a rank with several files, its capture windows, is digested once all are in).
    """
    by_rank: dict[int, list[str]] = {}
    for f in files:
        r = rundir.rank_from_filename(f.name)
        if r is not None and rundir.valid_rank(r):
            by_rank.setdefault(r, []).append(str(f))
    return {fs[0]: r for r, fs in by_rank.items() if len(fs) == 1}


def _rank_of(meta: dict[str, Any], path: Path) -> int | None:
    """A trace's rank: its ``distributedInfo``, else its file name (None: neither says)."""
    r = meta.get("rank")
    return r if isinstance(r, int) and r >= 0 else rundir.rank_from_filename(path.name)


def _digest_now(ref: TraceRef, place: RunPlace | None, expect_rank: int | None) -> bool:
    """In an ingest worker: make and cache the digest of the rank whose one trace is
    ``ref``, when the trace is the rank its file name promised (``expected_ranks``).
    Whether the digest is in the cache now; a digest that cannot be made is made
    again by the report, never an ingest error."""
    if place is None or expect_rank is None or _rank_of(ref.meta, Path(ref.path)) != expect_rank:
        return False
    from rankscope.dashboard.analysis.digest import digest_of, is_cached

    try:
        rd = _rank_data(expect_rank, [ref], place, {})
        digest_of(rd)
        return is_cached(rd)
    except Exception:
        return False


def _parse_and_cache(
    path: str, place: RunPlace | None = None, expect_rank: int | None = None
) -> TraceRef | str:
    """Worker body: parse one file and store it in the cache; an error becomes a string.

    A stored trace comes back as its metadata only (the parent reads the tables from
    the cache if a view asks), so a thousand ranks' events never cross into one
    process. With ``place`` and the rank the file's name promised, the worker also
    stores that rank's digest.
    """
    p = Path(path)
    try:
        trace = parse_trace(p)
    except RankscopeError as e:
        return str(e)
    except Exception as e:  # a trace we do not understand must not sink the others
        return f"{path}: could not be parsed ({type(e).__name__}: {e})"
    trace.path = path
    ref = TraceRef(path, trace.meta, trace)
    if not cache.worth_caching(p):
        return ref
    cache.store(trace)
    if cache.load_meta(p) is None:  # the cache could not be written: keep the tables
        return ref
    _digest_now(ref, place, expect_rank)
    return TraceRef(path, trace.meta)


def ingest_one(
    path: str, place: RunPlace | None = None, expect: dict[str, int] | None = None
) -> dict[str, Any]:
    """Worker body of ``rankscope ingest``: the file's cache entry written, its summary back.

    Returns ``{"path", "summary", "cached": "hit" | "written" | "not written",
    "digest": bool, "seconds"}``, or ``{"path", "error"}``. Every trace is stored,
    however small, so each rank has a summary; the cache must be on a filesystem the
    review side reads. With the run's ``place`` and the ranks its file names promise
    (``expected_ranks``), the rank's digest is made too (``digest``: whether it is
    cached now), so the report reads nothing else.
    """
    start = time.monotonic()
    p = Path(path)
    try:
        trace = cache.load(p)
        state = "hit"
        if trace is None:
            trace = parse_trace(p)
            cache.store(trace)
            state = "written" if cache.load_summary(p) is not None else "not written"
    except RankscopeError as e:
        return {"path": path, "error": str(e)}
    except Exception as e:  # a trace we do not understand must not sink the others
        return {"path": path, "error": f"{path}: could not be parsed ({type(e).__name__}: {e})"}
    trace.path = path
    digested = _digest_now(TraceRef(path, trace.meta, trace), place, (expect or {}).get(path))
    return {
        "path": path,
        "summary": cache.summarise(trace),
        "cached": state,
        "digest": digested,
        "seconds": round(time.monotonic() - start, 3),
    }


class TraceRef:
    """One ingested trace file: its metadata now, its tables when first asked for.

    A cache hit reads only the entry's ``meta.json``; ``trace()`` reads the tables
    (and parses the file again should the entry have gone bad meanwhile).
    """

    def __init__(self, path: str, meta: dict[str, Any], trace: RankTrace | None = None) -> None:
        self.path = path
        self.meta = meta
        self._trace = trace

    def trace(self) -> RankTrace:
        if self._trace is None:
            p = Path(self.path)
            t = cache.load(p)
            if t is None:
                t = parse_trace(p)
                if cache.worth_caching(p):
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


def ingest_files(
    files: Iterable[Path], progress: ProgressFn | None = None, place: RunPlace | None = None
) -> tuple[dict[str, TraceRef], dict[str, str]]:
    """Each file ingested (from the cache where possible: metadata only, tables on
    first use) and the reason per failed file. With ``place`` (the run), workers
    also store the digest of each rank that has one file."""
    files = list(files)
    expect = expected_ranks(files) if place is not None else {}
    done: dict[str, TraceRef] = {}
    failed: dict[str, str] = {}
    todo: list[Path] = []
    for f in files:
        meta = cache.load_meta(f) if cache.worth_caching(f) else None
        if meta is not None:
            done[str(f)] = TraceRef(str(f), meta)
        else:
            todo.append(f)
    total = len(files)
    n = len(done)
    if progress and (n or todo):
        # Show the bar before the first (possibly long) parse, not after it.
        progress(n, total, f"{len(todo)} trace(s)" if todo else "cached")

    def record(path: str, result: TraceRef | str) -> None:
        nonlocal n
        n += 1
        if isinstance(result, str):
            failed[path] = result
        else:
            done[path] = result
        if progress:
            progress(n, total, Path(path).name)

    size = sum(json_size(f) for f in todo)
    workers = min(len(todo), os.cpu_count() or 1)
    if workers > 1 and size > _PARALLEL_MIN_BYTES:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork: workers inherit the imported modules, so each starts in milliseconds.
        ctx = mp.get_context("fork") if sys.platform != "win32" else None
        paths = [str(f) for f in todo]
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = pool.map(
                _parse_and_cache, paths, [place] * len(paths), [expect.get(p) for p in paths]
            )
            for name, result in zip(paths, results, strict=True):
                record(name, result)
    else:
        for f in todo:
            # In this process the tables stay in memory: the digest is made from them later.
            record(str(f), _parse_and_cache(str(f)))
    return done, failed


def _light_comms_table(rows: list[dict[str, Any]]) -> Table:
    """Flight-recorder records (already validated by ``rundir.read_collectives``) as a Table."""
    return Table.build(
        {
            "pg": [str(r["pg"]) for r in rows],
            "name": [str(r["name"]) for r in rows],
            "seq": np.array([r["seq"] for r in rows], dtype=np.int64),
            "enqueue_ns": np.array([r["enqueue_ns"] for r in rows], dtype=np.int64),
        },
        strings=("pg", "name"),
    )


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
        if p.is_file():
            return p
    return None


def _rank_data(r: int, refs: list[TraceRef], place: RunPlace, manifest: dict[str, Any]) -> RankData:
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
    return RankData(
        rank=r,
        files=[t.path for t in refs],
        meta=meta,
        load_tables=_tables_loader(refs),
        load_steps=_steps_loader(run_dir, r),
        # Header lines ({"schema": ...}) carry no timestamp and are not samples.
        load_telemetry=_telemetry_loader(tel_file),
        load_light=_light_loader(run_dir, r),
        steps_file=str(rundir.steps_path(run_dir, r)) if run_dir is not None else None,
        telemetry_file=str(tel_file or rundir.telemetry_path(folder, r)) if path.is_dir() else None,
    )


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


def _steps_loader(run_dir: Path | None, rank: int) -> Callable[[], Table]:
    return lambda: _numeric_table(
        _capture_codes(rundir.read_steps(run_dir, rank) if run_dir else [])
    )


def _capture_codes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A step's ``capture`` phase as its number: k = rundir.CAPTURE_PHASES[k-1] (no field: 0)."""
    for row in rows:
        if "capture" in row:
            row["capture"] = rundir.CAPTURE_PHASES.index(row["capture"]) + 1
    return rows


def _telemetry_loader(tel_file: Path | None) -> Callable[[], Table]:
    return lambda: _numeric_table(rundir.read_samples(tel_file) if tel_file else [])


def _light_loader(run_dir: Path | None, rank: int) -> Callable[[], Table]:
    return lambda: _light_comms_table(rundir.read_collectives(run_dir, rank) if run_dir else [])


def load_run(
    path: str | Path,
    ranks: Iterable[int] | None = None,
    progress: ProgressFn | None = None,
) -> Run:
    path, kind, files = discover_trace_files(Path(path))
    place = RunPlace(kind, str(path))
    traces, failed = ingest_files(files, progress, place)
    skipped = [{"file": f, "reason": reason} for f, reason in failed.items()]
    warnings = [f"skipped {s['file']}: {s['reason']}" for s in skipped]

    # Rank of each good file.
    by_rank: dict[int, list[TraceRef]] = {}
    lone = len(files) == 1
    for f in files:
        t = traces.get(str(f))
        if t is None:
            continue
        r = _rank_of(t.meta, f)
        if r is not None and not rundir.valid_rank(r):
            reason = f"rank {r} is beyond the largest world size ({rundir.MAX_WORLD_SIZE})"
            skipped.append({"file": str(f), "reason": reason})
            warnings.append(f"skipped {f}: {reason}")
            continue
        if t.meta.get("dropped_events"):
            warnings.append(
                f"{f.name}: {t.meta['dropped_events']} event(s) with a timestamp or duration"
                " out of range were left out"
            )
        if r is None:
            if lone:
                r = 0
                warnings.append(f"{f.name}: no rank in the trace or file name; assuming rank 0")
            else:
                reason = "no rank in the trace's distributedInfo or in the file name"
                skipped.append({"file": str(f), "reason": reason})
                warnings.append(f"skipped {f}: {reason}")
                continue
        by_rank.setdefault(r, []).append(t)
    for r, ts in by_rank.items():
        if len(ts) > 1 and kind != "run_dir":
            raise RankscopeError(f"two trace files claim rank {r}: {ts[0].path} and {ts[1].path}")

    manifest = rundir.read_run_manifest(path) if kind == "run_dir" else {}
    # Collector-only ranks (telemetry/steps but no trace yet) still count in a run dir.
    if kind == "run_dir":
        for r in manifest.get("ranks", {}):
            by_rank.setdefault(int(r), [])

    world_sizes = [t.meta.get("world_size") for ts in by_rank.values() for t in ts]
    world_sizes += [manifest.get("world_size")]
    warnings += [f"{path}: {p}" for p in manifest.get("problems", [])]
    too_big = [w for w in world_sizes if isinstance(w, int) and not rundir.valid_world_size(w)]
    if any(w > 0 for w in too_big):
        warnings.append(
            f"a world size of {max(too_big)} was read and ignored (the most rankscope reads"
            f" is {rundir.MAX_WORLD_SIZE})"
        )
    world_size = max([w for w in world_sizes if rundir.valid_world_size(w)], default=0)
    world_size = max(world_size, max(by_rank, default=-1) + 1)
    if world_size > len(by_rank):
        # The first 17 missing ranks, without a set as large as the world.
        missing = list(itertools.islice((r for r in range(world_size) if r not in by_rank), 17))
        shown = ", ".join(map(str, missing[:16])) + (" ..." if len(missing) > 16 else "")
        warnings.append(
            f"world size is {world_size} but only {len(by_rank)} rank(s) have traces;"
            f" missing ranks: {shown} (waits and last arrivals are among the ranks present)"
        )

    wanted = set(ranks) if ranks is not None else None
    out: dict[int, RankData] = {}
    for r in sorted(by_rank):
        if wanted is not None and r not in wanted:
            continue
        refs = by_rank[r]
        if len(refs) > 1:
            refs = sorted(refs, key=lambda t: t.cpu_start_ns())
        out[r] = _rank_data(r, refs, place, manifest)
    if wanted is not None:
        unknown = sorted(wanted - set(by_rank))
        if unknown:
            raise RankscopeError(
                f"--ranks asks for rank(s) {', '.join(map(str, unknown))}, which the run does not"
                f" have (ranks present: {', '.join(map(str, sorted(by_rank))) or 'none'})"
            )
    if not out:
        reasons = "; ".join(s["reason"] for s in skipped[:3])
        raise RankscopeError(f"{path}: no usable trace ({reasons or 'nothing to read'})")
    return Run(
        path=str(path),
        kind=kind,
        ranks=out,
        world_size=world_size,
        manifest=manifest,
        skipped_files=skipped,
        warnings=warnings,
    )


def stderr_progress() -> ProgressFn | None:
    """A progress bar on a terminal; on a pipe, a line per file only for slow ingests."""
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True, console=None)
        task = None

        def on_tty(done: int, total: int, label: str) -> None:
            nonlocal task
            if task is None:
                bar.start()
                task = bar.add_task("ingesting traces", total=total)
            bar.update(task, completed=done, description=f"ingesting {label}")
            if done >= total:
                bar.stop()

        return on_tty
    start = time.monotonic()

    def on_pipe(done: int, total: int, label: str) -> None:
        if time.monotonic() - start > 2.0:
            print(f"rankscope: ingested {done}/{total} ({label})", file=sys.stderr, flush=True)

    return on_pipe
