"""A window's trace says whose it is: the ``"rankscope"`` key the export writes first.

``export_window`` is driven with a stand-in profiler whose ``export_chrome_trace``
writes a small Kineto document, as torch lays it out (one key per line); the gzipped
file that comes out must be valid JSON, carry the tag, and keep every step.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from rankscope.profiler.export import export_window, origin_tag, with_tag

TORCH_LAYOUT = (
    '{\n  "schemaVersion": 1,\n  "traceEvents": [\n'
    '  {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#{A}", "ts": 1, "dur": 5},\n'
    '  {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#{B}", "ts": 6, "dur": 5}\n'
    "  ],\n"
    '  "traceName": "x"\n}\n'
)


class FakeProfiler:
    """Writes what torch.profiler would, with its own step numbers ``a`` and ``b``."""

    def __init__(self, a: int, b: int) -> None:
        self.doc = TORCH_LAYOUT.replace("{A}", str(a)).replace("{B}", str(b))

    def export_chrome_trace(self, path: str) -> None:
        Path(path).write_text(self.doc)


def _read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return doc


@pytest.mark.parametrize(("a", "b"), [(4, 5), (0, 1)], ids=["same-steps", "renumbered"])
def test_the_exported_trace_carries_the_tag_first(tmp_path: Path, a: int, b: int) -> None:
    tag = origin_tag("run-42", 3, 1, 4, 5)
    window = export_window(FakeProfiler(a, b), tmp_path, 3, 4, 5, tag)
    doc = _read(tmp_path / window["file"])
    assert next(iter(doc)) == "rankscope"
    assert doc["rankscope"] == {
        "format": 1,
        "run_id": "run-42",
        "rank": 3,
        "attempt": 1,
        "first_step": 4,
        "last_step": 5,
    }
    # torch's own keys and the collector's step numbers are all still there
    assert doc["schemaVersion"] == 1 and doc["traceName"] == "x"
    assert [e["name"] for e in doc["traceEvents"]] == ["ProfilerStep#4", "ProfilerStep#5"]
    assert window["profiler_steps"] == [4, 5]


def test_no_tag_leaves_torch_s_document_as_it_was(tmp_path: Path) -> None:
    window = export_window(FakeProfiler(4, 5), tmp_path, 0, 4, 5)
    assert "rankscope" not in _read(tmp_path / window["file"])


@pytest.mark.parametrize(
    "head",
    [b"{}", b"  {  }\n", b"[1, 2]", b"", b"   ", b'"text"'],
    ids=["empty-object", "empty-object-spaced", "array", "nothing", "blank", "string"],
)
def test_a_document_that_is_not_an_object_with_keys_is_left_alone(head: bytes) -> None:
    # A tag there would make valid JSON invalid (a trailing comma) or mean nothing.
    assert with_tag(head, origin_tag("r", 0, 0, 1, 2)) == head


def test_the_tag_is_valid_json_whatever_the_run_id_holds() -> None:
    odd = 'a"b\\c\n\u2028'
    out = with_tag(b'{"k": 1}', origin_tag(odd, 0, 0, 1, 2))
    assert json.loads(out) == {"rankscope": origin_tag(odd, 0, 0, 1, 2), "k": 1}
