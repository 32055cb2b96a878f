"""Parquet cache of parsed traces, keyed on file identity and ingest version.

An entry is a folder: ``{gpu,cpu,gpu_ann,comms,memory}.parquet``, ``meta.json`` and
``summary.json`` (``summarise``: a few numbers per file, for cross-rank views).

A trace's key is the hash of (absolute path, size, mtime_ns, INGEST_VERSION), so
an edited or replaced file, or a new parser, misses the cache. Entries live in
``$RANKSCOPE_CACHE_DIR`` when set, else the per-user cache directory
(``~/.cache/rankscope`` on Linux). Whether to cache is decided per run
(``worth_caching``): a run whose trace files hold less than ``MIN_CACHED_BYTES``
in all is parsed every time (see there). A cache that cannot be written is skipped:
caching speeds things up, it is never required (a ``$RANKSCOPE_CACHE_DIR`` that is
not a directory, or cannot be written, is named once by the console script). An entry that cannot
be read back whole (see ``load``) is removed and rewritten, never trusted; its
files are opened through ``rankscope.profiler.safeio`` (no FIFO, no symlink).
``meta.json`` and ``summary.json`` are the Structs of ``ingest.records``,
checked when read; their format version is INGEST_VERSION.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankscope.dashboard.ingest import records
from rankscope.dashboard.ingest.kineto import RankTrace
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler import safeio
from rankscope.profiler.settings import env_value

if TYPE_CHECKING:
    import pyarrow as pa  # noqa: F401

# Bump whenever parse_trace's output changes, so old entries are never read.
INGEST_VERSION = 9  # 8: the memory table and meta's device_memory; 9: meta's origin
# Parsing under ~1 MB of traces (gzipped) takes about as long as importing pyarrow
# to write the cache, so a run whose trace files hold less in all is parsed every
# time unless $RANKSCOPE_CACHE_MIN_BYTES says otherwise (0 caches everything). The
# sum, not each file: a thousand small traces are worth caching, one is not.
MIN_CACHED_BYTES = 1_000_000
_TABLES = ("gpu", "cpu", "gpu_ann", "comms", "memory")


def cache_root() -> Path:
    env = os.environ.get("RANKSCOPE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rankscope", appauthor=False))


def file_identity(path: str | Path) -> str:
    """``path|size|mtime_ns`` of a file (resolved): what a cache key says of it.
    OSError when it cannot be stat'ed."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def cache_key(path: Path) -> str:
    import hashlib  # only files worth caching need a key; small traces skip the import

    ident = f"{file_identity(path)}|{INGEST_VERSION}"
    return hashlib.sha1(ident.encode()).hexdigest()


def min_cached_bytes() -> int:
    value: int = env_value("RANKSCOPE_CACHE_MIN_BYTES", MIN_CACHED_BYTES)
    return value


def worth_caching(paths: Iterable[str | Path]) -> bool:
    """Whether a run whose trace files are ``paths`` caches them (and its digests):
    their sizes on disk add up to ``min_cached_bytes()`` or more."""
    limit = min_cached_bytes()
    total = 0
    for p in paths:
        try:
            total += Path(p).stat().st_size
        except OSError:
            continue
        if total >= limit:
            return True
    return total >= limit


def _columns() -> dict[str, set[str]]:
    """The columns each cached table must have: those ``parse_trace`` produces."""
    global _COLUMNS
    if _COLUMNS is None:
        from rankscope.dashboard.ingest.kineto import empty_trace

        empty = empty_trace()
        _COLUMNS = {t: set(getattr(empty, t).cols) for t in _TABLES}
    return _COLUMNS


_COLUMNS: dict[str, set[str]] | None = None


def _discard(entry: Path) -> None:
    """Remove a corrupt entry (a file, a FIFO, a directory) so the next store replaces it."""
    import shutil

    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
    except OSError:
        pass


def discard(path: Path) -> None:
    """Forget ``path``'s entry, so the next ingest parses the file again."""
    _discard(cache_root() / cache_key(Path(path)))


def _read_entry(entry: Path, path: Path) -> RankTrace | None:
    """An entry's tables, checked; None (and the entry removed) when it is not sound."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = _read_meta(entry)
        tables: dict[str, Table] = {}
        for t in _TABLES:
            fd = safeio.open_regular(entry / f"{t}.parquet", nofollow=True)
            with os.fdopen(fd, "rb") as f:
                # ParquetFile.read, not read_table: the latter imports pandas (~0.3 s).
                table = Table.from_arrow(pq.ParquetFile(f).read(use_pandas_metadata=False))
            if set(table.cols) != _columns()[t]:
                raise ValueError(f"{t}.parquet holds other columns")
            tables[t] = table
    except FileNotFoundError:
        if entry.exists():
            _discard(entry)  # half an entry
        return None
    except (OSError, ValueError, RecursionError, pa.ArrowException):
        _discard(entry)
        return None
    return RankTrace(str(path), meta, **tables)


def load(path: Path) -> RankTrace | None:
    """The cached tables for ``path``, or None on a miss.

    An entry that cannot be read back as the tables ``parse_trace`` makes (a
    truncated Parquet file, a ``meta.json`` that is not an object, tables of the
    wrong shape, a FIFO in their place) is removed, so the next ``store`` replaces it.
    """
    try:
        entry = cache_root() / cache_key(path)
        if not entry.exists() and not entry.is_symlink():
            return None
    except OSError:
        return None
    return _read_entry(entry, path)


def load_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of ``path``'s cache entry (one small file), None on a miss.

    The tables are read later, by ``load``, which checks them.
    """
    try:
        return _read_meta(cache_root() / cache_key(path))
    except (OSError, ValueError, RecursionError):
        return None


def _read_meta(entry: Path) -> dict[str, Any]:
    """An entry's ``meta.json``, checked against ``records.TraceMeta`` (ValueError if not)."""
    data = safeio.read_bytes(entry / "meta.json", safeio.MAX_JSON_BYTES)
    return records.decode_checked(data, records.TraceMeta)


def summarise(trace: RankTrace) -> dict[str, Any]:
    """A few numbers per trace file, small enough to read for thousands of ranks.

    rank, world_size (None when the trace does not say), gpu_events, cpu_events,
    comms, start_ns / end_ns (the trace's first start and last end on its own
    clock, None when empty), kernel_ns (sum of GPU kernel durations),
    comm_kernel_ns (of those, NCCL/RCCL kernels), comm_ns (sum of collective
    durations), dropped_events, cpu_start_ns (the first host event's start, 0
    without any: orders a rank's capture windows).
    """
    starts = [t.cols["ts"] for t in (trace.gpu, trace.cpu) if len(t)]
    ends = [t.cols["ts"] + t.cols["dur"] for t in (trace.gpu, trace.cpu) if len(t)]
    kernels = trace.gpu.cols["kind"] == 0 if len(trace.gpu) else None
    kernel_dur = trace.gpu.cols["dur"][kernels] if kernels is not None else None
    comm_kernel = trace.gpu.cols["is_comm"][kernels] if kernels is not None else None
    return {
        "rank": trace.meta.get("rank"),
        "world_size": trace.meta.get("world_size"),
        "gpu_events": len(trace.gpu),
        "cpu_events": len(trace.cpu),
        "comms": len(trace.comms),
        "start_ns": min(int(s.min()) for s in starts) if starts else None,
        "end_ns": max(int(e.max()) for e in ends) if ends else None,
        "kernel_ns": int(kernel_dur.sum()) if kernel_dur is not None else 0,
        "comm_kernel_ns": int(kernel_dur[comm_kernel].sum()) if kernel_dur is not None else 0,
        "comm_ns": int(trace.comms.cols["dur"].sum()) if len(trace.comms) else 0,
        "dropped_events": int(trace.meta.get("dropped_events", 0)),
        "cpu_start_ns": int(trace.cpu.cols["ts"].min()) if len(trace.cpu) else 0,
    }


def load_summary(path: Path) -> dict[str, Any] | None:
    """The ``summarise`` numbers stored with ``path``'s cache entry; None when absent or bad.

    Reads one small JSON file: neither pyarrow nor the tables are loaded.
    """
    try:
        entry = cache_root() / cache_key(path)
        data = safeio.read_bytes(entry / "summary.json", safeio.MAX_JSON_BYTES)
        return records.decode_checked(data, records.TraceSummary)
    except (OSError, ValueError, RecursionError, safeio.UnsafeFile):
        return None


def store(trace: RankTrace) -> None:
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        entry = root / cache_key(Path(trace.path))
        if entry.exists() or entry.is_symlink():
            if _read_entry(entry, Path(trace.path)) is not None:
                return
            _discard(entry)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            for t in _TABLES:
                table: Table = getattr(trace, t)
                pq.write_table(
                    table.to_arrow(),
                    tmp / f"{t}.parquet",
                    compression="zstd",
                )
            (tmp / "meta.json").write_bytes(records.encode(trace.meta))
            (tmp / "summary.json").write_bytes(records.encode(summarise(trace)))
            os.replace(tmp, entry)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except (OSError, ValueError, pa.ArrowException):
        return


# ---------------------------------------------------------------- blobs
# Small derived files (a rank's digest) kept under ``cache_root()/KIND/KEY``.


def _blob_path(kind: str, key: str) -> Path:
    return cache_root() / kind / key


def load_blob(kind: str, key: str, limit: int = 256 << 20) -> bytes | None:
    """The bytes stored under ``kind``/``key``; None when absent or unreadable."""
    try:
        return safeio.read_bytes(_blob_path(kind, key), limit)
    except (OSError, ValueError, safeio.UnsafeFile):
        return None


def store_blob(kind: str, key: str, data: bytes) -> None:
    """Store ``data`` atomically; a cache that cannot be written is skipped."""
    import tempfile

    try:
        folder = cache_root() / kind
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / key)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        return


def discard_blob(kind: str, key: str) -> None:
    _discard(_blob_path(kind, key))
