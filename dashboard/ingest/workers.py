"""What ingest workers do with one trace file, and the pool that runs them.

``ingest_files(files)`` is what ``load_run`` reads a run's traces with: from the
cache where it can (metadata only, tables on first use), else parsed (in the
``engine``'s local process pool when there is enough JSON to be worth it) and
stored in the cache. ``ingest_one(job)`` is the worker body of ``rankscope
ingest``: the file's cache entry written, its summary back.

A worker that parsed the one trace of a rank (``TraceJob.expect_rank``) may also
make that rank's digest on the spot, so the report later reads nothing else. What
a digest is, ingest does not know: the layer above hands in a ``DigestFn``
(``analysis.digest.store_digest``), and workers call it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankscope.dashboard.ingest import cache, engine
from rankscope.dashboard.ingest.kineto import parse_trace
from rankscope.dashboard.ingest.rank import RankData, RunPlace, rank_data
from rankscope.dashboard.ingest.tracefile import TraceRef, json_size, rank_of
from rankscope.profiler import rundir
from rankscope.profiler.errors import RankscopeError

# Below this much JSON in total, forking workers costs more than it saves.
_PARALLEL_MIN_BYTES = 8_000_000

ProgressFn = Callable[[int, int, str], None]
# Makes and caches one rank's digest; whether it is in the cache now.
DigestFn = Callable[[RankData], bool]


@dataclass(frozen=True)
class TraceJob:
    """One trace file for a worker, and the rank its name promises when no other file
    of the run promises that rank (None otherwise): the rank a worker may digest."""

    path: str
    expect_rank: int | None = None


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


def trace_jobs(files: list[Path]) -> list[TraceJob]:
    """A job per file, each with the rank it may digest (``expected_ranks``)."""
    expect = expected_ranks(files)
    return [TraceJob(str(f), expect.get(str(f))) for f in files]


def _digest_now(
    ref: TraceRef, place: RunPlace | None, expect_rank: int | None, digest: DigestFn | None
) -> bool:
    """In an ingest worker: ``digest`` the rank whose one trace is ``ref``, when the
    trace is the rank its file name promised (``expected_ranks``). Whether the digest
    is in the cache now; a digest that cannot be made is made again by the report,
    never an ingest error."""
    if digest is None or place is None or expect_rank is None:
        return False
    if rank_of(ref.meta, Path(ref.path)) != expect_rank:
        return False
    try:
        return bool(digest(rank_data(expect_rank, [ref], place, {})))
    except Exception:
        return False


def parse_and_cache(
    job: TraceJob,
    place: RunPlace | None = None,
    digest: DigestFn | None = None,
    *,
    store: bool = True,
    keep_tables: bool = False,
) -> TraceRef | str:
    """Worker body of ``ingest_files``: parse one file and, with ``store`` (the run is
    worth caching), store it in the cache; an error becomes a string.

    A stored trace comes back as its metadata only (the parent reads the tables from
    the cache if a view asks), so a thousand ranks' events never cross into one
    process; with ``keep_tables`` (parsed in the parent itself) its tables stay in
    memory, where the digest is made from them. With ``place`` and ``digest``, the
    worker also stores the digest of the rank the job expects.
    """
    path = job.path
    p = Path(path)
    try:
        trace = parse_trace(p)
    except RankscopeError as e:
        return str(e)
    except Exception as e:  # a trace we do not understand must not sink the others
        return f"{path}: could not be parsed ({type(e).__name__}: {e})"
    trace.path = path
    if not store:
        return TraceRef(path, trace.meta, trace)
    cache.store(trace)
    ref = TraceRef(path, trace.meta, trace, cached=True)
    if cache.load_meta(p) is None:  # the cache could not be written: keep the tables
        return ref
    if keep_tables:
        return ref
    _digest_now(ref, place, job.expect_rank, digest)
    return TraceRef(path, trace.meta, cached=True)


def name_rank_problem(meta: dict[str, Any], path: Path) -> str | None:
    """Why a trace whose ``distributedInfo`` (``meta["rank"]``) gives one rank and whose
    file name another is not what its name says, or None (either one silent)."""
    named, said = rundir.rank_from_filename(Path(path).name), meta.get("rank")
    if rundir.other_rank(said, named) is None:  # the one test of a name against a rank
        return None
    return f"its trace says rank {said} (distributedInfo), its name rank {named}"


def ingest_one(
    job: TraceJob, place: RunPlace | None = None, digest: DigestFn | None = None
) -> dict[str, Any]:
    """Worker body of ``rankscope ingest``: the file's cache entry written, its summary back.

    Returns ``{"path", "summary", "cached": "hit" | "written" | "not written",
    "digest": bool, "seconds"}``, or ``{"path", "error"}``. Every trace is stored,
    however small, so each rank has a summary; the cache must be on a filesystem the
    review side reads. With the run's ``place`` and a ``digest`` function, the rank
    the job expects is digested too (``"digest"``: whether it is cached now), so the
    report reads nothing else.
    """
    start = time.monotonic()
    path = job.path
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
    ref = TraceRef(path, trace.meta, trace, cached=True)
    digested = _digest_now(ref, place, job.expect_rank, digest)
    return {
        "path": path,
        "summary": cache.summarise(trace),
        "cached": state,
        "digest": digested,
        "seconds": round(time.monotonic() - start, 3),
    }


def ingest_files(
    files: Iterable[Path],
    progress: ProgressFn | None = None,
    place: RunPlace | None = None,
    digest: DigestFn | None = None,
) -> tuple[dict[str, TraceRef], dict[str, str]]:
    """Each file ingested (from the cache where possible: metadata only, tables on
    first use) and the reason per failed file, both in the order of ``files``. With
    ``place`` (the run) and ``digest``, workers also store the digest of each rank
    that has one file. Whether the files are cached is decided for the run as a
    whole (``cache.worth_caching``)."""
    files = list(files)
    store = cache.worth_caching(files)
    done: dict[str, TraceRef] = {}
    todo: list[Path] = []
    for f in files:
        meta = cache.load_meta(f) if store else None
        if meta is not None and name_rank_problem(meta, f) is not None:
            # The entry says another rank than the file's name (an entry altered, or a
            # file renamed in place): parse the file again rather than trust it.
            cache.discard(f)
            meta = None
        if meta is not None:
            done[str(f)] = TraceRef(str(f), meta, cached=True)
        else:
            todo.append(f)
    total = len(files)
    n = len(done)
    if progress and (n or todo):
        # Show the bar before the first (possibly long) parse, not after it.
        progress(n, total, f"{len(todo)} trace(s)" if todo else "cached")

    results: dict[str, TraceRef | str] = {}

    def record(path: str, result: TraceRef | str) -> None:
        results[path] = result
        if progress:
            progress(n + len(results), total, Path(path).name)

    workers = min(len(todo), os.cpu_count() or 1)
    if workers > 1 and sum(json_size(f) for f in todo) > _PARALLEL_MIN_BYTES:
        expect = expected_ranks(files) if place is not None and digest is not None else {}
        jobs = [TraceJob(str(f), expect.get(str(f))) for f in todo]
        work = functools.partial(parse_and_cache, place=place, digest=digest, store=store)
        for job, result in engine.map_files(work, jobs, "local"):
            record(job.path, result)
    else:
        for f in todo:
            # In this process the tables stay in memory: the digest is made from them later.
            record(str(f), parse_and_cache(TraceJob(str(f)), store=store, keep_tables=True))
    failed: dict[str, str] = {}
    for f in todo:  # in the files' order, whatever order the workers finished in
        result = results[str(f)]
        if isinstance(result, str):
            failed[str(f)] = result
        else:
            done[str(f)] = result
    return done, failed
