"""Which runs a dashboard path holds, and whether a run is still being written.

``find_runs(path)`` -> list of ``RunEntry`` (newest first): the runs that
``rankscope.profiler.rundir.find_runs`` finds (the one discovery the report uses
too): the path itself when it is a run, else each run in the folders below it.
A RankscopeError (exit 2) when there is none.

``run_signature(path)`` -> a tuple of (name, size, mtime_ns) of the run's files:
it changes whenever the collector appends telemetry, writes a window or a step,
so caches keyed on it refresh a live run and never re-read a finished one.

``run_file_bytes(path, run_root)`` -> the bytes of one of the run's files for a
download: opened once, every component below the run root without following a
symlink, checked with ``fstat`` to be a regular file, and those very bytes served
(a file swapped for a symlink after the page rendered is refused, never followed).

``run_details(path)`` -> ``RunDetails``: the run's own start, duration, world
size, command and hosts from ``run.json`` and the ranks' manifests (None where a
run, such as a plain folder of traces, has none). ``RunEntry.started`` is the
start alone (one small file per run, for the picker).

``is_live(path)`` -> True while a collector run directory is still being
written: its ``run.json`` has no ``end_ns`` yet (``rankscope run`` records it
when the job ends), or an attach is in progress, and a file changed in the last
``LIVE_QUIET_S`` seconds.

Only the standard library and ``rankscope.profiler.rundir``: no streamlit, no pandas.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rankscope.profiler import readers, rundir, safeio
from rankscope.profiler.layout import RUN_MANIFEST

LIVE_QUIET_S = 120.0


@dataclass(frozen=True)
class RunEntry:
    path: str
    label: str
    mtime: float  # the newest file's modification time (a copy's, for a copied run)
    started: float | None = None  # the run's own start (run.json), seconds since the epoch


def _seconds(ns: object) -> float | None:
    return ns / 1e9 if isinstance(ns, int) and not isinstance(ns, bool) and ns > 0 else None


def _manifest(path: Path) -> dict[str, object]:
    try:
        loaded = readers.read_json(path / RUN_MANIFEST) if path.is_dir() else None
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def find_runs(path: str | Path) -> list[RunEntry]:
    """The runs at ``path`` for the run picker, as ``rundir.find_runs`` finds them, newest
    first by their own start where run.json has one (a copy's file times are the copy's)."""
    entries = [
        RunEntry(
            str(r.path.resolve()),
            r.label,
            r.mtime,
            _seconds(_manifest(Path(r.path)).get("start_ns")),
        )
        for r in rundir.find_runs(path)
    ]
    return sorted(entries, key=lambda e: -(e.started if e.started is not None else e.mtime))


@dataclass(frozen=True)
class RunDetails:
    """What the run says about itself; None (or empty) where it does not say."""

    started: float | None  # seconds since the epoch
    duration_s: float | None
    world_size: int | None
    command: str | None
    hosts: list[str]


def when(seconds: float) -> str:
    """A time of day on the viewer's clock, as the picker and the header print it."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def details_text(d: RunDetails) -> str | None:
    """ "started 2026-12-04 17:35 · ran 8 s · 3 ranks on vm · torchrun ..." or None."""
    parts = []
    if d.started is not None:
        parts.append(f"started {when(d.started)}")
    if d.duration_s is not None:
        parts.append(f"ran {_duration(d.duration_s)}")
    if d.world_size is not None:
        on = ""
        if d.hosts:
            shown = ", ".join(d.hosts[:3]) + (
                f" and {len(d.hosts) - 3} more" if len(d.hosts) > 3 else ""
            )
            on = f" on {len(d.hosts)} host(s): {shown}" if len(d.hosts) > 1 else f" on {shown}"
        parts.append(f"{d.world_size} rank(s){on}")
    if d.command:
        parts.append(d.command if len(d.command) <= 120 else d.command[:117] + "...")
    return " · ".join(parts) or None


def run_details(path: str | Path) -> RunDetails:
    """The run's own start, duration, world size, command and hosts (``run.json`` and
    each ``rank{R}.meta.json``, as ``readers.read_run_manifest`` reads them)."""
    p = Path(path)
    manifest = readers.read_run_manifest(p) if p.is_dir() else {}
    start, end = _seconds(manifest.get("start_ns")), _seconds(manifest.get("end_ns"))
    command = manifest.get("command")
    ranks = manifest.get("ranks")
    hosts = sorted(
        {str(m["host"]) for m in ranks.values() if isinstance(m, dict) and m.get("host")}
        if isinstance(ranks, dict)
        else set()
    )
    world = manifest.get("world_size")
    return RunDetails(
        started=start,
        duration_s=end - start if start is not None and end is not None and end >= start else None,
        world_size=world if isinstance(world, int) else None,
        command=" ".join(map(str, command)) if isinstance(command, list) and command else None,
        hosts=hosts,
    )


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    try:
        out = [p for p in path.iterdir() if p.is_file()]
        out += [p for p in path.glob("*/*") if p.is_file()]
    except OSError:
        return []
    return out


def _newest_mtime(path: Path) -> float:
    times = []
    for p in _files(path):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=path.stat().st_mtime if path.exists() else 0.0)


def run_signature(path: str | Path) -> tuple[tuple[str, int, int], ...]:
    sig = []
    for p in _files(Path(path)):
        try:
            st = p.stat()
        except OSError:
            continue
        sig.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(sig))


def is_live(path: str | Path, now: float | None = None) -> bool:
    p = Path(path)
    if not rundir.is_run_dir(p):
        return False
    now = time.time() if now is None else now
    if now - _newest_mtime(p) > LIVE_QUIET_S:
        return False
    manifest = p / rundir.RUN_MANIFEST
    try:
        finished = "end_ns" in rundir.read_json(manifest)
    except (OSError, ValueError, TypeError):
        finished = False
    attaching = (
        any(rundir.control_dir(p).glob("*.request.json"))
        if rundir.control_dir(p).is_dir()
        else False
    )
    return not finished or attaching


def run_file_bytes(path: str | Path, run_root: str | Path) -> bytes:
    """The bytes of ``path``, a regular file under ``run_root`` reached without a symlink.

    ``safeio.UnsafeFile`` (an OSError) for a path outside the root, a symlink in any
    component below the root, or anything but a regular file; the size limit is
    ``RANKSCOPE_MAX_TRACE_BYTES``.
    """
    root = Path(run_root)
    if not root.is_dir():  # a run given as one trace file: its folder is the root
        root = root.parent
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(rel).parts
    if not parts or rel.startswith(os.pardir) or os.path.isabs(rel):
        raise safeio.UnsafeFile(path, "is not inside the run folder")
    dir_flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(root, dir_flags)
    try:
        for part in parts[:-1]:
            try:
                sub = os.open(part, dir_flags | nofollow, dir_fd=fd)
            except OSError as e:
                raise safeio.UnsafeFile(path, f"has {part!r} that is not a plain folder") from e
            os.close(fd)
            fd = sub
        return safeio.read_bytes(parts[-1], safeio.max_trace_bytes(), nofollow=True, dir_fd=fd)
    finally:
        os.close(fd)
