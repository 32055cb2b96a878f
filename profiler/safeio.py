"""Reading files that someone else wrote: regular files only, never blocking, never unbounded.

Every reader of run-directory files, traces and cache entries (on both sides) opens
them here. ``open_regular`` opens with ``O_NONBLOCK`` (a FIFO or a device never
blocks the open), checks ``S_ISREG`` on the open descriptor (a FIFO, a device, a
directory, or a symlink to ``/dev/zero`` is refused, and a file swapped in after
a check cannot slip through), and with ``nofollow`` refuses a symlink at the last
component. ``read_bytes`` reads at most ``limit`` bytes and at most the size the
file had when opened (a file still growing is read up to that point);
``read_lines`` yields a file's lines with the same bounds; ``read_gzip`` streams a
gzip file into one buffer and stops once the decompressed size passes ``limit``
(a gzip bomb costs at most ``limit`` bytes of memory).

Failures are ``UnsafeFile`` (an ``OSError``, so existing ``except OSError``
paths treat it like an unreadable file) with a short reason as its message.

Limits read from the environment (documented in the README):

- ``RANKSCOPE_MAX_TRACE_BYTES`` (default ``DEFAULT_MAX_TRACE_BYTES``, 1 GiB): the most
  bytes of JSON one trace file may hold, decompressed.
- ``RANKSCOPE_MAX_JSONL_BYTES`` (default ``DEFAULT_MAX_JSONL_BYTES``, 1 GiB): the most
  bytes of one steps or telemetry file that are read.

This module imports only the standard library: it runs inside training jobs.
"""

from __future__ import annotations

import errno
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

DEFAULT_MAX_TRACE_BYTES = 1 << 30
DEFAULT_MAX_JSONL_BYTES = 1 << 30
MAX_JSON_BYTES = 64 << 20  # one manifest, heartbeat, ack or cache meta file
MAX_LINE_BYTES = 1 << 20  # one JSONL record; longer lines are skipped
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class UnsafeFile(OSError):
    """A file that is not read: not a regular file, too large, or a bad gzip stream."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(errno.EINVAL, reason, str(path))
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.filename}: {self.reason}"


def env_limit(name: str, default: int) -> int:
    """A positive byte count from the environment (``2G``, ``512M``, ``1000000``).

    Parsed by ``settings.env_value`` (the one parser of rankscope's variables):
    junk raises ValueError naming the variable, never a silent default.
    """
    from rankscope.profiler.settings import env_value

    value: int = env_value(name, default)
    return value


def max_trace_bytes() -> int:
    return env_limit("RANKSCOPE_MAX_TRACE_BYTES", DEFAULT_MAX_TRACE_BYTES)


def max_jsonl_bytes() -> int:
    return env_limit("RANKSCOPE_MAX_JSONL_BYTES", DEFAULT_MAX_JSONL_BYTES)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | Path, *, nofollow: bool = False, dir_fd: int | None = None) -> int:
    """A read-only descriptor of a regular file; ``UnsafeFile`` for anything else.

    The descriptor is left in non-blocking mode, which regular files ignore.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if nofollow and e.errno == errno.ELOOP:
            raise UnsafeFile(path, "is a symlink") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(path, f"is {_kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, path: str | Path, limit: int) -> bytearray:
    """Up to the file's size at open, read into one preallocated buffer (no second copy)."""
    size = os.fstat(fd).st_size
    if size > limit:
        raise UnsafeFile(path, f"is {size} bytes, over the limit of {limit}")
    buf = bytearray(size)
    view = memoryview(buf)
    pos = 0
    while pos < size:
        n = os.readv(fd, [view[pos : pos + _CHUNK]])
        if n == 0:
            break
        pos += n
    view.release()
    del buf[pos:]
    return buf


def read_bytes(
    path: str | Path,
    limit: int = MAX_JSON_BYTES,
    *,
    nofollow: bool = False,
    dir_fd: int | None = None,
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (as large as it was when opened)."""
    fd = open_regular(path, nofollow=nofollow, dir_fd=dir_fd)
    try:
        return bytes(_read_fd(fd, path, limit))
    finally:
        os.close(fd)


# What ``read_lines(..., mark_long=True)`` yields in place of a line it skipped.
LONG_LINE = b"\n"
# What it yields last where the file is longer than the limit (the rest is not read).
CUT_SHORT = b"\r\n"


def read_lines(
    path: str | Path,
    limit: int | None = None,
    max_line: int = MAX_LINE_BYTES,
    *,
    mark_long: bool = False,
) -> Iterator[bytes]:
    """Each line (bytes, newline kept) of a regular file, up to its size when opened.

    Reading stops after ``limit`` bytes (``max_jsonl_bytes()`` by default); a line
    longer than ``max_line`` is skipped, never held whole (with ``mark_long``, the
    ``LONG_LINE`` object is yielded in its place, so callers can count and number it,
    and, where the file is longer than ``limit``, the ``CUT_SHORT`` object last).
    """
    limit = max_jsonl_bytes() if limit is None else limit
    fd = open_regular(path)
    with os.fdopen(fd, "rb", buffering=_CHUNK) as f:
        size = os.fstat(fd).st_size
        yield from _bounded_lines(f, min(size, limit), max_line, mark_long, size > limit)
    if mark_long and size > limit:
        yield CUT_SHORT


def _bounded_lines(
    f: BinaryIO, remaining: int, max_line: int, mark_long: bool, cut: bool
) -> Iterator[bytes]:
    """Lines of the next ``remaining`` bytes; ``cut``: the file goes on past them, so a
    line they end inside is not given (it is not torn, only not read)."""
    skipping = False
    while remaining > 0:
        line = f.readline(min(max_line + 1, remaining))
        if not line:
            return
        remaining -= len(line)
        complete = line.endswith(b"\n")
        if cut and remaining == 0 and not complete:
            return
        if skipping or len(line) > max_line:
            if mark_long and not skipping:
                yield LONG_LINE
            skipping = not complete
            continue
        yield line


# Deflate expands at most ~1032:1: a gzip trailer claiming more is a lie.
_MAX_DEFLATE_RATIO = 1032


def _gzip_size_hint(fd: int, limit: int) -> int:
    """The size the gzip trailer claims (mod 4 GiB), bounded by what the file could hold."""
    size = os.fstat(fd).st_size
    if size < 18:
        return 0
    claimed = int.from_bytes(os.pread(fd, 4, size - 4), "little")
    return min(claimed, limit, size * _MAX_DEFLATE_RATIO)


class _Buffer:
    """One buffer filled in place: allocated once at the expected size, grown only past it."""

    def __init__(self, capacity: int) -> None:
        self.data = bytearray(capacity)
        self.size = 0

    def add(self, chunk: bytes) -> None:
        end = self.size + len(chunk)
        if end <= len(self.data):
            self.data[self.size : end] = chunk
        else:
            del self.data[self.size :]
            self.data += chunk
        self.size = end

    def done(self) -> bytearray:
        del self.data[self.size :]
        return self.data


def _inflater() -> tuple[Any, tuple[type[Exception], ...]]:
    """The fastest gzip decompressor at hand and the errors it raises: ISA-L's
    (``isal``, ~2.2x zlib's speed on traces: 61 vs 144 ms for 55 MB of JSON), else zlib's.
    Imported on first use: the collector never reads a gzip file."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (zlib.error, cast("type[Exception]", isal_zlib.error))


def _gzip_chunks(fd: int, path: str | Path, limit: int, chunk: int) -> Iterator[bytes]:
    """Decompressed chunks of the gzip file open at ``fd``, stopping past ``limit`` bytes.

    Concatenated gzip members are all read; trailing bytes that are not another
    member are ignored, as gzip does.
    """
    inflate, errors = _inflater()
    d = inflate.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    total = 0
    while True:
        if d.unconsumed_tail:
            data = d.unconsumed_tail
        elif pending:
            data, pending = pending, b""
        else:
            data = os.read(fd, chunk)
            if not data:
                if not d.eof:
                    raise UnsafeFile(path, "is a truncated gzip file")
                return
        try:
            out = d.decompress(data, chunk)
        except errors as e:
            raise UnsafeFile(path, f"is not a readable gzip file ({e})") from None
        total += len(out)
        if total > limit:
            raise UnsafeFile(
                path,
                f"decompresses to more than {limit} bytes"
                " (RANKSCOPE_MAX_TRACE_BYTES sets the limit)",
            )
        if out:
            yield out
        if d.eof:
            rest = d.unused_data
            if len(rest) < 2:
                rest += os.read(fd, chunk)
            if rest[:2] != _GZIP_MAGIC:
                return
            d = inflate.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest


def read_gzip(path: str | Path, limit: int | None = None) -> bytes | bytearray:
    """A file's decompressed bytes (plain files as they are), at most ``limit`` of them.

    Decompression streams into one growing buffer (never a second copy), so peak
    memory is about the output size, and stops with ``UnsafeFile`` as soon as it
    passes ``limit`` (``max_trace_bytes()`` by default).
    """
    limit = max_trace_bytes() if limit is None else limit
    fd = open_regular(path)
    try:
        if os.pread(fd, 2, 0) != _GZIP_MAGIC:
            return _read_fd(fd, path, limit)
        out = _Buffer(_gzip_size_hint(fd, limit))
        for piece in _gzip_chunks(fd, path, limit, _CHUNK):
            out.add(piece)
        return out.done()
    finally:
        os.close(fd)


def iter_chunks(path: str | Path, limit: int | None = None, chunk: int = _CHUNK) -> Iterator[bytes]:
    """The decompressed bytes of ``path`` (plain files as they are) in chunks, bounded
    like ``read_gzip``: for decoders that work on a stream and never hold the whole file."""
    limit = max_trace_bytes() if limit is None else limit
    fd = open_regular(path)
    try:
        if os.pread(fd, 2, 0) != _GZIP_MAGIC:
            size = os.fstat(fd).st_size
            if size > limit:
                raise UnsafeFile(path, f"is {size} bytes, over the limit of {limit}")
            while size > 0 and (data := os.read(fd, min(chunk, size))):
                size -= len(data)
                yield data
            return
        yield from _gzip_chunks(fd, path, limit, chunk)
    finally:
        os.close(fd)
