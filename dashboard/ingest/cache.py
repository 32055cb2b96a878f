"""Parquet cache of parsed traces, keyed on file identity and ingest version.

A trace's key is the hash of (absolute path, size, mtime_ns, INGEST_VERSION), so
an edited or replaced file, or a new parser, misses the cache. Entries live in
``$RANKSCOPE_CACHE_DIR`` when set, else the per-user cache directory
(``~/.cache/rankscope`` on Linux). Traces smaller than ``MIN_CACHED_BYTES``
are not cached (see there). A cache that cannot be written is skipped
silently: caching speeds things up, it is never required.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rankscope.dashboard.ingest.kineto import RankTrace
from rankscope.dashboard.ingest.table import Table

if TYPE_CHECKING:
    import pyarrow as pa  # noqa: F401

# Bump whenever parse_trace's output changes, so old entries are never read.
INGEST_VERSION = 5
# Parsing a trace under ~1 MB (gzipped) takes about as long as importing pyarrow
# and reading it back, so such files are parsed every time unless
# $RANKSCOPE_CACHE_MIN_BYTES says otherwise (0 caches everything).
MIN_CACHED_BYTES = 1_000_000
_TABLES = ("gpu", "cpu", "gpu_ann", "comms")


def cache_root() -> Path:
    env = os.environ.get("RANKSCOPE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rankscope", appauthor=False))


def cache_key(path: Path) -> str:
    import hashlib  # only files worth caching need a key; small traces skip the import

    p = Path(path).resolve()
    st = p.stat()
    ident = f"{p}|{st.st_size}|{st.st_mtime_ns}|{INGEST_VERSION}"
    return hashlib.sha1(ident.encode()).hexdigest()


def min_cached_bytes() -> int:
    try:
        return int(os.environ.get("RANKSCOPE_CACHE_MIN_BYTES", MIN_CACHED_BYTES))
    except ValueError:
        return MIN_CACHED_BYTES


def worth_caching(path: Path) -> bool:
    try:
        return Path(path).stat().st_size >= min_cached_bytes()
    except OSError:
        return False


def load(path: Path) -> RankTrace | None:
    """The cached tables for ``path``, or None on a miss."""
    try:
        entry = cache_root() / cache_key(path)
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # ParquetFile.read, not read_table: the latter imports pandas (~0.3 s).
        tables = {
            t: Table.from_arrow(
                pq.ParquetFile(entry / f"{t}.parquet").read(use_pandas_metadata=False)
            )
            for t in _TABLES
        }
    except (OSError, pa.ArrowException):
        return None
    return RankTrace(str(path), meta, **tables)


def store(trace: RankTrace) -> None:
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        entry = root / cache_key(Path(trace.path))
        if entry.exists():
            return
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            for t in _TABLES:
                table: Table = getattr(trace, t)
                pq.write_table(
                    table.to_arrow(),
                    tmp / f"{t}.parquet",
                    compression="zstd",
                )
            (tmp / "meta.json").write_text(json.dumps(trace.meta))
            os.replace(tmp, entry)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except (OSError, pa.ArrowException):
        return
