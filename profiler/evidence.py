"""Progress and hang evidence: the two record formats, how they are captured and read.

A rank writes two kinds of file into its run directory (both msgspec Structs with a
format version, decoded by the same Structs on the review side):

- ``rank{R}.progress.json`` (``Progress``, ``rankscope.progress/1``): rewritten about
  every 2 s by ``rankscope.profiler.progress``: the last step the training thread
  finished and when, the unfinished step, the stall threshold and a state
  (``running`` / ``stalled`` / ``stopped``). While stalled it also holds the last
  flight-recorder entry per process group (pg, seq, op, bytes, completed or not)
  and (``p2p``) its sends and receives not completed.
- ``rank{R}.hang.json`` (``Evidence``, ``rankscope.hang/1``), written when the rank
  stalls past its threshold, on an unhandled exception (a collective error or
  timeout included) and on SIGTERM/SIGINT: the whole flight-recorder ring read at
  that moment (in-flight entries too), the process groups and their ranks, the
  Python stacks of every thread (``is_training``: the thread that marks steps), the
  step state and (``p2p``) the sends and receives not completed on gloo, which its
  ring does not hold (``rankscope.profiler.p2p``). Never overwritten: later files of
  the same rank (another trigger, a restarted attempt) are ``rank{R}.{n}.hang.json``,
  n = 2..MAX_FILES.

Bounds: a ring has at most ``TORCH_FR_BUFFER_SIZE`` entries (250-300 bytes each
as written: 2000 entries ~ 0.6 MB); at most MAX_THREADS threads of at most
MAX_FRAMES frames, source lines cut to 200 characters; an exception message to
2,000 characters. One file stays under 1.2 MB (1.15 MB measured for 2000
entries and 32 threads of 48 frames; a few KB to tens of KB in practice), and a
rank writes at most MAX_FILES of them per run directory (typically two: the stall,
then the error or signal that ends it).

- ``rank{R}.fatal.txt`` (``rank{R}.{n}.fatal.txt`` for a restarted attempt): where
  the job had not enabled ``faulthandler`` itself, the rank's collector enables it
  into this file, so a rank killed by SIGSEGV, SIGABRT (gloo aborts a rank on a
  message of the wrong size; a C++ ``std::terminate``), SIGBUS, SIGFPE or SIGILL
  leaves its Python stacks (faulthandler's own text: at most 100 threads of 100
  frames, tens of KB). Empty while the rank runs; removed when the collector stops
  with it still empty. ``read_fatal`` parses the error and the current thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Literal

import msgspec

from rankscope.profiler.readers import other_rank

PROGRESS_SCHEMA = "rankscope.progress/1"
EVIDENCE_SCHEMA = "rankscope.hang/1"
MAX_FILES = 8
MAX_THREADS = 32
MAX_FRAMES = 48
MAX_TEXT = 2000

State = Literal["running", "stalled", "stopped"]
Trigger = Literal["stall", "exception", "collective_error", "signal"]


class FrEntry(msgspec.Struct, frozen=True):
    """One flight-recorder entry; ``completed``: the collective finished on this rank."""

    record_id: int
    pg: str
    pg_desc: str
    seq: int
    name: str
    p2p: bool
    bytes: int
    enqueue_ns: int
    completed: bool
    state: str = ""
    start_ns: int | None = None
    end_ns: int | None = None
    timeout_ms: int | None = None


class P2PEntry(msgspec.Struct, frozen=True):
    """A send or receive of the rank's not completed when the evidence was taken
    (``rankscope.profiler.p2p``: gloo's, which its flight recorder does not log).

    ``state``: "in_flight" (``wait_start_ns``: since when the rank waits for it; None:
    not waited for yet) or "failed" (its wait raised at ``end_ns``: a timeout, a peer
    gone). ``peer``: the other rank (global; None: a receive from any source)."""

    pg: str
    pg_desc: str
    name: str
    peer: int | None
    bytes: int
    enqueue_ns: int
    state: str
    wait_start_ns: int | None = None
    end_ns: int | None = None


def p2p_waits(entries: list[P2PEntry], state: str) -> list[P2PEntry]:
    """The sends and receives of ``state`` ("in_flight" or "failed") the rank was
    waiting for, with a known peer: whom it waited for (the hang verdict, the status)."""
    known = [x for x in entries if x.peer is not None and x.wait_start_ns is not None]
    return [x for x in known if x.state == state]


class ProcessGroupInfo(msgspec.Struct, frozen=True):
    name: str
    desc: str
    ranks: list[int]


class Frame(msgspec.Struct, frozen=True):
    file: str
    line: int
    function: str
    code: str = ""


class ThreadStack(msgspec.Struct, frozen=True):
    thread_id: int
    name: str
    is_training: bool
    frames: list[Frame]  # outermost first, like a traceback


class StepState(msgspec.Struct, frozen=True):
    """The training thread's steps: the last finished one and the one under way.

    ``last_step`` is -1 before any step finished; ``current_start_ns`` is None
    before step 0 began (steps from the optimizer: before its first step).
    """

    last_step: int = -1
    last_start_ns: int | None = None
    last_end_ns: int | None = None
    current_step: int = 0
    current_start_ns: int | None = None
    median_step_s: float | None = None


class ExceptionInfo(msgspec.Struct, frozen=True):
    type: str
    message: str
    frames: list[Frame]


class Progress(msgspec.Struct, frozen=True):
    schema: str
    rank: int
    world_size: int
    pid: int
    host: str
    attempt: int
    collector_start_ns: int
    ts_ns: int
    state: State
    threshold_s: float
    step: StepState
    stalled_since_ns: int | None = None
    last_collectives: list[FrEntry] = []  # per process group, filled while stalled
    run_id: str | None = None  # the run's id (the report leaves another run's file out)
    # sends and receives not completed (gloo's, the collector's own), filled while stalled
    p2p: list[P2PEntry] = msgspec.field(default_factory=list)


class Evidence(msgspec.Struct, frozen=True):
    schema: str
    rank: int
    world_size: int
    pid: int
    host: str
    attempt: int
    collector_start_ns: int
    ts_ns: int
    trigger: Trigger
    detail: str
    threshold_s: float
    step: StepState
    ring: list[FrEntry]
    process_groups: list[ProcessGroupInfo]
    threads: list[ThreadStack]
    exception: ExceptionInfo | None = None
    ring_source: str = ""  # "fr" (gloo/CPU ring), "nccl", "" (no ring)
    run_id: str | None = None  # the run's id (the report leaves another run's file out)
    # sends and receives not completed (gloo's, timed by the collector; [] otherwise)
    p2p: list[P2PEntry] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------- paths


def progress_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank{rank}.progress.json"


def evidence_paths(run_dir: Path, rank: int) -> list[Path]:
    """Every name rank ``rank``'s evidence may have, in the order they are taken."""
    run_dir = Path(run_dir)
    first = run_dir / f"rank{rank}.hang.json"
    return [first] + [run_dir / f"rank{rank}.{n}.hang.json" for n in range(2, MAX_FILES + 1)]


def unfinished_paths(run_dir: Path, rank: int) -> list[Path]:
    """Rank ``rank``'s evidence written but never linked into place (``write_evidence``'s
    temporary files: the rank was killed in between), oldest name first."""
    with contextlib.suppress(OSError):
        return sorted(Path(run_dir).glob(f".rank{rank}.hang.*.tmp"))
    return []


def unfinished_ranks(run_dir: Path) -> set[int]:
    """The ranks with evidence never linked into place (``unfinished_paths``)."""
    with contextlib.suppress(OSError):
        return {
            int(m.group(1))
            for p in Path(run_dir).glob(".rank*.hang.*.tmp")
            if (m := re.match(r"^\.rank(\d+)\.hang\.", p.name))
        }
    return set()


# ---------------------------------------------------------------------- capture


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def frames_of(frame: Any) -> list[Frame]:
    """A frame's stack, outermost first, at most MAX_FRAMES (the innermost kept)."""
    summary = traceback.extract_stack(frame, limit=MAX_FRAMES)
    return [Frame(s.filename, s.lineno or 0, s.name, _cut(s.line or "")) for s in summary]


_HERE = os.path.dirname(os.path.abspath(__file__))


def thread_stacks(training_thread_id: int | None) -> list[ThreadStack]:
    """Every thread's stack; the frames rankscope adds (a signal handler, the
    excepthook, this function) are cut from the inner end: they are not the job's."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for tid, frame in list(sys._current_frames().items())[:MAX_THREADS]:
        frames = frames_of(frame)
        while frames and os.path.dirname(os.path.abspath(frames[-1].file)) == _HERE:
            frames.pop()
        out.append(ThreadStack(tid, names.get(tid, "?"), tid == training_thread_id, frames))
    out.sort(key=lambda t: not t.is_training)
    return out


def exception_info(exc: BaseException) -> ExceptionInfo:
    tb = traceback.extract_tb(exc.__traceback__, limit=-MAX_FRAMES)
    frames = [Frame(s.filename, s.lineno or 0, s.name, _cut(s.line or "")) for s in tb]
    return ExceptionInfo(type(exc).__name__, _cut(str(exc), MAX_TEXT), frames)


def _ns(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def fr_entry(e: dict[str, Any]) -> FrEntry | None:
    from rankscope.profiler.collectives import canonical_name, entry_bytes, finished

    pg = e.get("process_group")
    name = e.get("profiling_name")
    created = _ns(e.get("time_created_ns"))
    p2p = bool(e.get("is_p2p", False))
    seq = e.get("p2p_seq_id" if p2p else "collective_seq_id")
    rid = e.get("record_id")
    if not isinstance(name, str) or created is None or type(seq) is not int or type(rid) is not int:
        return None
    pg_name = str(pg[0]) if isinstance(pg, list | tuple) and pg else ""
    pg_desc = str(pg[1]) if isinstance(pg, list | tuple) and len(pg) > 1 else ""
    timeout = e.get("timeout_ms")
    return FrEntry(
        record_id=rid,
        pg=pg_name,
        pg_desc=pg_desc,
        seq=seq,
        name=canonical_name(name),
        p2p=p2p,
        bytes=entry_bytes(e.get("input_sizes"), e.get("input_dtypes")),
        enqueue_ns=created,
        completed=finished(e),
        state=str(e.get("state", "")),
        start_ns=_ns(e.get("time_discovered_started_ns")),
        end_ns=_ns(e.get("time_discovered_completed_ns")),
        timeout_ms=timeout if type(timeout) is int else None,
    )


def _pg_ranks(text: Any) -> list[int]:
    if isinstance(text, list):
        return [int(r) for r in text if type(r) is int]
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return [int(x) for x in text.strip("[] ").split(",") if x.strip()]
    return []


def read_ring(torch: Any) -> tuple[str, list[FrEntry], list[ProcessGroupInfo]]:
    """The flight recorder's ring now: (source, entries oldest first, process groups).

    NCCL's ring first where the build has one (it carries GPU start/end times),
    else the generic one that gloo writes; ("", [], []) where neither exists.
    """
    from rankscope.profiler.collectives import find_dumps

    c10d = getattr(getattr(torch, "_C", None), "_distributed_c10d", None)
    # The same readers as the collective log: each ring called with the arguments
    # its signature names, pickle first, then JSON (``collectives.find_dumps``).
    for source, dump in find_dumps(c10d) if c10d is not None else []:
        try:
            data = dump()
        except Exception:
            continue  # this ring failed; the other may still answer
        if not isinstance(data, dict):
            continue
        raw = data.get("entries") or []
        if source == "nccl" and not raw:
            continue  # a CUDA build running gloo: its entries are in the generic ring
        entries = [x for x in (fr_entry(e) for e in raw if isinstance(e, dict)) if x is not None]
        entries.sort(key=lambda x: x.record_id)
        groups = []
        config = data.get("pg_config") or {}
        if isinstance(config, dict):
            for key, pg in config.items():
                if isinstance(pg, dict):
                    name = str(pg.get("name", key))
                    groups.append(
                        ProcessGroupInfo(name, str(pg.get("desc", "")), _pg_ranks(pg.get("ranks")))
                    )
        return source, entries, groups
    return "", [], []


def last_per_group(entries: list[FrEntry]) -> list[FrEntry]:
    """The newest collective (not point-to-point) entry of each process group."""
    last: dict[str, FrEntry] = {}
    for e in entries:
        if not e.p2p:
            last[e.pg] = e
    return sorted(last.values(), key=lambda e: e.enqueue_ns)


# ---------------------------------------------------------------------- write and read

_encoder = msgspec.json.Encoder()


def write_progress(path: Path, progress: Progress) -> None:
    """Replace ``path`` atomically (readers never see half a file); no fsync."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(_encoder.encode(progress))
    os.replace(tmp, path)


def write_evidence(run_dir: Path, rank: int, evidence: Evidence) -> Path | None:
    """Write under the first free evidence name (never replacing one); None when all
    MAX_FILES are taken. Linked into place whole, so a reader never sees half.

    No fsync: evidence is written as a job fails, and the launcher kills the other
    ranks moments later; a rank killed in an fsync left its evidence in the temporary
    file, never linked (seen in CI: ranks 0 and 2's, so the SIGKILLed rank 1 was not the
    odd one out). A killed process loses nothing the kernel holds; a lost host does,
    and then its rank is named from the others. ``unfinished_paths`` lets readers use a
    temporary file that is whole.
    """
    data = _encoder.encode(evidence)
    run_dir = Path(run_dir)
    tmp = run_dir / f".rank{rank}.hang.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        for path in evidence_paths(run_dir, rank):
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            os.chmod(path, 0o644)
            return path
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_progress(run_dir: Path, rank: int) -> Progress | None:
    """Rank ``rank``'s progress record; None when absent; ``msgspec.ValidationError``
    or ``msgspec.DecodeError`` when it is not a valid one, or another rank's."""
    path = progress_path(run_dir, rank)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    record = msgspec.json.decode(data, type=Progress)
    why = other_rank(record.rank, rank)
    if why is not None:  # a copy of another rank's: never read as this rank's state
        raise msgspec.ValidationError(why)
    return record


def read_evidence(path: Path) -> Evidence:
    return msgspec.json.decode(Path(path).read_bytes(), type=Evidence)


def fatal_paths(run_dir: Path, rank: int) -> list[Path]:
    """Every name rank ``rank``'s fatal-signal file may have, in the order they are taken."""
    run_dir = Path(run_dir)
    first = run_dir / f"rank{rank}.fatal.txt"
    return [first] + [run_dir / f"rank{rank}.{n}.fatal.txt" for n in range(2, MAX_FILES + 1)]


def open_fatal(run_dir: Path, rank: int) -> tuple[Path, Any] | None:
    """The first free fatal-signal file, created and open for faulthandler; None when
    all MAX_FILES names are taken (never an earlier attempt's file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for path in fatal_paths(run_dir, rank):
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, "w", encoding="utf-8")
    return None


class Fatal(msgspec.Struct, frozen=True):
    """What faulthandler wrote when a fatal signal ended the rank."""

    error: str  # "Fatal Python error: Segmentation fault"
    frames: list[Frame]  # the thread that took the signal, outermost first
    mtime_ns: int = 0


_FATAL_READ = 256 * 1024
_FRAME_LINE = re.compile(r'^\s+File "(.*)", line (\d+) in (.+?)\s*$')


def read_fatal(path: Path) -> Fatal | None:
    """The fatal error in ``path`` (its first 256 KB); None when it holds none."""
    with open(path, "rb") as f:
        text = f.read(_FATAL_READ).decode("utf-8", "replace")
    error = next((ln.strip() for ln in text.splitlines() if ln.startswith("Fatal Python")), "")
    if not error:
        return None
    # "Current thread 0x... (most recent call first):" then its frames, innermost first.
    # Without one (the signal hit a thread Python does not run: gloo's abort on a
    # transport thread, a segfault in a C++ worker) the main thread, where the training
    # loop runs: the thread whose outermost frame is a module's code, not threading's
    # bootstrap (faulthandler names no thread); else the last listed (the oldest).
    threads = [
        (b.lstrip().startswith("Current thread"), _frames(b))
        for b in re.split(r"\n\s*\n", text)
        if b.lstrip().startswith(("Current thread", "Thread "))
    ]
    current = next((frames for is_current, frames in threads if is_current), None)
    if current is None:
        mains = [f for _, f in threads if f and f[0].function == "<module>"]
        current = mains[0] if mains else (threads[-1][1] if threads else [])
    return Fatal(error[:MAX_TEXT], current[-MAX_FRAMES:], os.stat(path).st_mtime_ns)


def _frames(block: str) -> list[Frame]:
    """A faulthandler thread block's frames, outermost first."""
    frames = []
    for line in block.splitlines():
        m = _FRAME_LINE.match(line)
        if m:
            frames.append(Frame(m.group(1), int(m.group(2)), m.group(3)))
    frames.reverse()
    return frames


def ranks_with(run_dir: Path, suffix: str) -> list[int]:
    """Ranks that have a ``rank{R}...{suffix}`` file in ``run_dir``."""
    pattern = re.compile(r"^rank(\d+)\.(?:\d+\.)?" + re.escape(suffix) + "$")
    out = set()
    with contextlib.suppress(OSError):
        for p in Path(run_dir).iterdir():
            m = pattern.match(p.name)
            if m:
                out.add(int(m.group(1)))
    return sorted(out)
