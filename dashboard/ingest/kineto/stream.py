"""A trace's ``traceEvents`` array in batches, decoded while the file is decompressed.

``read_chunks(path)`` yields the decompressed bytes of a (gzipped) file in chunks,
with ``safeio.read_gzip``'s rules: a regular file only, concatenated members read,
at most ``safeio.max_trace_bytes()`` in all (else ``safeio.UnsafeFile``).
``EventSplitter.split`` turns those chunks into byte slices that each hold whole
events, as ``[ev, ev, ...]``, plus the rest of the document (every key but
``traceEvents``) as one small JSON object. Decoding batch by batch keeps memory
near one batch of events plus the columns built so far, not the whole JSON.

A document this module cannot split safely (no ``"traceEvents": [`` near the
start, an event larger than ``MAX_EVENT_BYTES``) raises ``NotStreamable``; the
caller then reads it whole. A wrong split is never silent: every slice must
decode as a JSON array, and the rest of the document as an object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from rankscope.profiler import safeio

CHUNK_BYTES = 1 << 20
BATCH_BYTES = 4 << 20  # JSON per decoded batch: ~10k events
MAX_HEAD_BYTES = 64 << 20  # metadata before traceEvents (deviceProperties, distributedInfo)
MAX_EVENT_BYTES = 64 << 20
_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')
_WS = b" \t\r\n"


class NotStreamable(Exception):
    """The document is valid or not, but not in a shape this module splits."""


def read_chunks(path: str | Path, limit: int | None = None) -> Iterator[bytes]:
    """Decompressed chunks of ``path`` (plain files as they are), at most ``limit`` bytes."""
    return safeio.iter_chunks(path, limit, CHUNK_BYTES)


def _skip_ws(buf: bytearray, i: int, end: int) -> int:
    while i < end and buf[i] in _WS:
        i += 1
    return i


class EventSplitter:
    """Feed it chunks; ``split`` hands over ``[...]`` slices; then ``rest`` is the other keys.

    ``accept(slice)`` (given to ``split``) decodes one slice and returns False
    when it is not valid JSON, so the splitter tries an earlier cut: a cut is only
    a candidate (``}`` then ``,`` or ``]``), the decoder has the last word.

    The slices are views of one buffer that is reused, never copies: the byte
    before a batch (the ``[`` or ``,`` that precedes it) becomes ``[`` and the
    byte after its last ``}`` becomes ``]`` while it is decoded. Fresh memory for
    every batch cost more in page faults than the decoding saved by streaming.
    A slice is valid during ``accept`` only; should anything keep a view into it
    (a ``msgspec.Raw``), the splitter leaves that buffer alone and takes a new one.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._pos = 0  # first byte not yet handed over; buf[pos - 1] is free for a "["
        self._end = 0  # bytes in use; the rest of buf is spare room
        self._head = b""
        self._tail = b""
        self._eof = False

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._eof = True
            return False
        self._make_room(len(chunk))
        self._buf[self._end : self._end + len(chunk)] = chunk
        self._end += len(chunk)
        return True

    def _make_room(self, n: int) -> None:
        """Room for ``n`` more bytes: the handed-over bytes reused, else a larger buffer."""
        buf = self._buf
        try:  # something still viewing the buffer pins it (no resize): never write there
            buf.append(0)
            del buf[-1]
        except BufferError:
            buf = self._buf = bytearray(buf)
        if self._end + n <= len(buf):
            return
        keep = max(self._pos - 1, 0)  # from the byte before the first unread one
        live = self._end - keep
        if keep and live + n <= len(buf):
            buf[:live] = buf[keep : self._end]
        else:
            grown = bytearray(max(2 * len(buf), live + n, BATCH_BYTES + CHUNK_BYTES))
            grown[:live] = memoryview(buf)[keep : self._end]
            self._buf = grown
        self._pos -= keep
        self._end = live

    def _find_start(self) -> None:
        while True:
            m = _EVENTS_KEY.search(self._buf, 0, self._end)
            if m:
                self._head = bytes(self._buf[: m.start()])
                # The key must be one of the top-level object's: then, and only then,
                # the head closed right after it is a whole JSON object.
                try:
                    msgspec.json.decode(self._head + b'"traceEvents": 0}')
                except msgspec.DecodeError:
                    raise NotStreamable("traceEvents is not a top-level key") from None
                self._pos = m.end()  # buf[pos - 1] is the array's "["
                return
            if self._end > MAX_HEAD_BYTES or not self._more():
                raise NotStreamable("no traceEvents array near the start")

    def _try(self, accept: Callable[[memoryview], bool], cut: int) -> bool:
        """Offer the events from ``pos`` to the ``}`` at ``cut`` as one JSON array."""
        buf = self._buf
        buf[self._pos - 1] = 0x5B  # "[": it was that, a "," or whitespace
        after = buf[cut + 1]
        buf[cut + 1] = 0x5D  # "]": a "," or "]" or whitespace, put back below
        try:
            return accept(memoryview(buf)[self._pos - 1 : cut + 2])
        finally:
            buf[cut + 1] = after

    def split(self, accept: Callable[[memoryview], bool]) -> None:
        """Call ``accept`` on each batch of whole events, in order, until the array ends."""
        self._find_start()
        while True:
            while self._end - self._pos < BATCH_BYTES and self._more():
                pass
            buf, end = self._buf, self._end
            start = _skip_ws(buf, self._pos, end)
            if start < end and buf[start] == ord("]"):
                self._tail = bytes(buf[start + 1 : end])
                return
            limit = end
            nxt = -1
            while (cut := buf.rfind(b"}", start, limit)) >= 0:
                nxt = _skip_ws(buf, cut + 1, end)
                ends_event = nxt < end and buf[nxt] in b",]"
                if ends_event and self._try(accept, cut):
                    break
                limit = cut
                nxt = -1
            if nxt >= 0:
                if buf[nxt] == ord("]"):
                    self._tail = bytes(buf[nxt + 1 : end])
                    return
                self._pos = nxt + 1  # the "," at nxt is the next batch's "["
                continue
            # No whole event in the buffer: read more, unless one event is too large.
            size = end - self._pos
            if size > MAX_EVENT_BYTES:
                raise NotStreamable("an event could not be delimited")
            while self._end - self._pos < size + BATCH_BYTES and self._more():
                pass
            if self._end - self._pos == size:
                raise NotStreamable("the events array does not end")

    def rest(self) -> bytes:
        """The document without its events: head + ``[]`` + tail (all remaining input)."""
        tail = bytearray(self._tail)
        while (chunk := next(self._chunks, None)) is not None:
            tail += chunk
            if len(tail) > MAX_HEAD_BYTES:
                raise NotStreamable("too much after the events array")
        self._eof = True
        return self._head + b'"traceEvents": []' + bytes(tail)
