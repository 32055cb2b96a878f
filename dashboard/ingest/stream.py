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


def _skip_ws(buf: bytearray, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


class EventSplitter:
    """Feed it chunks; ``split`` hands over ``[...]`` slices; then ``rest`` is the other keys.

    ``accept(slice)`` (given to ``split``) decodes one slice and returns False
    when it is not valid JSON, so the splitter tries an earlier cut: a cut is only
    a candidate (``}`` then ``,`` or ``]``), the decoder has the last word.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()
        self._head = b""
        self._tail = bytearray()
        self._eof = False

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _find_start(self) -> None:
        while True:
            m = _EVENTS_KEY.search(self._buf)
            if m:
                self._head = bytes(self._buf[: m.start()])
                # The key must be one of the top-level object's: then, and only then,
                # the head closed right after it is a whole JSON object.
                try:
                    msgspec.json.decode(self._head + b'"traceEvents": 0}')
                except msgspec.DecodeError:
                    raise NotStreamable("traceEvents is not a top-level key") from None
                del self._buf[: m.end()]
                return
            if len(self._buf) > MAX_HEAD_BYTES or not self._more():
                raise NotStreamable("no traceEvents array near the start")

    def split(self, accept: Callable[[bytes], bool]) -> None:
        """Call ``accept`` on each batch of whole events, in order, until the array ends."""
        self._find_start()
        buf = self._buf
        while True:
            while len(buf) < BATCH_BYTES and self._more():
                pass
            start = _skip_ws(buf, 0)
            if start < len(buf) and buf[start] == ord("]"):
                self._tail = buf[start + 1 :]
                return
            end = len(buf)
            nxt = -1
            while (cut := buf.rfind(b"}", start, end)) >= 0:
                nxt = _skip_ws(buf, cut + 1)
                ends_event = nxt < len(buf) and buf[nxt] in b",]"
                if ends_event and accept(b"[" + buf[start : cut + 1] + b"]"):
                    break
                end = cut
                nxt = -1
            if nxt >= 0:
                if buf[nxt] == ord("]"):
                    self._tail = buf[nxt + 1 :]
                    return
                del buf[: nxt + 1]
                continue
            # No whole event in the buffer: read more, unless one event is too large.
            if len(buf) > MAX_EVENT_BYTES:
                raise NotStreamable("an event could not be delimited")
            size = len(buf)
            while len(buf) < size + BATCH_BYTES and self._more():
                pass
            if len(buf) == size:
                raise NotStreamable("the events array does not end")

    def rest(self) -> bytes:
        """The document without its events: head + ``[]`` + tail (all remaining input)."""
        self._buf = bytearray()
        while self._more():
            self._tail += self._buf
            self._buf.clear()
            if len(self._tail) > MAX_HEAD_BYTES:
                raise NotStreamable("too much after the events array")
        return self._head + b'"traceEvents": []' + bytes(self._tail)
