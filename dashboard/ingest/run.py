"""Find the traces of a run, ingest them (cached, in parallel) and group them by rank.

``load_run(path)`` accepts a collector run directory, a folder written by
``torch.profiler.tensorboard_trace_handler``, an HTA-style folder
(``rank-N.json.gz``) or one trace file, and returns a ``Run``:

- ``ranks``: rank -> ``RankData`` (the trace tables of every capture window of
  that rank concatenated, plus the collector's step timer and telemetry rows
  when the run directory has them);
- ``skipped_files``: files that could not be used, each with its reason (the
  good ranks are still analysed);
- ``warnings``: one line each, for the user.

A rank comes from the trace's ``distributedInfo``, else from the file name
(``rank3``, ``rank-3``, ``worker3``), else rank 0 for a lone file (with a
warning). Two files claiming one rank is a RankscopeError naming both, except
in a collector run directory, where one rank's files are its capture windows.

The parts: ``workers`` ingests the files (cache, process pool, digests on the
spot), ``tracefile`` is one ingested file, ``rank`` assembles one rank's data;
this module finds the files, gives each its rank and builds the ``Run``.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankscope.dashboard.ingest.rank import RankData, RunPlace, rank_data
from rankscope.dashboard.ingest.tracefile import TraceRef, json_size, rank_of
from rankscope.dashboard.ingest.workers import (
    DigestFn,
    ProgressFn,
    TraceJob,
    expected_ranks,
    ingest_files,
    ingest_one,
    name_rank_problem,
    trace_jobs,
)
from rankscope.profiler import rundir
from rankscope.profiler.errors import RankscopeError

# What the layers above import from here (RankData is the analysis' input).
__all__ = [
    "DigestFn",
    "ProgressFn",
    "RankData",
    "Run",
    "RunPlace",
    "TraceJob",
    "TraceRef",
    "discover_trace_files",
    "expected_ranks",
    "ingest_one",
    "json_size",
    "load_run",
    "stderr_progress",
    "trace_jobs",
]


@dataclass
class Run:
    path: str
    kind: str  # run_dir | folder | file
    ranks: dict[int, RankData]
    world_size: int
    manifest: dict[str, Any] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # torchrun restarts: which attempt this directory holds (None: not known), and the
    # folders holding the attempts before it (``attempt{K}/``, oldest first)
    attempt: int | None = None
    earlier_attempts: list[str] = field(default_factory=list)


def discover_trace_files(path: Path) -> tuple[Path, str, list[Path]]:
    """The run at ``path``, its kind and its trace files (``rundir.find_run``).

    A RankscopeError when there is no run, or when ``path`` holds several runs.
    """
    found = rundir.find_run(path)
    return found.path, found.kind, list(found.traces)


def load_run(
    path: str | Path,
    ranks: Iterable[int] | None = None,
    progress: ProgressFn | None = None,
    digest: DigestFn | None = None,
) -> Run:
    """The run at ``path`` (see the module docstring). With ``digest`` (the layer
    above's ``DigestFn``), the workers that parse a rank's one trace also digest it."""
    path, kind, files = discover_trace_files(Path(path))
    place = RunPlace(kind, str(path))
    traces, failed = ingest_files(files, progress, place, digest)
    # A reason that starts with the file's own path (safeio's) says it once, not twice.
    skipped = [{"file": f, "reason": reason.removeprefix(f"{f}: ")} for f, reason in failed.items()]
    warnings = [f"skipped {s['file']}: {s['reason']}" for s in skipped]

    manifest = rundir.read_run_manifest(path) if kind == "run_dir" else {}
    # Rank of each good file.
    by_rank: dict[int, list[TraceRef]] = {}
    lone = len(files) == 1
    for f in files:
        t = traces.get(str(f))
        if t is None:
            continue
        foreign = _foreign(t.meta.get("origin"), f, manifest) if kind == "run_dir" else None
        misnamed = name_rank_problem(t.meta, f)
        if foreign is None and misnamed is not None and kind == "run_dir":
            # The collector names each window by its own rank: a window saying another
            # rank is another rank's (a copy under this name), never this rank's numbers.
            foreign = f"{misnamed}; not used"
        if foreign is not None:
            skipped.append({"file": str(f), "reason": foreign})
            warnings.append(f"skipped {f}: {foreign}")
            continue
        if misnamed is not None:
            warnings.append(f"{f.name}: {misnamed}; read as rank {t.meta['rank']}")
        r = rank_of(t.meta, f)
        if r is not None and not rundir.valid_rank(r):
            reason = f"rank {r} is beyond the largest world size ({rundir.MAX_WORLD_SIZE})"
            skipped.append({"file": str(f), "reason": reason})
            warnings.append(f"skipped {f}: {reason}")
            continue
        if t.meta.get("dropped_events"):
            warnings.append(
                f"{f.name}: {t.meta['dropped_events']} event(s) with a timestamp or duration"
                " out of range were left out"
            )
        if r is None:
            if lone:
                r = 0
                warnings.append(f"{f.name}: no rank in the trace or file name; assuming rank 0")
            else:
                reason = "no rank in the trace's distributedInfo or in the file name"
                skipped.append({"file": str(f), "reason": reason})
                warnings.append(f"skipped {f}: {reason}")
                continue
        by_rank.setdefault(r, []).append(t)
    for r, ts in by_rank.items():
        if len(ts) > 1 and kind != "run_dir":
            raise RankscopeError(f"two trace files claim rank {r}: {ts[0].path} and {ts[1].path}")

    # Collector-only ranks (telemetry/steps but no trace yet) still count in a run dir.
    if kind == "run_dir":
        for r in manifest.get("ranks", {}):
            by_rank.setdefault(int(r), [])
        warnings += _listed_but_absent(path, manifest, {f.name for f in files})

    world_sizes = [t.meta.get("world_size") for ts in by_rank.values() for t in ts]
    world_sizes += [manifest.get("world_size")]
    warnings += [f"{path}: {p}" for p in manifest.get("problems", [])]
    too_big = [w for w in world_sizes if isinstance(w, int) and not rundir.valid_world_size(w)]
    if any(w > 0 for w in too_big):
        warnings.append(
            f"a world size of {max(too_big)} was read and ignored (the most rankscope reads"
            f" is {rundir.MAX_WORLD_SIZE})"
        )
    world_size = max([w for w in world_sizes if rundir.valid_world_size(w)], default=0)
    world_size = max(world_size, max(by_rank, default=-1) + 1)
    if world_size > len(by_rank):
        # The first 17 missing ranks, without a set as large as the world.
        missing = list(itertools.islice((r for r in range(world_size) if r not in by_rank), 17))
        shown = ", ".join(map(str, missing[:16])) + (" ..." if len(missing) > 16 else "")
        warnings.append(
            f"world size is {world_size} but only {len(by_rank)} rank(s) have traces;"
            f" missing ranks: {shown} (waits and last arrivals are among the ranks present)"
        )

    wanted = set(ranks) if ranks is not None else None
    out: dict[int, RankData] = {}
    for r in sorted(by_rank):
        if wanted is not None and r not in wanted:
            continue
        refs = by_rank[r]
        if len(refs) > 1:
            refs = _distinct_windows(refs, skipped, warnings)
        out[r] = rank_data(r, refs, place, manifest)
    if wanted is not None:
        unknown = sorted(wanted - set(by_rank))
        if unknown:
            # At most 16 of each list: a range of a million ranks stays one line.
            asked = ", ".join(map(str, unknown[:16])) + (" ..." if len(unknown) > 16 else "")
            present = sorted(by_rank)
            shown = ", ".join(map(str, present[:16])) + (" ..." if len(present) > 16 else "")
            raise RankscopeError(
                f"--ranks asks for rank(s) {asked}, which the run does not"
                f" have (ranks present: {shown or 'none'})"
            )
    if not out:
        reasons = "; ".join(s["reason"] for s in skipped[:3])
        raise RankscopeError(f"{path}: no usable trace ({reasons or 'nothing to read'})")
    attempt, earlier = (
        _attempts(Path(path), manifest, warnings) if kind == "run_dir" else (None, [])
    )
    return Run(
        path=str(path),
        kind=kind,
        ranks=out,
        world_size=world_size,
        manifest=manifest,
        skipped_files=skipped,
        warnings=warnings,
        attempt=attempt,
        earlier_attempts=earlier,
    )


def _listed_but_absent(path: Path, manifest: dict[str, Any], present: set[str]) -> list[str]:
    """A warning for each window a rank manifest lists whose trace file is not in the run
    directory (deleted, moved, or lost with its disk): absent evidence is said."""
    out = []
    for r, meta in sorted(manifest.get("ranks", {}).items()):
        for w in meta.get("windows", []) or []:
            name = w.get("file") if isinstance(w, dict) else None
            if isinstance(name, str) and name not in present and "/" not in name:
                out.append(
                    f"rank{r}.meta.json lists the window {name} (steps {w.get('first_step')}-"
                    f"{w.get('last_step')}), which is not in {path}: deleted or moved? Its"
                    " steps are read from the step log only"
                )
    return out


def _foreign(origin: Any, path: Path, manifest: dict[str, Any]) -> str | None:
    """Why a trace window the collector tagged (``meta["origin"]``) is not this run
    directory's: written by another run, by another rank than its name says, or by an
    earlier attempt of the job; None when it is, or says nothing (another tool's)."""
    if not isinstance(origin, dict):
        return None
    named, said = rundir.rank_from_filename(path.name), origin.get("rank")
    why = rundir.other_run(origin.get("run_id"), manifest.get("run_id"))
    why = why or rundir.other_rank(said, named)
    if why is not None:
        return why
    rank_meta = manifest.get("ranks", {}).get(named if named is not None else said) or {}
    now, then = rank_meta.get("attempt"), origin.get("attempt")
    if type(now) is int and type(then) is int and now != then:
        return (
            f"written by attempt {then} of the job; this directory holds attempt {now}"
            " (torchrun restarted it); not used"
        )
    return None


def _attempts(
    path: Path, manifest: dict[str, Any], warnings: list[str]
) -> tuple[int | None, list[str]]:
    """Which torchrun attempt the run directory holds, the earlier ones beside it, and a
    warning that says so (``rundir.set_aside_attempt``)."""
    seen = [manifest.get("attempt")]
    seen += [m.get("attempt") for m in manifest.get("ranks", {}).values()]
    known = [a for a in seen if type(a) is int and a >= 0]
    attempt = max(known) if known else None
    earlier = [str(folder) for _, folder in rundir.attempt_dirs(path)]
    if earlier:
        names = ", ".join(Path(f).name + "/" for f in earlier[:8])
        names += " ..." if len(earlier) > 8 else ""
        warnings.append(
            f"torchrun restarted this job: this report is of attempt"
            f" {attempt if attempt is not None else len(earlier)}, the last; the attempts before"
            f" it are in {names} (rankscope report {earlier[0]})"
        )
    elif rundir.ATTEMPT_DIR_RE.match(path.name) and rundir.is_run_dir(path.parent):
        warnings.append(
            f"this is attempt {path.name.removeprefix('attempt')} of a job torchrun"
            f" restarted, set aside when the next attempt started; the last attempt is in"
            f" {path.parent}"
        )
    return attempt, earlier


def _distinct_windows(
    refs: list[TraceRef], skipped: list[dict[str, str]], warnings: list[str]
) -> list[TraceRef]:
    """One rank's windows in time order, a copy (same first event, another name) once.

    A second copy of a window would double its counts; it is listed in ``skipped``
    and warned about, naming the file it repeats.
    """
    kept: dict[int, TraceRef] = {}
    # Of two copies, the shorter name is kept: the collector's own, not "copy of ...".
    for ref in sorted(refs, key=lambda t: (t.cpu_start_ns(), len(Path(t.path).name), t.path)):
        first = kept.setdefault(ref.cpu_start_ns(), ref)
        if first is not ref:
            reason = (
                f"a copy of {Path(first.path).name} (same rank, same first event); counted once"
            )
            skipped.append({"file": ref.path, "reason": reason})
            warnings.append(f"skipped {ref.path}: {reason}")
    return list(kept.values())


PIPE_PROGRESS_LINES = 4  # on a pipe: a line at each quarter, the last at the end


def stderr_progress() -> ProgressFn | None:
    """One updating progress bar on a terminal; on a pipe, for slow ingests only (past
    2 s), a line at each quarter of the files and one at the end: a few lines, never
    one per file."""
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True, console=None)
        task = None

        def on_tty(done: int, total: int, label: str) -> None:
            nonlocal task
            if task is None:
                bar.start()
                task = bar.add_task("ingesting traces", total=total)
            bar.update(task, completed=done, description=f"ingesting {label}")
            if done >= total:
                bar.stop()

        return on_tty
    start = time.monotonic()
    printed = 0  # quarters of the files reported so far

    def on_pipe(done: int, total: int, label: str) -> None:
        nonlocal printed
        if time.monotonic() - start <= 2.0 or total <= 0:
            return
        reached = PIPE_PROGRESS_LINES * done // total if done < total else PIPE_PROGRESS_LINES
        if reached > printed:
            printed = reached
            print(f"rankscope: ingested {done}/{total} ({label})", file=sys.stderr, flush=True)

    return on_pipe
