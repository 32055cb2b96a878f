"""Turn a finished torch.profiler window into the run directory's gzipped Kineto trace.

``export_window(prof, run_dir, rank, first, last)`` runs on a background thread:
it asks torch to write its Chrome/Kineto JSON to a hidden temporary file, checks
that the ``ProfilerStep#N`` ranges carry the collector's step numbers (and
renumbers them if torch counted differently: the review side reads
``ProfilerStep#N`` as step N), gzips it to ``rundir.trace_path(...)`` through a
temporary name and ``os.replace`` (a reader never sees half a trace), and
returns the window record for the rank manifest. Both passes stream the file,
so memory stays flat however large the trace is.

The export thread shares the GIL with the training thread: torch's own write
(``export_chrome_trace``) holds it, so what this module adds must not. The step
scan looks for ``ProfilerStep#`` with ``bytes.find`` over 4 MiB chunks (C speed,
about 1 ms per 15 MB where a per-line regex took 170 ms), zlib releases the GIL
while it compresses, and the per-line rewrite runs only when torch numbered the
steps differently (rare).

torch writes the path it is given into the trace unescaped (``traceName``) and
cannot open some (a newline in a folder name): a run directory whose path holds
anything but plain characters is handed to torch as ``/proc/self/fd/N`` (a
descriptor of the directory), so any run name gives a valid, readable trace.

The trace says whose it is: a top-level ``"rankscope"`` object (``origin_tag``:
``run_id``, ``rank``, ``attempt``, the window's steps, ``format``) is written as the
document's first key while it is gzipped, so the review side can tell a window of
another run or rank under this one's name and leave it out (other tools ignore
keys they do not know).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from rankscope.profiler import rundir

_STEP_NAME = re.compile(rb'("name":\s*"ProfilerStep#)(\d+)(")')
_MARK = b"ProfilerStep#"
_CHUNK = 4 << 20
_NAME_BEFORE = re.compile(rb'"name":\s*"$')
_DIGITS = re.compile(rb"(\d+)\"")
# Characters torch writes into JSON (and opens) as they are.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./+,=@:~-]*$")


@contextlib.contextmanager
def _torch_path(path: Path) -> Iterator[str]:
    """``path`` as torch can open it and write it into JSON unescaped.

    A plain path as it is; else (Linux) the same file through a descriptor of its
    folder, ``/proc/self/fd/N/NAME``; elsewhere the path as it is.
    """
    if _PLAIN_PATH.match(str(path)) or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _profiler_steps(path: Path) -> list[int]:
    """The N of every ``"name": "ProfilerStep#N"`` in the file, sorted and distinct."""
    found: set[int] = set()
    keep = 32  # bytes carried over between chunks: a name split across them is still seen
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(_CHUNK):
            buf = tail + chunk
            at = buf.find(_MARK)
            while at >= 0:
                digits = _DIGITS.match(buf, at + len(_MARK))
                if digits is None and len(buf) - at < keep:
                    break  # the number runs into the next chunk: read it with that one
                if digits is not None and _NAME_BEFORE.search(buf, max(0, at - 16), at):
                    found.add(int(digits.group(1)))
                at = buf.find(_MARK, at + 1)
            cut = min(len(buf) - keep, at) if at >= 0 else len(buf) - keep
            tail = buf[max(0, cut) :]
    return sorted(found)


TAG_KEY = "rankscope"
TAG_FORMAT = 1
_WS = b" \t\r\n"


def origin_tag(
    run_id: str | None, rank: int, attempt: int, first: int, last: int
) -> dict[str, Any]:
    """What a window's trace says of its origin (the ``"rankscope"`` key)."""
    return {
        "format": TAG_FORMAT,
        "run_id": run_id,
        "rank": rank,
        "attempt": attempt,
        "first_step": first,
        "last_step": last,
    }


def with_tag(head: bytes, tag: dict[str, Any] | None) -> bytes:
    """``head`` (the document's first bytes) with ``"rankscope": tag`` as its first key.

    Unchanged when there is no tag, or when ``head`` does not open a JSON object with at
    least one key (torch always writes ``{"schemaVersion": ...``): never an invalid file.
    """
    if tag is None:
        return head
    i = len(head) - len(head.lstrip(_WS))
    rest = head[i + 1 :].lstrip(_WS)
    if head[i : i + 1] != b"{" or not rest.startswith(b'"'):
        return head
    key = msgspec.json.encode(TAG_KEY) + b": " + msgspec.json.encode(tag)
    return head[: i + 1] + key + b", " + head[i + 1 :]


def export_window(
    prof: Any,
    run_dir: Path,
    rank: int,
    first: int,
    last: int,
    tag: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the window's trace, ``tag`` (``origin_tag``) as its first key; return
    ``{first_step, last_step, file, ...}``."""
    final = rundir.trace_path(run_dir, rank, first, last)
    tmp_json = final.with_name(f".{final.name}.{os.getpid()}.json")
    tmp_gz = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with _torch_path(tmp_json) as torch_json:
            prof.export_chrome_trace(torch_json)
        steps = _profiler_steps(tmp_json)
        shift = first - steps[0] if steps else 0
        with open(tmp_json, "rb") as src, gzip.open(tmp_gz, "wb", compresslevel=6) as dst:

            def renumber(m: re.Match[bytes]) -> bytes:
                return m.group(1) + str(int(m.group(2)) + shift).encode() + m.group(3)

            head = src.read(1 << 16) + src.readline()  # whole lines: the first key among them
            if shift:
                head = _STEP_NAME.sub(renumber, head)
            dst.write(with_tag(head, tag))
            if shift == 0:
                shutil.copyfileobj(src, dst, 1 << 20)
            else:
                for line in src:
                    dst.write(_STEP_NAME.sub(renumber, line) if b"ProfilerStep#" in line else line)
        os.replace(tmp_gz, final)
    finally:
        for p in (tmp_json, tmp_gz):
            with contextlib.suppress(OSError):
                p.unlink()
    window: dict[str, Any] = {
        "first_step": first,
        "last_step": last,
        "file": final.name,
        "profiler_steps": [s + shift for s in steps],
    }
    if shift:
        window["renumbered_by"] = shift
    return window
