"""Why a run did not finish: who stopped, at which (group, seq, op), where, and who waited.

``hang_verdict(records) -> HangVerdict | None`` is a pure function over one run's
``HangRecords`` (``read_hang_records(run_dir)`` builds them from the files: every
rank's ``collectives.jsonl`` rows, its ``rank{R}.hang.json`` evidence and
``rank{R}.progress.json``, see ``rankscope.profiler.evidence``, and run.json's
exit code). None means the run shows nothing of a hang: it finished (or still
runs) with no rank stalled, no evidence written, exit code 0 or none yet.

Per process group, each member's collectives are a table seq -> (op, bytes,
enqueue time, completed). Completion comes from the earliest evidence (the ring
read at the stall; later rings retire entries that failed), then from later
evidence, then from the collective log (rows there were written once finished).
A collective that any rank completed was joined by every member. The first seq
of a group that no rank completed is where the group stopped:

- ``desync``: ranks issued different ops or sizes at one (pg, seq);
- ``crashed``: a rank that never issued it died (an exception, a signal, or no
  word at all: SIGKILL, the OOM killer) and the others waited;
- ``missing_rank``: a live rank never issued it (its stack says where it is);
- ``all_entered_none_completed``: every member entered it and none left
  (the transport is the suspect);
- ``late_arrival``: the run went on (exit code 0, or no rank stalled now), but a
  rank stalled waiting at some collective that a peer joined N s late;
- ``exited``: the job failed with no collective left pending (the failing
  rank's exception, if it wrote one, is named).

A rank missing in one group while it is itself waiting in another is
``blocked elsewhere``; the group whose missing ranks are blocked nowhere holds
the cause and comes first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rankscope.profiler import evidence as ev
from rankscope.profiler import rundir
from rankscope.profiler.records import CollectiveRecord

Kind = Literal[
    "missing_rank",
    "desync",
    "crashed",
    "all_entered_none_completed",
    "late_arrival",
    "exited",
    "stopped",  # every rank was sent a signal (the launcher's SIGTERM) and none had stalled
    # ranks waited in sends/receives for a rank that waited on none (``_p2p_verdict``)
    "p2p_stuck",
    "p2p_deadlock",  # ranks waiting in sends/receives for each other, in a cycle
]
RankStatus = Literal["running", "stalled", "stopped", "crashed", "failed", "signalled", "silent"]
_LIBRARY_PARTS = (
    f"{os.sep}torch{os.sep}",
    # rankscope's own frames (a signal handler's, in evidence written before the collector
    # cut them): never where the job is stuck
    f"{os.sep}rankscope{os.sep}profiler{os.sep}",
    f"{os.sep}site-packages{os.sep}",
    f"{os.sep}dist-packages{os.sep}",
    "<frozen ",
)
# The standard library, wherever the job's Python lives (.../lib/python3.11/queue.py):
# a rank blocked in queue.get or threading's wait is stuck in the job line that called it.
_STDLIB = re.compile(r"[/\\]lib[/\\]python\d+(\.\d+)?[/\\]")


# ---------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class RankRecords:
    rank: int
    collectives: tuple[ev.FrEntry, ...] = ()  # from the collective log (finished ones)
    evidence: tuple[ev.Evidence, ...] = ()  # oldest first
    progress: ev.Progress | None = None
    fatal: ev.Fatal | None = None  # a fatal signal's stacks (faulthandler)


@dataclass(frozen=True)
class HangRecords:
    world_size: int
    ranks: dict[int, RankRecords]
    exit_code: int | None = None
    now_ns: int = 0  # when the records were read (a live run's stall ages)
    problems: tuple[str, ...] = ()  # files that failed to decode, by name
    # an earlier attempt, set aside when torchrun restarted the job: it is over (its
    # exit code unknown), and torchrun restarts workers when one of them failed
    restarted: bool = False


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Where:
    file: str
    line: int
    function: str
    code: str = ""

    def __str__(self) -> str:
        return f"{self.function} ({os.path.basename(self.file)}:{self.line})"


@dataclass(frozen=True)
class SeqEntry:
    seq: int
    op: str
    bytes: int
    enqueue_ns: int
    completed: bool


@dataclass(frozen=True)
class GroupState:
    """One rank's view of one process group: its last collective."""

    pg: str
    pg_desc: str
    rank: int
    last: SeqEntry | None


@dataclass(frozen=True)
class GroupVerdict:
    kind: Kind
    pg: str
    pg_desc: str
    members: tuple[int, ...]
    seq: int
    op: str
    bytes: int
    ranks: tuple[int, ...]  # at fault: missing, crashed, late, or (desync) the minority side
    waiting: tuple[int, ...]  # entered it and waited
    entered_ns: int | None = None
    waited_s: float | None = None
    late_s: float | None = None
    sides: tuple[tuple[str, int, tuple[int, ...]], ...] = ()  # desync: (op, bytes, ranks)
    blocked_elsewhere: tuple[tuple[int, str, int], ...] = ()  # (rank, pg, seq) it waits in
    # crashed: missing ranks the launcher stopped (a signal, no stall) before they got
    # there, after a rank in ``ranks`` died: collateral, not the cause
    cut_short: tuple[int, ...] = ()


@dataclass(frozen=True)
class RankState:
    rank: int
    status: RankStatus
    last_step: int  # the last step it finished (-1: none)
    stuck_step: int | None  # the step under way when it stopped
    triggers: tuple[str, ...]  # evidence written: stall, exception, collective_error, signal
    exception: str | None
    where: Where | None  # the training thread's innermost frame of the job's own code
    stack: tuple[Where, ...] = ()  # the training thread, outermost first
    evidence_files: int = 0


@dataclass(frozen=True)
class HangVerdict:
    kind: Kind
    rank: int | None  # the rank at fault, when one is
    headline: str
    groups: tuple[GroupVerdict, ...]  # the cause first
    ranks: tuple[RankState, ...]
    table: tuple[GroupState, ...]  # every rank's last collective per group
    exit_code: int | None
    step: int | None = None  # the step the rank at fault did not finish
    details: tuple[str, ...] = field(default_factory=tuple)
    problems: tuple[str, ...] = ()
    # The first step some rank began and never finished: performance verdicts come
    # from the steps before it (a window it cut short would mislead). Derived from
    # ``ranks``; a field (not a property) so the report's JSON carries it.
    unfinished_step: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        steps = [r.stuck_step for r in self.ranks if r.stuck_step is not None and r.evidence_files]
        object.__setattr__(self, "unfinished_step", min(steps) if steps and self.hung else None)

    @property
    def hung(self) -> bool:
        """The run stopped (hung, desynced, crashed), not merely slowed down."""
        return self.kind != "late_arrival"


# ---------------------------------------------------------------------- reading


# The newest collectives of each group a rank's log holds that the verdict reads: a
# hang is decided at the end of the log, and a log of millions of rows must not
# take gigabytes (the rows are streamed; only this many per group are kept).
LOG_TAIL_PER_GROUP = 4096


def _log_tail(run_dir: Path, rank: int) -> list[ev.FrEntry]:
    """The last ``LOG_TAIL_PER_GROUP`` rows per process group of a rank's collective log."""
    from collections import deque

    tails: dict[str, deque[ev.FrEntry]] = {}
    path = rundir.collectives_path(run_dir, rank)
    for i, row in enumerate(rundir.iter_records(path, CollectiveRecord)):
        tails.setdefault(row.pg, deque(maxlen=LOG_TAIL_PER_GROUP)).append(
            ev.FrEntry(
                record_id=-1 - i,
                pg=row.pg,
                pg_desc=row.pg_desc,
                seq=row.seq,
                name=row.name,
                p2p=row.p2p,
                bytes=row.bytes,
                enqueue_ns=row.enqueue_ns,
                completed=True,
            )
        )
    return sorted((x for tail in tails.values() for x in tail), key=lambda x: -x.record_id)


def read_hang_records(run_dir: Path) -> HangRecords:
    """The files a hang verdict reads (IO at the edge; the verdict itself is pure)."""
    import time

    run_dir = Path(run_dir)
    manifest = rundir.read_run_manifest(run_dir) if (run_dir / rundir.RUN_MANIFEST).exists() else {}
    world = int(manifest.get("world_size") or 0)
    exit_code = manifest.get("exit_code")
    restarted = manifest.get("ended") == "restarted"
    run_id = manifest.get("run_id") if isinstance(manifest.get("run_id"), str) else None
    problems: list[str] = []
    ranks_seen = set(ev.ranks_with(run_dir, "hang.json")) | set(
        ev.ranks_with(run_dir, "progress.json")
    )
    ranks_seen |= {r for r, _ in rundir.ranks_with_files(run_dir, "rank*.collectives.jsonl")}
    ranks_seen |= set(ev.ranks_with(run_dir, "fatal.txt"))
    ranks_seen |= ev.unfinished_ranks(run_dir)
    ranks: dict[int, RankRecords] = {}
    for rank in sorted(ranks_seen):
        evidence = []
        for path in ev.evidence_paths(run_dir, rank):
            if not path.exists():
                continue
            try:
                found = ev.read_evidence(path)
            except Exception as e:
                problems.append(f"{path.name}: {e}")
                continue
            foreign = _foreign(path, found, rank, run_id)
            if foreign is not None:
                problems.append(foreign)
                continue
            evidence.append(found)
        for path in ev.unfinished_paths(run_dir, rank):
            # Written whole but never linked into place: the rank was killed in between.
            try:
                found = ev.read_evidence(path)
            except Exception:
                problems.append(f"{path.name}: evidence cut short while being written; not used")
                continue
            foreign = _foreign(path, found, rank, run_id)
            if foreign is not None:
                problems.append(foreign)
            elif not any((e.ts_ns, e.trigger) == (found.ts_ns, found.trigger) for e in evidence):
                evidence.append(found)
        progress = None
        try:
            progress = ev.read_progress(run_dir, rank)
        except Exception as e:
            problems.append(f"{ev.progress_path(run_dir, rank).name}: {e}")
        foreign = (
            _foreign(ev.progress_path(run_dir, rank), progress, rank, run_id) if progress else None
        )
        if foreign is not None:
            problems.append(foreign)
            progress = None
        try:
            rows = _log_tail(run_dir, rank)
        except Exception as e:
            rows = []
            problems.append(f"rank{rank}.collectives.jsonl: {e}")
        evidence.sort(key=lambda e: e.ts_ns)
        # A restarted attempt keeps the files of the one before: judge the newest.
        if evidence and progress is not None:
            evidence = [e for e in evidence if e.collector_start_ns >= progress.collector_start_ns]
        fatal = _read_fatal(run_dir, rank, progress, problems)
        ranks[rank] = RankRecords(rank, tuple(rows), tuple(evidence), progress, fatal)
        world = max(world, rank + 1, *(e.world_size for e in evidence))
    return HangRecords(
        world_size=world,
        ranks=ranks,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        now_ns=time.time_ns(),
        problems=tuple(problems),
        restarted=restarted,
    )


def _foreign(
    path: Path, record: ev.Evidence | ev.Progress, rank: int, run_id: str | None
) -> str | None:
    """Why a rank's hang record is another rank's or another run's, or None."""
    why = rundir.other_rank(record.rank, rank) or rundir.other_run(record.run_id, run_id)
    return f"{path.name}: {why}" if why else None


def _read_fatal(
    run_dir: Path, rank: int, progress: ev.Progress | None, problems: list[str]
) -> ev.Fatal | None:
    """The newest fatal-signal record of this attempt (an earlier attempt's is older
    than the attempt's collector start)."""
    newest: ev.Fatal | None = None
    for path in ev.fatal_paths(run_dir, rank):
        try:
            if not path.exists() or path.stat().st_size == 0:
                continue
            fatal = ev.read_fatal(path)
        except (OSError, ValueError) as e:
            problems.append(f"{path.name}: {e}")
            continue
        if fatal is None:
            continue
        if progress is not None and fatal.mtime_ns < progress.collector_start_ns:
            continue
        if newest is None or fatal.mtime_ns > newest.mtime_ns:
            newest = fatal
    return newest


# ---------------------------------------------------------------------- the verdict


def _where(frames: Iterable[ev.Frame]) -> tuple[Where, ...]:
    return tuple(Where(f.file, f.line, f.function, f.code) for f in frames)


def _own_frame(stack: tuple[Where, ...]) -> Where | None:
    """The innermost frame of the job's own code, not torch's, an installed package's or
    the standard library's (else the innermost one)."""
    for w in reversed(stack):
        if not any(part in w.file for part in _LIBRARY_PARTS) and not _STDLIB.search(w.file):
            return w
    return stack[-1] if stack else None


def _stopped(
    records: HangRecords, ranks: tuple[RankState, ...], verdicts: list[GroupVerdict]
) -> bool:
    """Every rank was signalled while it ran: none had stalled, and no collective had
    kept a rank waiting as long as the stall threshold (a rank stuck before its first
    step is never judged stalled, but its peers' wait says it hung)."""
    if not ranks or any(s.status != "signalled" or "stall" in s.triggers for s in ranks):
        return False
    thresholds = [e.threshold_s for r in records.ranks.values() for e in r.evidence]
    threshold = min(thresholds) if thresholds else 60.0
    return all((g.waited_s or 0.0) < threshold for g in verdicts)


def _signal_name(rec: RankRecords) -> str:
    """The signal a rank's evidence names ("SIGTERM"), or ""."""
    e = _first(rec.evidence, "signal")
    return e.detail if e is not None and e.detail.startswith("SIG") else ""


def _first(evidence: tuple[ev.Evidence, ...], *triggers: str) -> ev.Evidence | None:
    return next((e for e in evidence if e.trigger in triggers), None)


def _rank_state(rec: RankRecords, now_ns: int, run_over: bool) -> RankState:
    evs = rec.evidence
    crash = _first(evs, "exception")
    error = _first(evs, "collective_error")
    signalled = _first(evs, "signal")
    stalled = _first(evs, "stall")
    progress = rec.progress
    status: RankStatus
    if crash is not None or rec.fatal is not None:
        status = "crashed"
    elif signalled is not None:
        status = "signalled"
    elif error is not None:
        status = "failed"  # a collective raised (a timeout, a peer gone)
    elif stalled is not None or (progress is not None and progress.state == "stalled"):
        status = "stalled"  # (a rank killed after its stall evidence was still stuck)
    elif progress is not None and progress.state == "stopped":
        status = "stopped"
    elif progress is not None and not run_over and (now_ns - progress.ts_ns) / 1e9 < 10:
        status = "running"
    else:
        status = "silent"  # no word since its last progress record: killed, frozen, lost
    exc = crash or error
    exception = None
    stack: tuple[Where, ...] = ()
    if exc is not None and exc.exception is not None:
        message = exc.exception.message.splitlines()[0] if exc.exception.message else ""
        # gloo and c10d prefix their messages with the C++ source line: not the user's.
        message = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", message)
        exception = f"{exc.exception.type}: {message[:200]}"
    # Where the training thread stood: the first of stall / signal evidence shows a
    # live stack; an exception's own traceback is where it was raised.
    live = stalled or signalled
    if rec.fatal is not None and crash is None:
        # Killed by a fatal signal (SIGSEGV, SIGABRT, ...): faulthandler's stack.
        exception = rec.fatal.error
        stack = _where(rec.fatal.frames)
    elif crash is not None and crash.exception is not None:
        stack = _where(crash.exception.frames)
    elif live is not None:
        training = next((t for t in live.threads if t.is_training), None)
        stack = _where(training.frames) if training else ()
    elif exc is not None and exc.exception is not None:
        stack = _where(exc.exception.frames)
    first = evs[0] if evs else None
    step_state = first.step if first else (progress.step if progress else None)
    return RankState(
        rank=rec.rank,
        status=status,
        last_step=step_state.last_step if step_state else -1,
        stuck_step=step_state.current_step if step_state else None,
        triggers=tuple(e.trigger for e in evs),
        exception=exception,
        where=_own_frame(stack),
        stack=stack,
        evidence_files=len(evs),
    )


def _tables(
    records: HangRecords,
) -> tuple[
    dict[str, dict[int, dict[int, SeqEntry]]], dict[str, tuple[str, tuple[int, ...]]], set[str]
]:
    """pg -> rank -> seq -> entry, pg -> (desc, members), and the groups whose members
    are only the ranks seen in them (no process-group config named them)."""
    seqs: dict[str, dict[int, dict[int, SeqEntry]]] = {}
    descs: dict[str, str] = {}
    config: dict[str, tuple[int, ...]] = {}
    for rank, rec in records.ranks.items():
        # Later sources first, so the earliest evidence has the last word.
        sources: list[tuple[list[ev.FrEntry], bool]] = [(list(rec.collectives), False)]
        for e in reversed(rec.evidence):
            ring = list(e.ring)
            if e.trigger == "collective_error" and ring:
                # The collective that raised is retired by now: it did not complete.
                newest = max(ring, key=lambda x: x.enqueue_ns)
                ring = [x if x is not newest else _replace_completed(x, False) for x in ring]
            sources.append((ring, True))
            for g in e.process_groups:
                name = g.name or "0"  # the default group is "" in the config, "0" in entries
                if g.ranks:
                    config[name] = tuple(sorted(g.ranks))
        for entries, _ in sources:
            # Within one source, entries sharing a seq are one coalesced collective (FSDP's
            # grouped all-gathers): summed, so the last member does not stand for the whole;
            # a later source's entry of that seq replaces an earlier one's.
            local: dict[tuple[str, int], SeqEntry] = {}
            for x in entries:
                if x.p2p:
                    continue
                descs.setdefault(x.pg, x.pg_desc)
                one = SeqEntry(x.seq, x.name, x.bytes, x.enqueue_ns, x.completed)
                had = local.get((x.pg, x.seq))
                local[(x.pg, x.seq)] = one if had is None else _coalesced(had, one)
            for (pg, seq), one in local.items():
                seqs.setdefault(pg, {}).setdefault(rank, {})[seq] = one
    groups: dict[str, tuple[str, tuple[int, ...]]] = {}
    inferred: set[str] = set()
    for pg, by_rank in seqs.items():
        members = config.get(pg) or tuple(sorted(by_rank))
        if pg == "0" and not config.get(pg):
            members = tuple(range(records.world_size)) or members
        elif not config.get(pg):
            inferred.add(pg)
        groups[pg] = (descs.get(pg, ""), members)
    return seqs, groups, inferred


def _coalesced(a: SeqEntry, b: SeqEntry) -> SeqEntry:
    """Two members of one coalesced collective as one: bytes summed, the ops named once
    each, issued at the first, completed when both did."""
    ops = sorted(set(a.op.split("+")) | set(b.op.split("+")))
    return SeqEntry(
        a.seq, "+".join(ops), a.bytes + b.bytes, min(a.enqueue_ns, b.enqueue_ns),
        a.completed and b.completed,
    )  # fmt: skip


def _replace_completed(x: ev.FrEntry, completed: bool) -> ev.FrEntry:
    import msgspec

    return msgspec.structs.replace(x, completed=completed)


_FATAL = "Fatal Python error"
_NO_WORD = "SIGKILL, the OOM killer or a lost host"


def _step_known(s: RankState) -> bool:
    """Its step state is from its last word: not a progress record from seconds before
    it died (a silent rank, one a fatal signal ended with no evidence written)."""
    return s.status != "silent" and not (s.status == "crashed" and s.evidence_files == 0)


def _status(states: dict[int, RankState], rank: int) -> RankStatus | None:
    s = states.get(rank)
    return s.status if s is not None else None


def _waiting_in(seqs: dict[str, dict[int, dict[int, SeqEntry]]]) -> dict[int, tuple[str, int]]:
    """rank -> (pg, seq) of a collective it entered and never left (its newest such)."""
    out: dict[int, tuple[str, int, int]] = {}
    for pg, by_rank in seqs.items():
        for rank, table in by_rank.items():
            for s, x in table.items():
                if not x.completed and (rank not in out or x.enqueue_ns > out[rank][2]):
                    out[rank] = (pg, s, x.enqueue_ns)
    return {r: (pg, s) for r, (pg, s, _) in out.items()}


def _group_verdicts(
    records: HangRecords,
    seqs: dict[str, dict[int, dict[int, SeqEntry]]],
    groups: dict[str, tuple[str, tuple[int, ...]]],
    states: dict[int, RankState],
    inferred: set[str],
) -> list[GroupVerdict]:
    waiting_in = _waiting_in(seqs)
    # Ranks that died without a record of their own: a member of any group, for all
    # we know (gloo's flight recorder does not always say who a subgroup holds).
    unseen = {r for r, st in states.items() if st.status in ("crashed", "silent")}
    out = []
    for pg, by_rank in seqs.items():
        desc, members = groups[pg]
        all_seqs = sorted({s for t in by_rank.values() for s in t})
        done = {s for t in by_rank.values() for s, x in t.items() if x.completed}
        # Desync: different op or size at one seq (the first one only; later ones follow).
        for s in all_seqs:
            kinds: dict[tuple[str, int], list[int]] = {}
            for rank, t in by_rank.items():
                if s in t:
                    kinds.setdefault((t[s].op, t[s].bytes), []).append(rank)
            if len(kinds) > 1:
                # The side that does what this group usually does (most ranks, then the
                # op and size seen most in the group) is the expected one.
                usual: dict[tuple[str, int], int] = {}
                for t in by_rank.values():
                    for x in t.values():
                        usual[(x.op, x.bytes)] = usual.get((x.op, x.bytes), 0) + 1
                sides = tuple(
                    sorted(((op, b, tuple(sorted(r))) for (op, b), r in kinds.items()),
                           key=lambda side: (len(side[2]), usual.get(side[:2], 0), side[2]))
                )  # fmt: skip
                entered = [t[s] for t in by_rank.values() if s in t]
                out.append(
                    GroupVerdict(
                        "desync", pg, desc, members, s, sides[-1][0], sides[-1][1],
                        ranks=sides[0][2], waiting=(), sides=sides,
                        entered_ns=min(x.enqueue_ns for x in entered),
                    )
                )  # fmt: skip
                break
        else:
            pending = [s for s in all_seqs if s not in done]
            if not pending:
                continue
            s = pending[0]
            issuers = {r: t[s] for r, t in by_rank.items() if s in t}
            missing = tuple(r for r in members if r not in issuers)
            waiting = tuple(sorted(r for r, x in issuers.items() if not x.completed))
            first = min(issuers.values(), key=lambda x: x.enqueue_ns)
            waited = _waited_s(records, waiting, first.enqueue_ns)
            cut_short: tuple[int, ...] = ()
            if missing:
                dead = tuple(r for r in missing if _status(states, r) in ("crashed", "silent"))
                # A peer the launcher stopped on its way there, or whose own collective
                # failed when the dead rank's connections closed (it never stalled), is
                # collateral of the rank that died: the dead rank is the cause.
                collateral = tuple(
                    r
                    for r in missing
                    if r not in dead
                    and _status(states, r) in ("signalled", "failed")
                    and "stall" not in states[r].triggers
                )
                kind: Kind = "missing_rank"
                if dead and len(dead) + len(collateral) == len(missing):
                    kind, missing, cut_short = "crashed", dead, collateral
                elsewhere = tuple(
                    (r, *waiting_in[r])
                    for r in missing
                    if r in waiting_in and waiting_in[r][0] != pg
                )
            else:
                if pg in inferred and unseen - set(members):
                    # "Every member entered" rests on who the group holds: a dead rank
                    # seen nowhere may be the member that never came. Said by the rank's
                    # own verdict, not claimed here.
                    continue
                kind, elsewhere = "all_entered_none_completed", ()
            out.append(
                GroupVerdict(
                    kind, pg, desc, members, s, first.op, first.bytes,
                    ranks=missing, waiting=waiting, entered_ns=first.enqueue_ns,
                    waited_s=waited, blocked_elsewhere=elsewhere, cut_short=cut_short,
                )
            )  # fmt: skip

    # The cause first: a group whose missing ranks wait nowhere else; then by time.
    def order(g: GroupVerdict) -> tuple[int, int, int]:
        rank_kind = {"desync": 0, "crashed": 1, "missing_rank": 1}.get(g.kind, 2)
        return (len(g.blocked_elsewhere), rank_kind, g.entered_ns or 0)

    return sorted(out, key=order)


def _waited_s(records: HangRecords, waiting: tuple[int, ...], entered_ns: int) -> float | None:
    ends = []
    for r in waiting:
        rec = records.ranks.get(r)
        if rec is None:
            continue
        times = [e.ts_ns for e in rec.evidence if e.trigger != "stall"]
        if not times and rec.progress is not None:
            times = [rec.progress.ts_ns]
        if times:
            ends.append(min(times))
    return round(max(ends) / 1e9 - entered_ns / 1e9, 1) if ends else None


def _late_arrivals(
    records: HangRecords, seqs: dict[str, dict[int, dict[int, SeqEntry]]],
    groups: dict[str, tuple[str, tuple[int, ...]]],
) -> list[GroupVerdict]:  # fmt: skip
    """Collectives a rank stalled in that completed after all: who came last, how late."""
    seen = set()
    out = []
    for rec in records.ranks.values():
        for e in rec.evidence:
            if e.trigger != "stall":
                continue
            for x in e.ring:
                if x.completed or x.p2p or (x.pg, x.seq) in seen:
                    continue
                seen.add((x.pg, x.seq))
                arrivals = {
                    r: t[x.seq].enqueue_ns for r, t in seqs.get(x.pg, {}).items() if x.seq in t
                }
                if len(arrivals) < 2:
                    continue
                last = max(arrivals, key=lambda r: arrivals[r])
                late_s = (arrivals[last] - min(arrivals.values())) / 1e9
                desc, members = groups.get(x.pg, ("", tuple(sorted(arrivals))))
                out.append(
                    GroupVerdict(
                        "late_arrival", x.pg, desc, members, x.seq, x.name, x.bytes,
                        ranks=(last,), waiting=tuple(sorted(r for r in arrivals if r != last)),
                        entered_ns=min(arrivals.values()), late_s=round(late_s, 1),
                    )
                )  # fmt: skip
    return sorted(out, key=lambda g: -(g.late_s or 0))


@dataclass(frozen=True)
class P2PWait:
    """A rank blocked in a send or receive (its hang evidence's ``p2p``)."""

    rank: int
    op: str  # "send" or "recv"
    peer: int
    waited_s: float | None  # from the start of its wait to the evidence (or the timeout)
    failed: bool  # its wait raised (a timeout, the peer gone)


def _p2p_waits(records: HangRecords) -> dict[int, P2PWait]:
    """Per rank, the send or receive it was blocked in, from its first evidence that
    holds one: one whose wait was under way, else one whose wait raised."""
    out: dict[int, P2PWait] = {}
    for r, rec in sorted(records.ranks.items()):
        for e in rec.evidence:
            live, failed = ev.p2p_waits(e.p2p, "in_flight"), ev.p2p_waits(e.p2p, "failed")
            if not live and not failed:
                continue
            x = min(live, key=lambda y: y.enqueue_ns) if live else failed[-1]
            assert x.peer is not None and x.wait_start_ns is not None
            end = x.end_ns if x.end_ns is not None else e.ts_ns
            out[r] = P2PWait(
                r, x.name, x.peer, round(max(0, end - x.wait_start_ns) / 1e9, 1), not live
            )
            break
    return out


def _p2p_verdict(
    records: HangRecords, states: dict[int, RankState], ranks: tuple[RankState, ...]
) -> HangVerdict | None:
    """A pipeline that stopped: ranks blocked in sends and receives (gloo's, from their
    evidence), each waiting for a peer. Following who waits for whom ends at the rank
    they all wait for, blocked in none itself (``p2p_stuck``: stuck in its own code,
    crashed, or gone), or goes round a cycle (``p2p_deadlock``: e.g. two ranks that
    both send first). None when no rank's evidence shows such a wait."""
    waits = _p2p_waits(records)
    if not waits:
        return None
    roots: dict[int, list[int]] = {}  # the rank waited for -> the ranks whose chain ends there
    cycle: list[int] = []
    for r in waits:
        seen, at = [r], waits[r].peer
        while at in waits and at not in seen:
            seen.append(at)
            at = waits[at].peer
        if at in waits:  # back on the chain: a cycle
            cycle = cycle or seen[seen.index(at) :]
            continue
        roots.setdefault(at, []).append(r)
    if roots:
        root = max(roots, key=lambda k: (len(roots[k]), -k))
        chain = sorted(roots[root], key=lambda q: (waits[q].peer != root, q))
        s = states.get(root)
        how = "stopped making progress"
        if s is not None and s.exception and s.exception.startswith(_FATAL):
            how = f"died of a fatal signal ({s.exception})"
        elif s is not None and s.exception:
            how = f"raised {s.exception}"
        elif s is not None and s.status == "silent":
            how = f"died without a word ({_NO_WORD})"
        elif s is None:
            how = "left no record (it never started, or its files are gone)"
        elif s.status == "running":
            how = "kept running (not stalled by its own clock)"
        where = f" in {s.where}" if s is not None and s.where is not None else ""
        step = f" at step {s.stuck_step}" if s is not None and _step_known(s) else ""
        head = (
            f"Rank {root} {how}{where}{step}, and sent or received nothing more:"
            f" {_p2p_waiters(chain, waits)}"
        )
        return HangVerdict(
            "p2p_stuck", root, head, (), ranks, (), records.exit_code,
            step=s.stuck_step if s is not None and _step_known(s) else None,
            problems=records.problems,
        )  # fmt: skip
    pairs = "; ".join(
        f"rank {q} in {waits[q].op} {'to' if waits[q].op == 'send' else 'from'} rank"
        f" {waits[q].peer}"
        for q in cycle
    )
    head = (
        f"Deadlock in point-to-point: {_ranks(sorted(cycle))} wait for each other ({pairs}):"
        " the ranks' sends and receives are not in matching order (both send first?)"
    )
    return HangVerdict(
        "p2p_deadlock", None, head, (), ranks, (), records.exit_code, problems=records.problems
    )


def _p2p_waiters(chain: list[int], waits: dict[int, P2PWait]) -> str:
    parts = []
    for q in chain:
        w = waits[q]
        how = f" {w.waited_s:.0f} s" if w.waited_s is not None and w.waited_s >= 1 else ""
        end = " (then timed out)" if w.failed else ""
        to = "to" if w.op == "send" else "from"
        parts.append(f"rank {q} waited{how} in {w.op} {to} rank {w.peer}{end}")
    return "; ".join(parts)


def _stuck(rec: RankRecords) -> bool:
    """Stalled as far as its last word says (a live run): its progress says so, or
    its stall evidence is newer than any progress record."""
    p = rec.progress
    if p is not None and p.state == "stalled":
        return True
    stall = _first(rec.evidence, "stall")
    return stall is not None and (p is None or (p.state != "stopped" and p.ts_ns <= stall.ts_ns))


LIVE_S = 10.0  # a rank whose progress record is younger than this still runs


@dataclass(frozen=True)
class LiveRun:
    """A job still running when its records were read (``live_run``)."""

    running: tuple[int, ...]  # ranks whose progress record is under LIVE_S old
    world_size: int
    step: int  # the furthest step under way on those ranks
    read_ns: int  # when the records were read (wall clock, ns)


def live_run(records: HangRecords) -> LiveRun | None:
    """The job is still running: no exit code, not set aside by a restart, and a rank's
    progress record (written by its collector about every second) is under ``LIVE_S``
    old and says running; else None."""
    if records.exit_code is not None or records.restarted:
        return None
    fresh = {
        r: p
        for r, rec in sorted(records.ranks.items())
        if (p := rec.progress) is not None
        and p.state == "running"
        and (records.now_ns - p.ts_ns) / 1e9 < LIVE_S
    }
    if not fresh:
        return None
    step = max(p.step.current_step for p in fresh.values())
    return LiveRun(tuple(fresh), records.world_size, step, records.now_ns)


def hang_verdict(records: HangRecords) -> HangVerdict | None:
    """The verdict for a run that hung, desynced or crashed; None for a healthy one."""
    any_evidence = any(r.evidence for r in records.ranks.values())
    over = records.exit_code is not None or records.restarted
    stalled_now = not over and any(_stuck(r) for r in records.ranks.values())
    failed = records.exit_code not in (None, 0) or records.restarted
    if not (any_evidence or stalled_now or failed):
        return None
    states = {r: _rank_state(rec, records.now_ns, over) for r, rec in records.ranks.items()}
    seqs, groups, inferred = _tables(records)
    table = tuple(
        GroupState(pg, groups[pg][0], rank, max(t.values(), key=lambda x: x.seq) if t else None)
        for pg in sorted(seqs)
        for rank, t in sorted(seqs[pg].items())
    )
    ranks = tuple(states[r] for r in sorted(states))
    if not failed and not stalled_now:
        late = _late_arrivals(records, seqs, groups)
        if not late:
            return None  # a stall that cleared with no collective to blame: slow, not hung
        g = late[0]
        return HangVerdict(
            "late_arrival", g.ranks[0], headline_of(g, states), tuple(late), ranks, table,
            records.exit_code, problems=records.problems,
        )  # fmt: skip
    verdicts = _group_verdicts(records, seqs, groups, states, inferred)
    if _stopped(records, ranks, verdicts):
        # Stopped, not hung: each rank was running when the signal came (a scheduler's
        # or a user's SIGTERM, a closed terminal); a collective it was in is no fault.
        names = sorted({_signal_name(records.ranks[s.rank]) for s in ranks} - {""})
        steps = sorted({s.stuck_step for s in ranks if s.stuck_step is not None and _step_known(s)})
        where = f" in step {steps[0]}" if len(steps) == 1 else ""
        code = f", exit code {records.exit_code}" if records.exit_code is not None else ""
        head = (
            f"The job was stopped by a signal ({', '.join(names) or 'a signal'} to every"
            f" rank{code}){where}: no rank had stalled, so this is no hang"
        )
        return HangVerdict(
            "stopped", None, head, (), ranks, table, records.exit_code,
            step=steps[0] if len(steps) == 1 else None, problems=records.problems,
        )  # fmt: skip
    if not verdicts and (p2p := _p2p_verdict(records, states, ranks)) is not None:
        return p2p
    if not verdicts:
        # The rank that raised; else one that died without a word (its peers, stopped
        # by the launcher on their way to the next collective, wrote their evidence).
        crashed = [s for s in ranks if s.status == "crashed"]
        crashed = crashed or [s for s in ranks if s.status == "silent" and failed]
        culprit = crashed[0] if crashed else None
        head = (
            "This attempt ended (torchrun restarted the job) with no collective pending"
            if records.exit_code is None
            else f"The job failed (exit code {records.exit_code}) with no collective pending"
        )
        kind: Kind = "exited"
        stuck = [s.rank for s in ranks if s.status == "stalled"]
        if culprit is not None and culprit.status == "silent" and stuck:
            # The others stalled after it but were killed before their evidence said
            # where: a dead rank and a hang, the collective not on record.
            kind = "crashed"
            head = (
                f"Rank {culprit.rank} died without a word ({_NO_WORD}); {_ranks(stuck)} "
                "stalled after it, in a collective their records do not show (killed "
                "before they wrote it)"
            )
        elif culprit is not None and culprit.status == "silent":
            head += f": rank {culprit.rank} died without a word ({_NO_WORD})"
        elif culprit is not None and (culprit.exception or "").startswith(_FATAL):
            head += f": rank {culprit.rank} died of a fatal signal ({culprit.exception})"
            if culprit.where is not None:
                head += f" in {culprit.where}"
        elif culprit is not None:
            head += f": rank {culprit.rank} raised {culprit.exception}"
            if culprit.where is not None:
                head += f" in {culprit.where}"
        return HangVerdict(
            kind, culprit.rank if culprit else None, head, (), ranks, table,
            records.exit_code,
            step=culprit.stuck_step if culprit and _step_known(culprit) else None,
            problems=records.problems,
        )  # fmt: skip
    g = verdicts[0]
    rank = g.ranks[0] if g.ranks else None
    return HangVerdict(
        g.kind, rank, headline_of(g, states), tuple(verdicts), ranks, table, records.exit_code,
        step=states[rank].stuck_step
        if rank is not None and rank in states and _step_known(states[rank])
        else None,
        details=tuple(detail_of(v, states) for v in verdicts[1:]),
        problems=records.problems,
    )  # fmt: skip


# ---------------------------------------------------------------------- wording


def group_name(pg: str, desc: str) -> str:
    if pg == "0" or desc == "default_pg":
        return "the default group"
    return f"group {pg}" + (f" ({desc})" if desc and desc != "undefined" else "")


def _ranks(ranks: Iterable[int]) -> str:
    ranks = list(ranks)
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return "ranks " + ", ".join(map(str, ranks[:-1])) + f" and {ranks[-1]}"


def _size(n: int) -> str:
    if n < 0:
        return "? bytes"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def headline_of(g: GroupVerdict, states: dict[int, RankState]) -> str:
    at = f"{g.op} seq {g.seq} ({_size(g.bytes)}) on {group_name(g.pg, g.pg_desc)}"
    waited = ""
    if g.waited_s is not None:  # under a second: a peer's death ended their wait at once
        w = f"{g.waited_s:.0f} s" if g.waited_s >= 1 else f"{1000 * g.waited_s:.0f} ms"
        waited = f" and waited {w}"
    if g.kind == "desync":
        sides = "; ".join(f"{_ranks(r)}: {op} {_size(b)}" for op, b, r in g.sides)
        return f"Desync at seq {g.seq} on {group_name(g.pg, g.pg_desc)}: {sides}"
    if g.kind == "all_entered_none_completed":
        return (
            f"Every rank of {group_name(g.pg, g.pg_desc)} entered {g.op} seq {g.seq} and none "
            f"completed it{waited.replace(' and', ';')}: the transport (network, NCCL/gloo) "
            "is the suspect"
        )
    if g.kind == "late_arrival":
        return (
            f"{_ranks(g.ranks).capitalize()} arrived {g.late_s:.1f} s late at {at}: "
            f"{_ranks(g.waiting)} waited (slow, not hung)"
        )
    who = _ranks(g.ranks).capitalize()
    step = ""
    fault = states.get(g.ranks[0]) if g.ranks else None
    if fault is not None and fault.stuck_step is not None and _step_known(fault):
        step = f" at step {states[g.ranks[0]].stuck_step}"
    others = f"; {_ranks(g.waiting)} entered it{waited}" if g.waiting else ""
    if g.kind == "crashed":
        s = states.get(g.ranks[0])
        how, verb = "died", "and never issued"
        if s is not None and s.exception and s.exception.startswith(_FATAL):
            how = f"died of a fatal signal ({s.exception})"
            if s.stack and s.stack[-1].function == g.op:
                verb = "while inside"  # it had issued it: it died in the call
        elif s is not None and s.exception:
            how = f"raised {s.exception}"
        elif s is not None and s.status == "silent":
            how = f"died without a word ({_NO_WORD})"
        where = f" in {s.where}" if s is not None and s.where is not None else ""
        cut = ""
        stopped = tuple(r for r in g.cut_short if _status(states, r) == "signalled")
        lost = tuple(r for r in g.cut_short if r not in stopped)
        if stopped:
            pronoun = "it" if len(stopped) == 1 else "they"
            cut += f"; the launcher stopped {_ranks(stopped)} before {pronoun} got there"
        if lost:
            pronoun = "it" if len(lost) == 1 else "they"
            cut += f"; {_ranks(lost)} lost the connection and failed before {pronoun} got there"
        return f"{who} {how}{where}{step} {verb} {at}{others}{cut}"
    s = states.get(g.ranks[0]) if g.ranks else None
    where = f"; it is in {s.where}" if s is not None and s.where is not None else ""
    return f"{who} never issued {at}{step}{others}{where}"


def detail_of(g: GroupVerdict, states: dict[int, RankState]) -> str:
    text = headline_of(g, states)
    for rank, pg, seq in g.blocked_elsewhere:
        text += f" (rank {rank} is itself waiting in {group_name(pg, '')} seq {seq})"
    return text
