"""The cache's meta.json and summary.json are the Structs of ingest.records, checked on read."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from conftest import data_path

from rankscope.dashboard.ingest import cache, records
from rankscope.dashboard.ingest.kineto import parse_trace


def _trace() -> Path:
    folder = data_path("public_traces", "hta", "cpu_only")
    return next(folder.glob("*.json.gz"))


def test_trace_meta_struct_lists_every_field_parse_trace_writes() -> None:
    # A field added to the trace's meta must be added to records.TraceMeta (one line).
    meta = parse_trace(_trace()).meta
    assert sorted(meta) == sorted(records.TraceMeta.__struct_fields__)
    msgspec.convert(meta, records.TraceMeta)


def test_meta_and_summary_round_trip_through_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MIN_CACHED_BYTES", 0)
    path = _trace()
    trace = parse_trace(path)
    cache.store(trace)
    assert cache.load_meta(path) == json.loads(json.dumps(trace.meta))
    assert cache.load_summary(path) == cache.summarise(trace)
    records.decode_checked(records.encode(cache.summarise(trace)), records.TraceSummary)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("meta.json", '{"pg_ranks": [1, 2]}'),
        ("meta.json", '{"rank": "zero"}'),
        ("meta.json", "[]"),
        ("summary.json", '{"rank": 0}'),
    ],
)
def test_a_cache_file_of_the_wrong_shape_is_a_miss(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    monkeypatch.setattr(cache, "MIN_CACHED_BYTES", 0)
    path = _trace()
    cache.store(parse_trace(path))
    entry = cache.cache_root() / cache.cache_key(path)
    (entry / name).write_text(text)
    if name == "meta.json":
        assert cache.load_meta(path) is None and cache.load(path) is None
    else:
        assert cache.load_summary(path) is None
