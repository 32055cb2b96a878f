"""Finding runs: the one discovery both the report and the dashboard use.

``find_runs(path)`` answers every run at ``path`` (a collector run directory, a
folder of traces, one trace file, or a folder holding runs up to
RUN_SEARCH_DEPTH levels down), newest first, as ``FoundRun``; ``find_run`` the
one run there. Both raise ``RankscopeError`` (exit 2) with a one-line reason.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from rankscope.profiler.errors import RankscopeError
from rankscope.profiler.layout import is_run_dir, is_trace_file, rank_from_filename

# How deep below a folder of runs to look for runs (runs/2025-01/exp1 is depth 2),
# and how many folders to look at in all: pointing at a home directory must
# answer quickly with an error, never walk the whole disk.
RUN_SEARCH_DEPTH = 3
RUN_SEARCH_MAX_DIRS = 2000


@dataclass(frozen=True)
class FoundRun:
    """One run found on disk: where it is, what kind it is and its trace files.

    ``kind`` is "run_dir" (the collector wrote it: ``run.json`` or
    ``rank*.meta.json``; it may have no trace yet), "folder" (trace files written
    by ``tensorboard_trace_handler`` or HTA-style ``rank-N.json.gz``) or "file"
    (one trace file). ``label`` names it in a list of runs (its path below the
    folder that was searched). ``mtime`` is the newest modification time of its
    files, so lists show the newest run first.
    """

    path: Path
    kind: str
    traces: tuple[Path, ...]
    label: str
    mtime: float


def _trace_files_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if is_trace_file(p))
    except OSError:
        return []


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError:
        return []


def _newest_mtime(path: Path) -> float:
    """The newest mtime among a run's own files (the folder's own when it has none)."""
    times = []
    with contextlib.suppress(OSError):
        for p in path.iterdir() if path.is_dir() else [path]:
            with contextlib.suppress(OSError):
                if p.is_file():
                    times.append(p.stat().st_mtime)
    if not times:
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)


def _run_at(path: Path, label: str) -> FoundRun | None:
    """``path`` as a run, or None when it is not one by itself."""
    if path.is_file():
        if not path.name.endswith((".json", ".json.gz")):
            return None
        return FoundRun(path, "file", (path,), label, _newest_mtime(path))
    if not path.is_dir():
        return None
    traces = _trace_files_in(path)
    if is_run_dir(path):
        return FoundRun(path, "run_dir", tuple(traces), label, _newest_mtime(path))
    if traces:
        return FoundRun(path, "folder", tuple(traces), label, _newest_mtime(path))
    return None


def _merge_rank_splits(root: Path, runs: list[FoundRun]) -> list[FoundRun]:
    """Runs whose ranks sit in sub-folders named by rank (``rank0/``, ``worker1/``) as one.

    ``tensorboard_trace_handler(f"log/rank{rank}")`` writes such a layout: those
    sub-folders are not runs of their own but the ranks of one run, ``log/``.
    """
    by_parent: dict[Path, list[FoundRun]] = {}
    for run in runs:
        if run.kind == "folder" and rank_from_filename(run.path.name) is not None:
            by_parent.setdefault(run.path.parent, []).append(run)
    out = list(runs)
    for parent, parts in by_parent.items():
        ranks = {rank_from_filename(p.path.name) for p in parts}
        if len(parts) < 2 or len(ranks) != len(parts):
            continue
        out = [r for r in out if r not in parts]
        label = parent.relative_to(root).as_posix() if parent != root else (root.name or str(root))
        traces = tuple(t for p in sorted(parts, key=lambda p: p.path.name) for t in p.traces)
        out.append(FoundRun(parent, "folder", traces, label, max(p.mtime for p in parts)))
    return out


def find_runs(path: str | Path) -> list[FoundRun]:
    """Every run at ``path``, newest first; a RankscopeError (exit 2) when there is none.

    ``path`` itself when it is a run (a collector run directory, a folder with
    trace files, or a ``.json``/``.json.gz`` file); else each run in the folders
    below it, up to RUN_SEARCH_DEPTH levels down (a run's own sub-folders are
    never searched; hidden folders are skipped). Sub-folders named by rank
    (``rank0/``, ``rank1/``) holding trace folders are the ranks of one run.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise RankscopeError(f"{path}: no such file or directory")
    itself = _run_at(root, root.name or str(root))
    if itself is not None:
        return [itself]
    if not root.is_dir():
        raise RankscopeError(f"{path}: not a trace file (expected .json or .json.gz)")
    found: list[FoundRun] = []
    seen: set[Path] = set()
    visited = 0
    frontier = [root]
    for _depth in range(RUN_SEARCH_DEPTH):
        below: list[Path] = []
        for folder in frontier:
            for child in _subdirs(folder):
                visited += 1
                if visited > RUN_SEARCH_MAX_DIRS:
                    break
                try:
                    real = child.resolve()
                except OSError:
                    continue
                if real in seen:  # a symlink to a run already listed, or a loop
                    continue
                seen.add(real)
                run = _run_at(child, child.relative_to(root).as_posix())
                if run is not None:
                    found.append(run)
                else:
                    below.append(child)
        frontier = below
    found = _merge_rank_splits(root, found)
    if not found:
        raise RankscopeError(
            f"{path}: no trace files found, so no run found (expected a rankscope run"
            " directory, *.pt.trace.json[.gz] or rank-N.json[.gz] files, here or in the"
            f" folders up to {RUN_SEARCH_DEPTH} levels below)"
        )
    found.sort(key=lambda r: (-r.mtime, r.label))
    return found


def find_run(path: str | Path) -> FoundRun:
    """The one run at ``path``; a RankscopeError naming the runs when it holds several.

    A folder holding a single run (``log/`` with the traces one level down) is that run.
    """
    runs = find_runs(path)
    if len(runs) > 1:
        shown = ", ".join(r.label for r in runs[:5]) + (" ..." if len(runs) > 5 else "")
        raise RankscopeError(
            f"{path} holds {len(runs)} runs ({shown}): give one of them"
            " (`rankscope dashboard` lists them all)"
        )
    return runs[0]
