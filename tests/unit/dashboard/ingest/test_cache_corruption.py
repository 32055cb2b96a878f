"""A corrupt cache entry is never trusted and never kept: it is removed and rewritten."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import data_path

from rankscope.dashboard.ingest import cache
from rankscope.dashboard.ingest.kineto import parse_trace


def _swap_tables(entry: Path) -> None:
    (entry / "gpu.parquet").rename(entry / "tmp.parquet")
    (entry / "cpu.parquet").rename(entry / "gpu.parquet")
    (entry / "tmp.parquet").rename(entry / "cpu.parquet")


def _fifo(name: str) -> Callable[[Path], None]:
    def make(entry: Path) -> None:
        (entry / name).unlink()
        os.mkfifo(entry / name)

    return make


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda e: (e / "meta.json").write_text("[]"),
        lambda e: (e / "meta.json").write_text('{"pg_ranks": 3}'),
        lambda e: (e / "meta.json").write_bytes(b"\xff\xfe"),
        _swap_tables,
        lambda e: (e / "comms.parquet").write_bytes(b"PAR1 truncated"),
        lambda e: (e / "gpu.parquet").unlink(),
        _fifo("meta.json"),
        _fifo("cpu.parquet"),
        lambda e: (shutil.rmtree(e), e.write_text("not a directory")),
    ],
    ids=[
        "meta-list",
        "meta-shape",
        "meta-bytes",
        "swapped",
        "truncated",
        "missing",
        "fifo-meta",
        "fifo-table",
        "entry-is-file",
    ],
)
def test_corrupt_entry_is_a_miss_then_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: Callable[[Path], None]
) -> None:
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    trace = tmp_path / "rank0.pt.trace.json.gz"
    shutil.copy(data_path("reference_runs", "h200_ddp2_balanced", "rank0.pt.trace.json.gz"), trace)
    parsed = parse_trace(trace)
    cache.store(parsed)
    entry = cache.cache_root() / cache.cache_key(trace)
    assert cache.load(trace) is not None
    corrupt(entry)
    assert cache.load(trace) is None  # never an exception, never a hang
    cache.store(parsed)
    again = cache.load(trace)
    assert again is not None and again.meta == json.loads(json.dumps(parsed.meta))
    assert set(again.cpu.cols) == set(parsed.cpu.cols)


def test_an_entry_that_says_another_rank_than_the_file_name_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every cache entry's rank rotated (1 -> 2): the report named rank 2's trace as
    # rank 1's and the window's straggler moved, with no word of it.
    from rankscope.dashboard.ingest.workers import ingest_files

    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RANKSCOPE_CACHE_MIN_BYTES", "0")
    trace = tmp_path / "rank1.pt.trace.json.gz"  # its distributedInfo says rank 1
    shutil.copy(data_path("reference_runs", "h200_ddp2_balanced", "rank1.pt.trace.json.gz"), trace)
    cache.store(parse_trace(trace))
    meta_file = cache.cache_root() / cache.cache_key(trace) / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["rank"] == 1
    meta_file.write_text(json.dumps({**meta, "rank": 2}))
    refs, failed = ingest_files([trace])
    assert not failed and refs[str(trace)].meta["rank"] == 1
    assert json.loads(meta_file.read_text())["rank"] == 1  # and the entry is written anew
