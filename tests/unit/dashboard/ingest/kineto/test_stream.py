"""Batch decoding: the same tables as decoding the whole document, on real and odd traces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from rankscope.dashboard.ingest import kineto
from rankscope.dashboard.ingest.kineto import collectives, columns, events, stream, trace
from rankscope.profiler.errors import RankscopeError


def _same(a: kineto.RankTrace, b: kineto.RankTrace) -> None:
    assert a.meta == b.meta
    for name in ("gpu", "cpu", "gpu_ann", "comms"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert ta.vocab == tb.vocab, name
        assert ta.cols.keys() == tb.cols.keys(), name
        for c in ta.cols:
            assert ta.cols[c].dtype == tb.cols[c].dtype, (name, c)
            assert np.array_equal(ta.cols[c], tb.cols[c], equal_nan=True), (name, c)


def _whole(path: Path) -> kineto.RankTrace:
    return kineto.tables_from_doc(kineto.load_trace_doc(path), str(path))


def test_real_trace_in_small_batches_equals_the_whole_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conftest import data_path

    path = data_path("reference_runs", "h200_ddp4_straggler") / "rank1.pt.trace.json.gz"
    # 64 KB batches and chunks: hundreds of cuts, each decoded and checked.
    monkeypatch.setattr(stream, "BATCH_BYTES", 1 << 16)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 1 << 14)
    streamed = trace._stream_trace(path)
    assert len(streamed.cpu) > 10_000
    _same(streamed, _whole(path))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rank0.pt.trace.json.gz"
    p.write_bytes(gzip.compress(text.encode()))
    return p


EV = '{"ph": "X", "cat": "cpu_op", "name": "%s", "ts": %s, "dur": 2, "tid": 1, "args": {}}'


def test_brace_comma_inside_a_name_is_not_a_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BATCH_BYTES", 40)
    events = ",\n".join(EV % (n, i) for i, n in enumerate(["a},{b", "c}, ]d", "e"] * 5))
    doc = f'{{"traceName": "x", "traceEvents": [{events}], "baseTimeNanoseconds": 1000}}'
    p = _write(tmp_path, doc)
    streamed = trace._stream_trace(p)
    assert list(streamed.cpu.strings("name")[:3]) == ["a},{b", "c}, ]d", "e"]
    assert streamed.meta["base_time_ns"] == 1000
    _same(streamed, _whole(p))


def test_odd_types_in_one_batch_take_the_forgiving_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BATCH_BYTES", 100)
    events = [json.loads(EV % ("op", i)) for i in range(20)]
    events[7]["args"] = {"stream": "seven", "External id": 1e30}
    events[9]["tid"] = True
    events[11]["ts"] = None
    p = _write(tmp_path, json.dumps({"traceEvents": events}))
    streamed = trace._stream_trace(p)
    assert len(streamed.cpu) == 19
    _same(streamed, _whole(p))


@pytest.mark.parametrize(
    "doc",
    [
        '{"distributedInfo": {"traceEvents": [1]}, "x": 1}',  # not a top-level key
        '{"traceEvents": [{"ph": "X"}, {"ph": ',  # truncated
        '[{"ph": "X", "ts": 1, "dur": 1}]',  # a bare array
        '{"traceEvents": [], "traceEvents": [%s]}' % (EV % ("late", 1)),  # two arrays
    ],
)
def test_unusual_documents_are_read_whole(tmp_path: Path, doc: str) -> None:
    p = _write(tmp_path, doc)
    with pytest.raises(stream.NotStreamable):
        trace._stream_trace(p)
    try:
        expected = _whole(p)
    except RankscopeError as e:
        with pytest.raises(RankscopeError, match=str(e).split("(")[0]):
            kineto.parse_trace(p)
    else:
        _same(kineto.parse_trace(p), expected)


def test_empty_events_array(tmp_path: Path) -> None:
    p = _write(tmp_path, '{"traceEvents": [ ], "distributedInfo": {"rank": 3}}')
    t = trace._stream_trace(p)
    assert t.meta["rank"] == 3 and len(t.cpu) == 0
    _same(t, _whole(p))


def test_flow_and_instant_events_are_skipped_and_unknown_phases_read_forgivingly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BATCH_BYTES", 300)
    events = [json.loads(EV % ("op", i)) for i in range(12)]
    # Odd values where nothing reads them: no reason to leave the typed decoder.
    events.insert(2, {"ph": "i", "ts": "soon", "args": {"stream": "x"}, "name": 3})
    events.insert(4, {"ph": "s", "id": 1, "cat": "fwdbwd", "ts": 1})
    events.insert(6, {"name": "process_name", "ph": "M", "args": {"name": "python"}})
    # A phase the schema does not list, an event without one, a ph given twice:
    # the forgiving path reads those batches, to the same tables.
    events.insert(8, {"ph": "Z", "ts": 1, "dur": 1})
    events.insert(10, {"cat": "cpu_op", "name": "no ph", "ts": 1, "dur": 1})
    events.insert(12, {"ph": "i", "ph ": 1, "name": "x", "ts": 2, "dur": 1})
    text = json.dumps({"traceEvents": events})
    text = text.replace('"ph ": 1', '"ph": "X"')  # duplicate key: the last one wins
    p = _write(tmp_path, text)
    streamed = trace._stream_trace(p)
    assert list(streamed.cpu.strings("name")) == ["op"] * 7 + ["x"] + ["op"] * 5
    _same(streamed, _whole(p))


def test_a_view_kept_past_accept_is_never_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "BATCH_BYTES", 200)
    events = [{"ph": "X", "name": f"op{i}", "args": {"Input Dims": [[i, i]]}} for i in range(60)]
    doc = json.dumps({"traceEvents": events}).encode()
    kept: list[tuple[memoryview, bytes]] = []

    def accept(raw: memoryview) -> bool:
        # A view of the events themselves (what a msgspec.Raw holds) pins the buffer;
        # only the brackets around them are the splitter's to write.
        kept.append((raw[1:-1], bytes(raw[1:-1])))
        return True

    splitter = stream.EventSplitter(iter([doc[i : i + 64] for i in range(0, len(doc), 64)]))
    splitter.split(accept)
    assert len(kept) > 5
    assert all(bytes(view) == copy for view, copy in kept)
    names = [e["name"] for view, _ in kept for e in json.loads(b"[%s]" % bytes(view))]
    assert names == [e["name"] for e in events]


def test_kept_collective_args_do_not_pin_their_batch() -> None:
    """Args kept for collectives copy their Raw shapes: the batch's buffer is free after."""
    ev = {
        "ph": "X",
        "cat": "cpu_op",
        "name": "gloo:all_reduce",
        "ts": 1,
        "dur": 2,
        "args": {"Input Dims": [[4, 4]], "Input type": ["float"]},
    }
    buf = bytearray(json.dumps([ev, dict(ev, name="record_param_comms")]).encode())
    builder = columns.ColumnBuilder()
    decoded = events.decode_batch(memoryview(buf))
    assert decoded is not None
    builder.add(decoded)
    del decoded
    buf.append(0)  # BufferError if anything still viewed buf
    (row,) = builder.host_comm_rows
    assert collectives.comm_bytes(row[3]) == 64
    assert collectives.comm_bytes(builder.param_comms[-1]) == 64


def test_a_host_range_with_a_text_thread_id_reads_as_tid_minus_one(tmp_path: Path) -> None:
    """It used to stop the whole trace with numpy's ValueError (not a RankscopeError)."""
    events = [json.loads(EV % ("op", i)) for i in range(3)]
    events[1]["tid"] = "main thread"
    p = _write(tmp_path, json.dumps({"traceEvents": events}))
    t = kineto.parse_trace(p)
    assert t.cpu.cols["tid"].tolist() == [1, -1, 1]
    _same(t, _whole(p))
