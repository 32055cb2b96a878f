"""Mutated real traces: the report exits 0 or 2, never with a traceback, never hangs.

Hypothesis mutates the JSON of real traces from ``tests/data`` (byte flips,
spliced-in extreme numbers, truncation, gzip damage) and runs the CLI's ``main``
in-process under an alarm (30 examples, so it stays fast). Any exception that
escapes ``main`` fails the test with the example that caused it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import signal
from pathlib import Path

import pytest
from conftest import data_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankscope.dashboard.cli import main

SOURCES = [
    data_path("public_traces", "hta", "cpu_only", "rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz"),
    data_path("public_traces", "hta", "amd", "mi250_minitoy_train_ROCm6_2_kineto.json.gz"),
]
TEXTS = [gzip.decompress(p.read_bytes()) for p in SOURCES]
EXTREMES = [
    b"1e300", b"-1e300", b"1" + b"0" * 30, b"-9223372036854775809", b"NaN", b'"x"', b"null",
    b"[]", b"{}", b"true", b"\xff\xfe", b"-1", b"0", b"18446744073709551616",
]  # fmt: skip


@st.composite
def mutated_trace(draw: st.DrawFn) -> tuple[bytes, bool]:
    data = bytearray(draw(st.sampled_from(TEXTS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "splice", "number", "truncate"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "splice":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "number":
            # Replace the next number (a ts, dur, rank, id...) by an extreme value.
            start = next((i for i in range(pos, len(data)) if data[i : i + 1].isdigit()), None)
            if start is not None:
                end = start
                while end < len(data) and data[end : end + 1] in b"0123456789.eE+-":
                    end += 1
                data[start:end] = draw(st.sampled_from(EXTREMES))
        else:
            del data[max(pos, len(data) // 2) :]
    return bytes(data), draw(st.booleans())


class _Hang(Exception):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise _Hang


@settings(
    max_examples=int(os.environ.get("RANKSCOPE_FUZZ_EXAMPLES", "30")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated_trace())
def test_mutated_traces_exit_0_or_2(case: tuple[bytes, bool], tmp_path: Path) -> None:
    data, compress = case
    trace = tmp_path / ("rank0.pt.trace.json.gz" if compress else "rank0.pt.trace.json")
    trace.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(15)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["report", str(trace), "--format", "json"])
    except _Hang:
        pytest.fail("rankscope report hung on a mutated trace")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code in (0, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if code == 2:
        lines = [x for x in err.getvalue().splitlines() if not x.startswith("rankscope: ingested")]
        assert len(lines) == 1, err.getvalue()
