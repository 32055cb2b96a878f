"""``rankscope watch``: a live terminal view of a running job's light layer.

``snapshot(run_dir, now_ns)`` reads what the ranks are writing (heartbeats and
progress records through the readers ``rankscope attach --status`` uses, the tail
of each ``rank{R}.steps.jsonl``) into a ``Snapshot`` of one ``RankRow`` per rank;
``frame(snapshot, top)`` draws it as a rich renderable: a summary line (ranks per
state, the step range, the median step), then the ``top`` slowest ranks, stalled
and silent ranks first (every rank when there are no more than ``top``). The
command redraws it every ``--interval`` seconds until run.json says the job ended
(or Ctrl-C); ``--once`` prints one frame.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankscope.profiler.errors import EXIT_BAD_INPUT, EXIT_NOTHING, RankscopeError

if TYPE_CHECKING:
    from rich.console import RenderableType

TAIL_BYTES = 16_384  # the end of a steps file: enough for the last RECENT_STEPS steps
RECENT_STEPS = 20  # step time and data wait are means over a rank's last steps
DEFAULT_TOP = 20
# Every collector stopped but run.json has no end: `rankscope run` writes the exit
# code a moment later; a job started without it never does, so stop waiting after this.
END_GRACE_S = 10.0


@dataclass(frozen=True)
class RankRow:
    """One rank as the watch shows it; None where the rank has not written that yet.

    ``late_ms``: its recent data wait beyond the median rank's (the light layer's sign
    that this rank's input holds the others back); ``behind``: steps behind the
    furthest rank.
    """

    rank: int
    host: str
    state: str  # running / stalled / stopped / exited / silent N s / no heartbeat
    alive: bool
    step: int | None
    steps_per_s: float | None
    step_ms: float | None
    data_ms: float | None
    late_ms: float | None
    behind: int | None
    heartbeat_s: float | None


@dataclass(frozen=True)
class Snapshot:
    """The whole job at one moment: its rows (by rank), world size and, once ended, exit code."""

    run: str
    rows: list[RankRow]
    world_size: int
    ended: bool  # run.json records the job's end (``rankscope run`` writes it)
    exit_code: int | None
    all_stopped: bool  # every rank's collector stopped (a job without `rankscope run`)
    stall_lines: list[str]


def _recent_steps(path: Path) -> list[dict[str, Any]]:
    """The last RECENT_STEPS records of a steps file, from its tail only (files grow for days)."""
    import msgspec

    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first is cut
    out = []
    for line in lines[-RECENT_STEPS - 1 :]:
        with contextlib.suppress(msgspec.DecodeError, ValueError):
            obj = msgspec.json.decode(line)
            if isinstance(obj, dict) and isinstance(obj.get("end_ns"), int):
                out.append(obj)
    return out[-RECENT_STEPS:]


def _mean_ms(values: list[float]) -> float | None:
    return sum(values) / len(values) / 1e6 if values else None


def snapshot(run_dir: Path, now_ns: int | None = None) -> Snapshot:
    """Read the job's light layer as it stands now (``now_ns``: the clock, for tests)."""
    from rankscope.profiler import layout, progress, rundir
    from rankscope.profiler.commands.attach import _progress_records, _rate, liveness

    now_ns = time.time_ns() if now_ns is None else now_ns
    beats = rundir.read_heartbeats(run_dir)
    records = _progress_records(run_dir, beats)
    manifest = rundir.read_run_manifest(run_dir)
    world = int(manifest.get("world_size") or 0)
    world = max([world, *(int(hb.get("world_size") or 0) for hb in beats.values())])
    ranks = sorted(set(beats) | set(records) | set(range(world)))
    base: list[dict[str, Any]] = []
    for rank in ranks:
        hb = beats.get(rank)
        steps = _recent_steps(layout.steps_path(run_dir, rank))
        step_ns = [s["end_ns"] - s["start_ns"] for s in steps if isinstance(s.get("start_ns"), int)]
        data_ns = [s["data_ns"] for s in steps if isinstance(s.get("data_ns"), int)]
        if hb is None:
            alive, state, age, rate = False, "no heartbeat", None, None
        else:
            alive, state = liveness(hb, now_ns)
            age = max(0.0, (now_ns - int(hb.get("ts_ns", 0))) / 1e9)
            rate = _rate(hb) or None
        if alive and rank in records and records[rank].state == "stalled":
            state = "stalled"
        # the steps file is written every step, the heartbeat once a second: the later wins
        candidates = [hb.get("step") if hb is not None else None]
        candidates.append(steps[-1].get("step") if steps else None)
        known = [c for c in candidates if isinstance(c, int)]
        step = max(known) if known else None
        base.append(
            {
                "rank": rank,
                "host": str(hb.get("host", "?")) if hb else "?",
                "state": state,
                "alive": alive,
                "step": step,
                "steps_per_s": rate,
                "step_ms": _mean_ms(step_ns),
                "data_ms": _mean_ms(data_ns),
                "heartbeat_s": age,
            }
        )
    data = [r["data_ms"] for r in base if r["data_ms"] is not None]
    median_data = statistics.median(data) if data else None
    front = max((r["step"] for r in base if r["step"] is not None), default=None)
    rows = [
        RankRow(
            **r,
            late_ms=None
            if r["data_ms"] is None or median_data is None
            else r["data_ms"] - median_data,
            behind=None if r["step"] is None or front is None else front - r["step"],
        )
        for r in base
    ]
    exit_code = manifest.get("exit_code")
    return Snapshot(
        run=str(run_dir),
        rows=rows,
        world_size=max(world, len(rows)),
        ended="exit_code" in manifest or "end_ns" in manifest,
        all_stopped=bool(beats)
        and all(r.state in ("stopped", "exited") for r in rows if r.rank in beats),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        stall_lines=progress.stall_lines(records, now_ns),
    )


def _trouble(r: RankRow) -> tuple[int, float]:
    """Sort key: stalled, silent or gone ranks first, then the slowest (most behind, latest)."""
    order = 0 if r.state == "stalled" else 1 if not r.alive else 2
    late = (r.behind or 0) * 1e6 + (r.late_ms or 0.0)
    return order, -late


def shown_rows(snap: Snapshot, top: int) -> list[RankRow]:
    """Every row up to ``top`` ranks; beyond, the ``top`` most in trouble (``_trouble``)."""
    if len(snap.rows) <= top:
        return snap.rows
    return sorted(snap.rows, key=_trouble)[:top]


def _num(x: float | None, digits: int = 1, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def summary_line(snap: Snapshot) -> str:
    """One line for the whole job: ranks per state, the step range, the median step time."""
    counts: dict[str, int] = {}
    for r in snap.rows:
        key = (
            r.state
            if r.state in ("running", "stalled", "stopped", "exited")
            else ("no heartbeat" if r.state == "no heartbeat" else "silent")
        )
        counts[key] = counts.get(key, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    steps = [r.step for r in snap.rows if r.step is not None]
    span = f"steps {min(steps)}–{max(steps)}" if steps else "no step yet"
    step_ms = [r.step_ms for r in snap.rows if r.step_ms is not None]
    median = f", median step {statistics.median(step_ms):.1f} ms" if step_ms else ""
    hosts = len({r.host for r in snap.rows if r.host != "?"})
    end = ""
    if snap.ended:
        end = " · job ended" + (
            f" (exit code {snap.exit_code})" if snap.exit_code is not None else ""
        )
    return (
        f"{snap.run}: {len(snap.rows)} of {snap.world_size} rank(s) on {hosts} host(s): "
        f"{states}; {span}{median}{end}"
    )


def frame(snap: Snapshot, top: int = DEFAULT_TOP) -> RenderableType:
    """The snapshot as a rich renderable (a summary line, the rank table, stall lines)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    rows = shown_rows(snap, top)
    cut = len(rows) < len(snap.rows)
    title = f"the {len(rows)} slowest of {len(snap.rows)} ranks" if cut else None
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in ("rank", "host", "state", "step", "behind", "steps/s", "step ms", "data ms"):
        table.add_column(name, justify="left" if name in ("host", "state") else "right")
    table.add_column("late ms", justify="right")
    table.add_column("heartbeat", justify="right")
    for r in rows:
        style = "bold red" if r.state == "stalled" else "yellow" if not r.alive else None
        table.add_row(
            str(r.rank),
            escape(r.host),
            escape(r.state),
            "-" if r.step is None else str(r.step),
            "-" if r.behind is None else str(r.behind),
            _num(r.steps_per_s, 2),
            _num(r.step_ms),
            _num(r.data_ms),
            _num(r.late_ms, 1, signed=True),
            "-" if r.heartbeat_s is None else f"{r.heartbeat_s:.1f} s",
            style=style,
        )
    parts: list[Any] = [Text(summary_line(snap), style="bold"), table]
    if cut:
        parts.append(Text(f"{len(snap.rows) - len(rows)} other ranks not shown (--top N)"))
    parts += [Text(line, style="red") for line in snap.stall_lines]
    parts.append(
        Text(
            "late ms: data wait beyond the median rank's, over each rank's last "
            f"{RECENT_STEPS} steps; behind: steps behind the furthest rank.",
            style="dim",
        )
    )
    return Group(*parts)


class WatchCommand:
    """Watch a running job live: per rank its step, rate, data wait, lateness and stalls.

    RUN is the run directory a job writes (``rankscope run`` or the Collector). The
    view redraws every --interval seconds and ends by itself when run.json records the
    job's end; Ctrl-C ends it too. Past --top ranks it shows the stalled and slowest
    first. --once prints one frame and exits (for scripts and tests).

    Exit codes: 0 the job ended, Ctrl-C, or --once showed at least one rank; 1 --once
    found no rank yet; 2 RUN is not a directory or --interval/--top is not positive.
    """

    name = "watch"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN", help="the run directory the job writes")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between redraws (default 1)"
        )
        parser.add_argument(
            "--top", type=int, default=DEFAULT_TOP, help="ranks listed one by one (default 20)"
        )
        parser.add_argument("--once", action="store_true", help="print one frame and exit")

    def run(self, args: argparse.Namespace) -> int:
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise RankscopeError(f"{args.run_dir}: no such run directory", EXIT_BAD_INPUT)
        if not (args.interval > 0 and math.isfinite(args.interval)) or args.top < 1:
            raise RankscopeError("--interval and --top must be positive", EXIT_BAD_INPUT)
        from rich.console import Console

        # Piped (a script, a log): wide enough that no column is cut.
        console = Console(width=None if sys.stdout.isatty() else 160)
        if args.once:
            snap = snapshot(run_dir)
            console.print(frame(snap, args.top))
            return 0 if snap.rows else EXIT_NOTHING
        return watch(run_dir, console, args.interval, args.top)


def watch(run_dir: Path, console: Any, interval: float, top: int) -> int:
    """Redraw every ``interval`` s until the job ends (last frame left on screen) or Ctrl-C."""
    from rich.live import Live

    snap = snapshot(run_dir)
    stopped_at: float | None = None
    try:
        with Live(frame(snap, top), console=console, auto_refresh=False, transient=False) as live:
            while not snap.ended:
                if snap.all_stopped:
                    stopped_at = stopped_at or time.monotonic()
                    if time.monotonic() - stopped_at > END_GRACE_S:
                        break
                else:
                    stopped_at = None
                time.sleep(interval)
                snap = snapshot(run_dir)
                live.update(frame(snap, top), refresh=True)
    except KeyboardInterrupt:
        return 0
    return 0
