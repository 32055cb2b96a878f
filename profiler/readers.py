"""Readers of a run directory's files: each record decoded (= validated) by its Struct.

Every reader opens files through ``rankscope.profiler.safeio`` (regular files
only, never blocking, bounded reads) and decodes each record with the Struct of
``rankscope.profiler.records``. A record that fails is skipped, never raised:
readers taking ``bad`` append one line per skipped record or file there
(``"rank0.steps.jsonl line 3: start_ns is not an int64 of nanoseconds"``), for
the caller's skipped-record warning. Readers return plain dicts (the record's
fields as written, defaults left out), so callers index them as before.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import msgspec
from msgspec import Struct

from rankscope.profiler import records, safeio
from rankscope.profiler.layout import (
    ACK_SCHEMA,
    HEARTBEAT_SCHEMA,
    INT64_MAX,
    MAX_WORLD_SIZE,
    REQUEST_SCHEMA,
    RUN_MANIFEST,
    collectives_path,
    control_dir,
    control_dir_problem,
    rank_from_filename,
    request_path,
    steps_path,
    telemetry_path,
)
from rankscope.profiler.records import BadRecord

T = TypeVar("T", bound=Struct)
Problems = list[str] | None


def valid_rank(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value < MAX_WORLD_SIZE


def valid_world_size(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 < value <= MAX_WORLD_SIZE


def valid_ns(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= INT64_MAX


def read_json(path: Path, *, nofollow: bool = False, dir_fd: int | None = None) -> Any:
    """A small JSON file's value: regular files only (``safeio``), at most MAX_JSON_BYTES.

    Raises ``OSError`` (including ``safeio.UnsafeFile``) or ``ValueError`` (bad JSON,
    bad UTF-8, nesting too deep), nothing else. NaN in older files reads as None.
    """
    data = safeio.read_bytes(path, safeio.MAX_JSON_BYTES, nofollow=nofollow, dir_fd=dir_fd)
    try:
        return records.parse(data)
    except BadRecord:
        raise ValueError(f"{path}: not valid JSON") from None


def iter_lines(path: Path, bad: Problems = None) -> Iterator[tuple[int, bytes]]:
    """(line number, stripped bytes) of each non-empty line; nothing for an unreadable file.

    With ``bad``, a file that exists but cannot be read (a FIFO, a directory, no
    permission) is named there with the reason; a missing file is not a problem here.
    """
    try:
        for number, raw in enumerate(safeio.read_lines(path, mark_long=True), 1):
            if raw is safeio.LONG_LINE and bad is not None:
                bad.append(
                    f"{Path(path).name} line {number}: longer than"
                    f" {safeio.MAX_LINE_BYTES} bytes; skipped"
                )
            if raw is safeio.CUT_SHORT:
                if bad is not None:
                    bad.append(
                        f"{Path(path).name}: longer than RANKSCOPE_MAX_JSONL_BYTES"
                        f" ({safeio.max_jsonl_bytes()} bytes); only the records before"
                        " that were read"
                    )
                return
            raw = raw.strip()
            if raw:
                yield number, raw
    except FileNotFoundError:
        return
    except OSError as e:
        if bad is not None:
            bad.append(f"{Path(path).name}: {_reason(e)}")
        return


_NAMED_RANK = re.compile(r"rank(\d{1,9})\.")


def named_rank(path: Path) -> int | None:
    """The rank a run file's name gives (``rank{R}.…``), or None."""
    m = _NAMED_RANK.match(Path(path).name)
    return int(m.group(1)) if m else None


def other_rank(said: Any, named: int | None) -> str | None:
    """Why a file that says it is rank ``said`` is not rank ``named`` (its name's), or
    None: it is, or either is unknown. The one wording of every such check."""
    if named is None or not valid_rank(said) or said == named:
        return None
    return f"written by rank {said}, not rank {named} (its name); not used"


def other_run(theirs: Any, ours: Any) -> str | None:
    """Why a file whose run id is ``theirs`` is not of the run whose id (``run.json``'s)
    is ``ours``, or None: it is, or either is unknown (a run recorded before run ids)."""
    if not isinstance(ours, str) or theirs is None or theirs == ours:
        return None
    return (
        f"written by another run (run_id {str(theirs)[:40]}, this run's is {ours[:40]}); not used"
    )


def rank_problem(said: Any, path: Path) -> str | None:
    """Why a file that says it is rank ``said`` is not the rank its name gives, or None
    (a file whose name or content gives no rank is not checked)."""
    why = other_rank(said, named_rank(path))
    return f"{Path(path).name}: {why}" if why else None


def header_problem(obj: dict[str, Any], path: Path, run_id: str | None) -> str | None:
    """Why a file's header line shows it belongs to another run or rank, or None.

    ``run_id`` is the run's own (``run.json``); a file or run without one is not checked,
    nor a header without a rank.
    """
    why = other_run(obj.get("run_id"), run_id)
    return f"{Path(path).name}: {why}" if why else rank_problem(obj.get("rank"), path)


def iter_jsonl(
    path: Path, bad: Problems = None, run_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line; a torn, non-UTF-8 or non-JSON line is skipped.

    A header line of another run (``header_problem``) ends the file, named in ``bad``.
    """
    for _, raw in iter_lines(path, bad):
        try:
            obj = records.parse(raw)
        except BadRecord:
            continue
        if isinstance(obj, dict):
            if "schema" in obj:
                problem = header_problem(obj, path, run_id)
                if problem is not None:
                    if bad is not None:
                        bad.append(problem)
                    return
            yield obj


def iter_records(
    path: Path,
    cls: type[T],
    *,
    optional: tuple[str, ...] = (),
    bad: Problems = None,
    run_id: str | None = None,
) -> Iterator[T]:
    """Each line of a JSONL file decoded as ``cls``; header lines (``schema``) skipped.

    A line that fails is skipped, with its line number and reason added to ``bad``;
    so is a file that cannot be read, and a file whose header names another run
    than ``run_id`` (nothing of it is used).
    """
    fast = msgspec.json.Decoder(cls)
    dropped: dict[str, list[int]] = {}  # an optional field's bad value: the lines it was in
    for number, raw in iter_lines(path, bad):
        try:
            # One pass for a good line; the slow path explains (or repairs) a bad one.
            # Decoding to str first: msgspec skips unknown fields unchecked, and a
            # line that is not UTF-8 is not a record, wherever the bad bytes are.
            record: T | None = fast.decode(raw.decode("utf-8"))
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            record = None
        if record is not None:
            yield record
            continue
        try:
            obj = records.parse(raw)
            if isinstance(obj, dict) and "schema" in obj:
                problem = header_problem(obj, path, run_id)
                if problem is None:
                    continue  # the header line
                if bad is not None:
                    bad.append(problem)
                return
            left: list[BadRecord] = []
            yield records.convert(obj, cls, optional=optional, dropped=left)
            for e in left:
                dropped.setdefault(e.reason, []).append(number)
        except BadRecord as e:
            if bad is not None:
                bad.append(f"{Path(path).name} line {number}: {e.reason}")
    if bad is not None:
        for reason, lines in dropped.items():
            more = f" (and {len(lines) - 1} more line(s))" if len(lines) > 1 else ""
            bad.append(f"{Path(path).name} line {lines[0]}{more}: {reason}; left out of the record")


def read_whole(path: Path, cls: type[T], run_id: str | None = None) -> list[T] | None:
    """Every record of a JSONL file decoded in one call, or None: then ``iter_records``
    reads it line by line (and names what it skips).

    The fast path for a file with nothing to skip: one read, one UTF-8 check and one
    ``decode_lines`` for the whole file (a 1,000-step log: ~10x fewer Python calls
    than a decode per line). A leading header line (``schema``) of this run is
    left out; anything else (a file that cannot be read or is over the size
    bound, a line over ``MAX_LINE_BYTES``, a bad or foreign record, a header
    further down, a partly written last line) gives None, and the careful path
    gives exactly what it always did.
    """
    try:
        data = safeio.read_bytes(path, safeio.max_jsonl_bytes())
    except (OSError, safeio.UnsafeFile):
        return None
    if len(data) > safeio.MAX_LINE_BYTES and any(
        len(line) > safeio.MAX_LINE_BYTES for line in data.split(b"\n")
    ):
        return None
    body = data.lstrip()
    if body.startswith(b'{"schema"'):
        first, _, body = body.partition(b"\n")
        try:
            header = records.parse(first)
        except BadRecord:
            return None
        if not isinstance(header, dict) or header_problem(header, path, run_id) is not None:
            return None
    try:
        return _decoder(cls).decode_lines(body.decode("utf-8"))
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, ValueError):
        return None


@functools.cache
def _decoder(cls: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(cls)


def read_steps(
    run_dir: Path, rank: int, bad: Problems = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    """The step timer's records for a rank (``records.StepRecord`` as dicts):
    ``read_step_records``'s, the same rules."""
    return [records.as_dict(r) for r in read_step_records(run_dir, rank, bad, run_id)]


def read_step_records(
    run_dir: Path, rank: int, bad: Problems = None, run_id: str | None = None
) -> list[records.StepRecord]:
    """The step timer's records for a rank.

    Records whose step is not in 0..MAX_STEP, whose times are not int64
    nanoseconds, or which end before they start are skipped; a bad ``data_ns``,
    ``cpu_ns`` or ``runq_ns``, or a ``capture`` not in ``CAPTURE_PHASES``, is left out
    of its record, named. So is a ``data_ns``, ``cpu_ns`` or ``runq_ns`` longer than its
    step (each is part of the step: more is impossible), named in
    ``bad`` with the first step and how many more. A record of a step already read is
    skipped (the first is kept), so is one longer than ``MAX_STEP_NS`` and one that
    starts before the step before it ended (steps by number); each kind named.
    """
    path = steps_path(run_dir, rank)
    rows: Iterable[records.StepRecord] | None = read_whole(path, records.StepRecord, run_id)
    if rows is None:
        rows = iter_records(
            path,
            records.StepRecord,
            optional=("data_ns", "cpu_ns", "runq_ns", "capture"),
            bad=bad,
            run_id=run_id,
        )
    out: list[records.StepRecord] = []
    seen: set[int] = set()
    repeated: list[int] = []
    # per field: (step, value, the step's length) of each record it was left out of
    too_long: dict[str, list[tuple[int, int, int]]] = {}
    endless: list[int] = []
    for r in rows:
        if r.step in seen:
            # A step recorded twice (a file appended to itself, two writers): the first
            # is kept; a repeat would count the step twice and break the run's order.
            repeated.append(r.step)
            continue
        seen.add(r.step)
        wall = r.end_ns - r.start_ns
        if wall > MAX_STEP_NS:
            endless.append(r.step)  # an end time no clock gives: the record says nothing
            continue
        for name in ("data_ns", "cpu_ns", "runq_ns"):
            value = getattr(r, name)
            # The DataLoader wait, the thread's CPU time and its run-queue wait are each
            # part of the step (a thread runs on one CPU at a time): more is impossible
            # (a negative one is not an Ns: the decoder leaves it out, named). CPU and
            # queue times come from another clock than the step's: SLACK_NS of
            # difference is reading, not error.
            slack = 0 if name == "data_ns" else SLACK_NS
            if value is not None and value > wall + slack:
                too_long.setdefault(name, []).append((r.step, value, wall))
                setattr(r, name, None)
        out.append(r)
    overlapping = _overlapping(out)
    if overlapping:
        out = [r for r in out if r.step not in overlapping]
    if bad is not None:
        for name, hits in too_long.items():
            step, value, wall = hits[0]
            more = (
                f" (and at {len(hits) - 1} more step(s), up to step {hits[-1][0]})"
                if len(hits) > 1
                else ""
            )
            bad.append(
                f"{path.name} step {step}: {name} ({value / 1e6:.1f} ms) is longer than the"
                f" step ({wall / 1e6:.1f} ms){more}; left out"
            )
        if endless:
            bad.append(
                f"{path.name}: {len(endless)} record(s) end more than"
                f" {MAX_STEP_NS // DAY_NS} days after they start (steps {min(endless)}-"
                f"{max(endless)}): no clock gives that; left out"
            )
        if overlapping:
            steps = sorted(overlapping)
            bad.append(
                f"{path.name}: {len(steps)} step(s) start before the step before them ended"
                f" (steps {steps[0]}-{steps[-1]}): one thread runs one step at a time, so"
                " the times are wrong (a clock set back, two writers); left out"
            )
        if repeated:
            bad.append(
                f"{path.name}: {len(repeated)} record(s) repeat a step already recorded"
                f" (steps {min(repeated)}-{max(repeated)}); the first record of each step"
                " is kept"
            )
    return out


DAY_NS = 86_400 * 10**9
MAX_STEP_NS = 7 * DAY_NS  # no training step lasts a week: an end time past it is wrong
SLACK_NS = 1_000_000  # CPU and run-queue times read on another clock than the step's


def _overlapping(recs: list[records.StepRecord]) -> set[int]:
    """The steps whose record starts before the previous step's (by number) ended."""
    ordered = sorted(recs, key=operator.attrgetter("step"))
    return {cur.step for prev, cur in itertools.pairwise(ordered) if cur.start_ns < prev.end_ns}


def collective_identity(r: records.CollectiveRecord) -> tuple[str, bool, int, int]:
    """What makes two records of one rank's collective log the same flight-recorder entry.

    The collector's own key (``collectives.FlightRecorderLog.poll``): process group,
    p2p or not (p2p and collective sequence numbers are separate counters), sequence
    number and enqueue time. The sequence number alone is not enough: the entries of
    one coalesced group share it.
    """
    return (r.pg, r.p2p, r.seq, r.enqueue_ns)


def completeness(state: str, start_ns: int | None, end_ns: int | None, dur: float | None) -> int:
    """How much a record of a collective says (a later dump knows more: its end, its GPU time)."""
    return (
        8 * (state == "completed")
        + 4 * (end_ns is not None)
        + 2 * (start_ns is not None)
        + (dur is not None)
    )


def repeated_collectives(name: str, repeats: list[tuple[str, int]]) -> str:
    """The ``bad`` line for records that repeat one already read: ``(pg, seq)`` of each."""
    pgs = sorted({pg for pg, _ in repeats})
    seqs = [seq for _, seq in repeats]
    groups = f"process group {pgs[0]}" if len(pgs) == 1 else f"process groups {', '.join(pgs)}"
    return (
        f"{name}: {len(repeats)} record(s) repeat a collective already recorded ({groups},"
        f" seq {min(seqs)}-{max(seqs)}); the first record of each is kept"
    )


# The fields only the collector's own rows have (``rankscope.profiler.p2p``).
_COLLECTOR_ONLY = ("source", "peer", "wait_start_ns")


def read_collectives(run_dir: Path, rank: int, bad: Problems = None) -> list[dict[str, Any]]:
    """The flight-recorder records of a rank (``records.CollectiveRecord`` as dicts).

    Records missing a field, with ``seq`` outside 0..MAX_STEP, times that are not
    int64 nanoseconds (or null where allowed), or a non-finite ``duration_ms`` are
    skipped; the rest are returned in file order. Nulls are kept (the format has them).

    Each flight-recorder entry (``collective_identity``) is read once. A record equal
    to one already read (a file appended to itself) is skipped, the first kept, and
    the repeats named in ``bad``. Records of one entry that differ (the same entry
    seen again with its state or times filled in) are no fault: the most complete
    (``completeness``; the later on a tie) is kept, in the place of the first.
    """
    path = collectives_path(run_dir, rank)
    rows = iter_records(path, records.CollectiveRecord, bad=bad)
    fields = records.CollectiveRecord.__struct_fields__
    out: list[dict[str, Any]] = []
    where: dict[tuple[str, bool, int, int], int] = {}
    seen: set[tuple[Any, ...]] = set()
    repeated: list[tuple[str, int]] = []
    for r in rows:
        values = tuple(getattr(r, f) for f in fields)
        if values in seen:
            repeated.append((r.pg, r.seq))
            continue
        seen.add(values)
        row = dict(zip(fields, values, strict=True))
        for extra in _COLLECTOR_ONLY:  # absent from flight-recorder rows: left out, as written
            if row[extra] is None:
                del row[extra]
        key = collective_identity(r)
        j = where.get(key)
        if j is None:
            where[key] = len(out)
            out.append(row)
        elif completeness(r.state, r.start_ns, r.end_ns, r.duration_ms) >= completeness(
            out[j]["state"], out[j]["start_ns"], out[j]["end_ns"], out[j]["duration_ms"]
        ):
            out[j] = row
    if repeated and bad is not None:
        bad.append(repeated_collectives(path.name, repeated))
    return out


def _finite_scalar(value: Any) -> bool:
    if type(value) is float:
        return value == value and abs(value) != float("inf")
    return type(value) is not int or -INT64_MAX <= value <= INT64_MAX


def clean_sample(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A telemetry record (``records.TelemetrySample``) or None without a valid ``ts_ns``.

    A known metric of the wrong type is left out; other fields are kept when they
    are not numbers beyond int64 or non-finite.
    """
    try:
        sample = records.convert(obj, records.TelemetrySample, optional=records.TELEMETRY_METRICS)
    except BadRecord:
        return None
    out = records.as_dict(sample)
    known = records.TelemetrySample.__struct_fields__
    for key, value in obj.items():
        if key not in known and _finite_scalar(value):
            out[key] = value
    return out


def read_telemetry(run_dir: Path, rank: int) -> list[dict[str, Any]]:
    return read_samples(telemetry_path(run_dir, rank))


def read_samples(
    path: Path, bad: Problems = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    """Telemetry records of one JSONL file (``clean_sample`` applied; headers skipped;
    an unreadable file or one of another run named in ``bad``)."""
    out = []
    for o in iter_jsonl(path, bad, run_id):
        row = clean_sample(o)
        if row is not None:
            out.append(row)
    return out


def ranks_with_files(run_dir: Path, pattern: str) -> Iterable[tuple[int, Path]]:
    for p in sorted(Path(run_dir).glob(pattern)):
        r = rank_from_filename(p.name)
        if r is not None:
            yield r, p


# --- manifests ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureWindow:
    """One torch.profiler window of one rank: steps first..last inclusive."""

    rank: int
    first_step: int
    last_step: int
    file: str  # relative to the run directory

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "file": self.file,
        }


def _reason(e: BaseException) -> str:
    if isinstance(e, safeio.UnsafeFile):
        return e.reason
    if isinstance(e, OSError):
        return f"cannot read it ({e.strerror or e})"
    return f"not valid JSON ({type(e).__name__})"


def _drop_bad(obj: dict[str, Any], cls: type[T], fields: tuple[str, ...]) -> str | None:
    """Remove from ``obj`` the ``fields`` that fail ``cls``; the first reason, or None."""
    first = None
    for _ in fields:
        try:
            records.convert(obj, cls)
            break
        except BadRecord as e:
            if e.field not in fields or e.field not in obj:
                return e.reason
            first = first or e.reason
            del obj[e.field]
    return first


def read_run_manifest(run_dir: Path) -> dict[str, Any]:
    """The run manifest with every rank's manifest merged in under ``ranks``.

    Missing or unreadable files give what could be read: a crashed job still
    has a usable run directory. What was left out (an unreadable manifest, a rank
    or world size out of bounds) is listed, one line each, under ``problems``.
    """
    run_dir = Path(run_dir)
    manifest: dict[str, Any] = {}
    problems: list[str] = []
    try:
        loaded = read_json(run_dir / RUN_MANIFEST)
        if isinstance(loaded, dict):
            manifest = loaded
        else:
            problems.append(f"{RUN_MANIFEST}: not a JSON object; ignored")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        problems.append(f"{RUN_MANIFEST}: {_reason(e)}; ignored")
    if "world_size" in manifest and not valid_world_size(manifest["world_size"]):
        problems.append(
            f"{RUN_MANIFEST}: world_size {str(manifest['world_size'])[:40]} is not an"
            f" integer in 1..{MAX_WORLD_SIZE}; ignored"
        )
        del manifest["world_size"]
    checked = tuple(f for f in records.RunManifest.__struct_fields__ if f != "schema")
    reason = _drop_bad(manifest, records.RunManifest, checked)
    if reason is not None:
        problems.append(f"{RUN_MANIFEST}: {reason}; ignored")
    ranks: dict[int, dict[str, Any]] = {}
    optional = tuple(f for f in records.RankMeta.__struct_fields__ if f not in ("rank", "schema"))
    for p in sorted(run_dir.glob("rank*.meta.json")):
        try:
            meta = read_json(p)
        except (OSError, ValueError) as e:
            problems.append(f"{p.name}: {_reason(e)}; ignored")
            continue
        if not isinstance(meta, dict) or not valid_rank(meta.get("rank")):
            problems.append(f"{p.name}: no rank in 0..{MAX_WORLD_SIZE - 1}; ignored")
            continue
        if named_rank(p) is None:
            problems.append(f"{p.name}: not named rank{{R}}.meta.json; ignored")
            continue
        why = other_run(meta.get("run_id"), manifest.get("run_id"))
        other = rank_problem(meta["rank"], p) or (f"{p.name}: {why}" if why else None)
        if other is not None:
            problems.append(other)
            continue
        _drop_bad(meta, records.RankMeta, optional)
        ranks[meta["rank"]] = meta
    manifest["ranks"] = ranks
    manifest["problems"] = problems
    return manifest


def capture_windows(run_dir: Path) -> list[CaptureWindow]:
    """Every capture window recorded in the per-rank manifests, in rank and step order."""
    out: list[CaptureWindow] = []
    for rank, meta in read_run_manifest(run_dir)["ranks"].items():
        for w in meta.get("windows", []) or []:
            try:
                rec = records.convert(w, records.CaptureWindowRecord)
            except BadRecord:
                continue
            out.append(CaptureWindow(rank, rec.first_step, rec.last_step, rec.file))
    return sorted(out, key=lambda w: (w.rank, w.first_step))


# --- the control channel -------------------------------------------------------------


def _control_files(run_dir: Path, pattern: str) -> list[Path]:
    # A symlinked control/ is never followed: it could point anywhere.
    if control_dir_problem(run_dir) is not None:
        return []
    return sorted(control_dir(run_dir).glob(pattern))


def _read_control_json(path: Path, schema: str) -> dict[str, Any] | None:
    try:
        obj = read_json(path, nofollow=True)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and obj.get("schema") == schema else None


def heartbeat_problem(hb: dict[str, Any]) -> str | None:
    """Why a heartbeat cannot be trusted (a field of the wrong type or out of range), or None."""
    try:
        records.convert(hb, records.Heartbeat)
    except BadRecord as e:
        return e.reason
    return None


def read_heartbeats(run_dir: Path, bad: dict[str, str] | None = None) -> dict[int, dict[str, Any]]:
    """rank -> its latest heartbeat (unreadable or foreign files are left out).

    A heartbeat that fails ``records.Heartbeat`` is left out too; with ``bad``,
    its file name is recorded there with the reason.
    """
    out: dict[int, dict[str, Any]] = {}
    for p in _control_files(run_dir, "rank*.heartbeat.json"):
        hb = _read_control_json(p, HEARTBEAT_SCHEMA)
        if hb is None:
            continue
        problem = heartbeat_problem(hb)
        if problem is not None:
            if bad is not None:
                bad[p.name] = problem
            continue
        out[hb["rank"]] = hb
    return out


def _valid_answer(ans: Any) -> bool:
    try:
        records.convert(ans, records.Answer)
    except BadRecord:
        return False
    return True


def read_acks(run_dir: Path) -> dict[int, dict[str, Any]]:
    """rank -> its latest attach answer (answers of the wrong shape are left out)."""
    out: dict[int, dict[str, Any]] = {}
    for p in _control_files(run_dir, "rank*.ack.json"):
        ack = _read_control_json(p, ACK_SCHEMA)
        if ack is None or not valid_rank(ack.get("rank")) or not _valid_answer(ack):
            continue
        history = ack.get("history")
        ack["history"] = (
            [a for a in history[-64:] if _valid_answer(a)] if isinstance(history, list) else []
        )
        out[ack["rank"]] = ack
    return out


def read_request(run_dir: Path) -> dict[str, Any] | None:
    """The current attach request as written, or None (the attach command's view)."""
    if control_dir_problem(run_dir) is not None:
        return None
    return _read_control_json(request_path(run_dir), REQUEST_SCHEMA)
