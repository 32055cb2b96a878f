"""safeio: regular files only, never blocking, bounded reads and bounded gzip."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import pytest
from conftest import data_path

from rankscope.profiler import safeio


@pytest.fixture(params=["isal", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both decompressors gzip files are read with: ISA-L's, and zlib's where isal is
    not installed. Each gzip test runs with both."""
    if request.param == "zlib":
        monkeypatch.setattr(safeio, "_inflater", lambda: (zlib, (zlib.error,)))
    else:
        assert safeio._inflater()[0] is not zlib, "isal is a dependency: it must be used"
    name: str = request.param
    return name


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: os.mkfifo(p), "is a FIFO"),
        (lambda p: p.symlink_to("/dev/zero"), "is a device"),
        (lambda p: p.symlink_to("/dev/null"), "is a device"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["fifo", "dev-zero", "dev-null", "directory"],
)
def test_only_regular_files_are_read(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "run.json"
    make(p)
    for read in (safeio.read_bytes, safeio.read_gzip, lambda x: list(safeio.read_lines(x))):
        with pytest.raises(safeio.UnsafeFile, match=reason):
            read(p)


def test_nofollow_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert safeio.read_bytes(tmp_path / "link.json") == b"{}"
    with pytest.raises(safeio.UnsafeFile, match="symlink"):
        safeio.read_bytes(tmp_path / "link.json", nofollow=True)


def test_size_limits(tmp_path: Path) -> None:
    p = tmp_path / "big"
    p.write_bytes(b"x" * 1000)
    with pytest.raises(safeio.UnsafeFile, match="over the limit of 999"):
        safeio.read_bytes(p, 999)
    assert safeio.read_bytes(p, 1000) == b"x" * 1000


def test_gzip_bomb_stops_at_the_limit_and_members_concatenate(
    tmp_path: Path, inflater: str
) -> None:
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b" " * (32 << 20)))
    with pytest.raises(safeio.UnsafeFile, match="RANKSCOPE_MAX_TRACE_BYTES"):
        safeio.read_gzip(bomb, limit=4 << 20)
    multi = tmp_path / "multi.gz"
    multi.write_bytes(gzip.compress(b"ab") + gzip.compress(b"cd") + b"\0\0")
    assert bytes(safeio.read_gzip(multi)) == b"abcd"
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(os.urandom(5000))[:-100])
    with pytest.raises(safeio.UnsafeFile, match="truncated"):
        safeio.read_gzip(cut)


def test_lying_gzip_trailer_does_not_size_the_buffer(tmp_path: Path, inflater: str) -> None:
    p = tmp_path / "liar.gz"
    data = bytearray(gzip.compress(b"{}"))
    data[-4:] = (0xFFFFFFFF).to_bytes(4, "little")  # claims 4 GiB
    p.write_bytes(bytes(data))
    # The claim is capped by what ~30 bytes can expand to; the CRC/size check then fails.
    assert safeio._gzip_size_hint(os.open(p, os.O_RDONLY), 1 << 30) <= len(data) * 1032
    with pytest.raises(safeio.UnsafeFile):
        safeio.read_gzip(p)


def test_a_corrupt_deflate_stream_is_a_one_line_error(tmp_path: Path, inflater: str) -> None:
    p = tmp_path / "bad.gz"
    good = gzip.compress(b'{"traceEvents": []}' * 100)
    p.write_bytes(good[:12] + b"\xff" * 20 + good[32:])
    with pytest.raises(safeio.UnsafeFile, match="is not a readable gzip file"):
        safeio.read_gzip(p)


def test_a_real_trace_reads_the_same_with_either_decompressor(inflater: str) -> None:
    trace = next(data_path("reference_runs", "h200_ddp2_balanced").glob("*.json.gz"))
    with gzip.open(trace, "rb") as f:
        whole = f.read()
    assert bytes(safeio.read_gzip(trace)) == whole
    assert b"".join(safeio.iter_chunks(trace, chunk=1 << 16)) == whole


def test_lines_skip_overlong_lines_and_stop_at_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"a\n" + b"b" * 100 + b"\nc\n")
    assert list(safeio.read_lines(p, max_line=10)) == [b"a\n", b"c\n"]
    # a line the limit ends inside is not read, and with mark_long the cut is marked
    assert list(safeio.read_lines(p, limit=3)) == [b"a\n"]
    marked = list(safeio.read_lines(p, limit=3, max_line=10, mark_long=True))
    assert marked == [b"a\n", safeio.CUT_SHORT] and marked[-1] is safeio.CUT_SHORT
    marked = list(safeio.read_lines(p, limit=200, max_line=10, mark_long=True))
    assert marked == [b"a\n", safeio.LONG_LINE, b"c\n"]  # the whole file: not cut short
    marked = list(safeio.read_lines(p, limit=2, mark_long=True))
    assert marked == [b"a\n", safeio.CUT_SHORT] and marked[-1] is safeio.CUT_SHORT


def test_env_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "RANKSCOPE_MAX_JSONL_BYTES"
    for text, value in (("2G", 2 << 30), ("512M", 512 << 20), ("1000", 1000), ("", 7)):
        monkeypatch.setenv(name, text)
        assert safeio.env_limit(name, 7) == value


@pytest.mark.parametrize("text", ["x", "-5", "0", "inf", "infT", "nan", "1e400", "2000T"])
def test_env_limit_names_the_variable_for_junk(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    # Junk used to fall back to the default in silence (or raise OverflowError for inf).
    monkeypatch.setenv("RANKSCOPE_MAX_TRACE_BYTES", text)
    with pytest.raises(ValueError, match=r"^\$RANKSCOPE_MAX_TRACE_BYTES="):
        safeio.max_trace_bytes()
