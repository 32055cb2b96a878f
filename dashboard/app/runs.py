"""Which runs a dashboard path holds, and whether a run is still being written.

``find_runs(path)`` -> list of ``RunEntry`` (newest first): the runs that
``rankscope.profiler.rundir.find_runs`` finds (the one discovery the report uses
too): the path itself when it is a run, else each run in the folders below it.
A RankscopeError (exit 2) when there is none.

``run_signature(path)`` -> a tuple of (name, size, mtime_ns) of the run's files:
it changes whenever the collector appends telemetry, writes a window or a step,
so caches keyed on it refresh a live run and never re-read a finished one.

``is_live(path)`` -> True while a collector run directory is still being
written: its ``run.json`` has no ``end_ns`` yet (``rankscope run`` records it
when the job ends), or an attach is in progress, and a file changed in the last
``LIVE_QUIET_S`` seconds.

Only the standard library and ``rankscope.profiler.rundir``: no streamlit, no pandas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rankscope.profiler import rundir

LIVE_QUIET_S = 120.0


@dataclass(frozen=True)
class RunEntry:
    path: str
    label: str
    mtime: float


def find_runs(path: str | Path) -> list[RunEntry]:
    """The runs at ``path`` for the run picker, as ``rundir.find_runs`` finds them."""
    return [RunEntry(str(r.path.resolve()), r.label, r.mtime) for r in rundir.find_runs(path)]


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
