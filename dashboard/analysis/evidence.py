"""What each rank's verdict rests on: which sources were used, which could not be, and why.

``run_evidence(run)`` looks at every loaded rank of a run (its trace windows and,
in a collector run directory, its step timer, collective log and telemetry
files) and returns one ``RankEvidence`` per rank: the sources that gave records
(``used``), the ones that did not with the reason (``unused``: missing while
other ranks have it, empty, not a regular file, written by another run), and
the records skipped on reading (``problems``: the first few, and their count).
A source no rank has (telemetry off, a run without a collective log) is not
named as missing. Reading the sources here is what fills ``RankData.problems``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rankscope.dashboard.ingest.run import RankData, Run
from rankscope.profiler import rundir

# The sources, in the order a line names them.
SOURCES = ("trace", "steps", "collectives", "telemetry")
# How many of a rank's problems the report quotes (all are counted).
SHOWN_PROBLEMS = 3


@dataclass(frozen=True)
class RankEvidence:
    """One rank's sources: used (with records), unused (``source: reason``), problems."""

    rank: int
    used: list[str]
    unused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the first SHOWN_PROBLEMS
    problem_count: int = 0

    @property
    def complete(self) -> bool:
        return not self.unused and not self.problem_count


def _files(run: Run, rd: RankData) -> dict[str, Path | None]:
    """Where each light-layer source of ``rd`` is read from (None: not for this run)."""
    if run.kind != "run_dir":
        return {"steps": None, "collectives": None, "telemetry": None}
    folder = Path(run.path)
    return {
        "steps": rundir.steps_path(folder, rd.rank),
        "collectives": rundir.collectives_path(folder, rd.rank),
        "telemetry": Path(rd.telemetry_file) if rd.telemetry_file else None,
    }


def _rows(rd: RankData, source: str) -> int:
    # Reading each table is what fills rd.problems (each is read once, then kept).
    if source == "steps":
        return len(rd.step_marks)
    if source == "collectives":
        return len(rd.light_comms)
    return len(rd.telemetry)


def _status(path: Path, rows: int, problems: list[str]) -> str | None:
    """None when the file gave records; else why it did not (for ``unused``)."""
    if rows:
        return None
    said = [p for p in problems if p.startswith(f"{path.name}: ")]
    if said:
        return said[0]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as e:
        return f"{path.name} cannot be read ({e.strerror or e})"
    if size == 0:
        return f"{path.name} is empty"
    return f"{path.name} holds no valid record"


NO_WINDOW = "no trace window"


def _left_out(run: Run, rank: int) -> str | None:
    """Why ``rank`` (which has no trace) has none: a window of its name that was not used
    (``Run.skipped_files``), or one its manifest lists that is gone; None: neither."""
    for s in run.skipped_files:
        name = Path(s["file"]).name
        if rundir.rank_from_filename(name) == rank:
            return f"{name}: {s['reason']}"
    for w in run.manifest.get("ranks", {}).get(rank, {}).get("windows", []) or []:
        if isinstance(w, dict) and isinstance(w.get("file"), str):
            return f"{w['file']}: listed in rank{rank}.meta.json, not in the run directory"
    return None


def run_evidence(run: Run) -> list[RankEvidence]:
    """Every rank's ``RankEvidence`` (see the module docstring), in rank order."""
    found: dict[int, dict[str, str | None]] = {}
    has: dict[str, bool] = dict.fromkeys(SOURCES, False)
    for r, rd in sorted(run.ranks.items()):
        status: dict[str, str | None] = {}
        if rd.files:
            status["trace"] = None
            has["trace"] = True
        else:
            status["trace"] = _left_out(run, r) or NO_WINDOW
        for source, path in _files(run, rd).items():
            if path is None:
                continue
            status[source] = _status(path, _rows(rd, source), rd.problems)
            has[source] = has[source] or status[source] is None
        found[r] = status
    out = []
    for r, status in found.items():
        rd = run.ranks[r]
        used = [s for s in SOURCES if s in status and status[s] is None]
        # A source no rank has was not recorded in this run: not this rank's problem.
        unused = [f"{s}: {status[s]}" for s in SOURCES if status.get(s) and has[s]]
        file_level = {why.split(": ", 1)[1] for why in unused if ": " in why}
        problems = [p for p in rd.problems if p not in file_level]
        out.append(
            RankEvidence(
                rank=r,
                used=used,
                unused=unused,
                problems=problems[:SHOWN_PROBLEMS],
                problem_count=len(problems),
            )
        )
    return out


def unused_sources(evidence: list[RankEvidence]) -> list[str]:
    """``rank R: source: reason`` for every source a rank could not use."""
    return [f"rank {e.rank}: {u}" for e in evidence for u in e.unused]
