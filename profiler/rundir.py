"""The run directory: the one place that knows its layout, for both sides.

A run directory holds what the collector wrote for every rank of one job::

    RUN/
      run.json                          run manifest (written by rank 0; RUN_SCHEMA)
      rank{R}.meta.json                 per-rank manifest (host, pid, devices, versions,
                                        clock offset, capture windows; RANK_SCHEMA)
      rank{R}.steps.jsonl               one line per training step {step, start_ns, end_ns, data_ns}
      rank{R}.collectives.jsonl         one line per collective, from PyTorch's flight recorder
      rank{R}.telemetry.jsonl           NVML/GPM (or host) samples, one JSON object a line
      rank{R}.step{A}-{B}.pt.trace.json.gz
                                        a torch.profiler window of steps A..B (Kineto JSON)
      rank{R}.log                       what went wrong inside the collector, if anything
      control/                          the attach channel (below)
        attach.request.json             the current capture request (``rankscope attach``)
        rank{R}.ack.json                rank R's answer to the latest request it saw
        rank{R}.heartbeat.json          rank R's liveness and step, rewritten about every second

Every per-rank file is written by that rank only, so ranks never race on a file;
``run.json`` is written by rank 0 alone. JSON files are replaced atomically
(write to a temporary name, then ``os.replace``), JSONL files are appended and
flushed. All timestamps are int64 nanoseconds of CLOCK_REALTIME.

What the collector (``rankscope.profiler.collector``) puts in these files:

- ``rank{R}.steps.jsonl`` and ``rank{R}.telemetry.jsonl`` start with one header line
  ``{"schema": STEPS_SCHEMA|TELEMETRY_SCHEMA, "rank": R[, "source", "period_ms"]}``;
  ``read_steps``/``read_telemetry`` skip it (it has no step / ts_ns). Telemetry rows
  carry ``source`` ("nvml" | "host") and the fields in ``rankscope.profiler.telemetry``.
  A step row has ``data_ns`` (int): the time the training thread spent in the
  DataLoader iterator's ``__next__`` during that step (absent where that timer is off),
  ``cpu_ns`` (int): the training thread's CPU time in the step, and ``runq_ns`` (int): the
  time it was runnable but waiting for a CPU (``/proc/thread-self/schedstat``); each
  absent where unreadable and in files written before they existed.
- ``rank{R}.collectives.jsonl`` (no header line): one JSON object per collective
  this rank issued, as PyTorch's flight recorder saw it, appended every few
  seconds (``rankscope.profiler.collectives``)::

      {"seq": 12, "pg": "0", "pg_desc": "default_pg", "name": "all_reduce", "p2p": false,
       "bytes": 4000, "enqueue_ns": 1735732800000000000, "start_ns": null, "end_ns": null,
       "duration_ms": null, "state": "scheduled"}

  ``(pg, seq)`` identifies one instance across ranks (``seq`` counts collectives
  of the group, or point-to-point ops when ``p2p``). ``name`` is canonical
  (``all_reduce``, ``broadcast``, ``all_gather``, ``reduce_scatter``,
  ``all_to_all``, ``barrier``, ``send``, ``recv``, ... : the backend prefix such as
  ``gloo:`` is removed). ``bytes`` is input elements x dtype size (-1 unknown).
  ``enqueue_ns`` is when the rank issued it (CLOCK_REALTIME); ``start_ns`` /
  ``end_ns`` when the backend saw it start / complete (NCCL's watchdog; null
  with gloo), ``duration_ms`` the GPU time (NCCL with ``TORCH_NCCL_ENABLE_TIMING=1``;
  else null); ``state`` is the recorder's ("scheduled", "started", "completed").
  Lines are in issue order per process group; ``read_collectives`` reads them.
- ``rank{R}.meta.json``: schema, rank, local_rank, world_size, host, pid,
  device_name ("cpu" without a GPU), torch/cuda/nccl/python versions, start_ns,
  end_ns, steps_recorded, steps_source ("manual" | "optimizer"), profile (the
  plan), telemetry_source, clock_offset_ns and clock_offset_method, windows,
  collectives (the flight-recorder log's sources, buffer_size, written and
  dropped counts; absent when it is off).
  ``clock_offset_ns`` is this rank's clock minus rank 0's at the same instant:
  ``t_on_rank0_clock = t - clock_offset_ns``. Each window is
  ``{first_step, last_step, file, profiler_steps}``: the trace's ``ProfilerStep#N``
  ranges are collector step N. A window taken on request also has ``request`` (its
  id) and, when auto-capture asked for it, ``trigger`` (the request's, below).
- ``run.json``: schema, world_size, start_ns, command, config; under
  ``rankscope run`` also ``exit_code`` and ``end_ns``, added by the launcher after
  every rank has exited.

The control channel (``control/``) lets ``rankscope attach`` ask a running job
for a torch.profiler window. It needs no network, only the run directory, so it
works across hosts on a shared filesystem; every file in it is JSON replaced
atomically, and ranks never read a path out of a request (traces always go to
``trace_path``):

- ``attach.request.json`` (written by the attach command only; REQUEST_SCHEMA)::

      {"schema": "rankscope.attach-request/1", "id": "20250101T120000-1a2b3c",
       "command": "capture", "first_step": 120, "steps": 3,
       "created_ns": 1735732800000000000, "requested_by": "user@host pid 4242"}

  Every rank captures steps first_step..first_step+steps-1 (a warm-up step
  before them). ``id`` matches ``REQUEST_ID``; ``steps`` is 1..MAX_ATTACH_STEPS;
  ``requested_by`` is optional and informational; ``trigger`` is optional (what
  auto-capture writes, at most 1 KiB)::

      "trigger": {"kind": "slow_steps", "step": 340, "median_ms": 10.2,
                  "threshold_ms": 15.3, "recent_ms": [41.0, 40.8, 41.3]}

  (the slow steps ended at ``step``; ``recent_ms`` are their times, ``median_ms``
  the median of the steps before). Any other field makes the request invalid.
  A rank ignores (and logs to ``rank{R}.log``) a request that is malformed, a
  symlink, larger than MAX_REQUEST_BYTES, older than its collector, or whose
  first step it has already begun; one request at a time runs per rank, and a
  new one while a window is pending or running is refused.
- ``rank{R}.ack.json`` (written by rank R; ACK_SCHEMA)::

      {"schema": "rankscope.attach-ack/1", "rank": 0, "id": "...", "state": "done",
       "first_step": 120, "last_step": 122, "ts_ns": ...,
       "file": "rank0.step120-122.pt.trace.json.gz", "history": [...]}

  ``state`` is one of ACK_STATES: "accepted" (queued for first_step), "started"
  (the profiler is on), "done" (``file`` written, relative to the run
  directory; last_step may be earlier if the job stopped inside the window),
  "refused" or "failed" (``reason`` says why). ``history`` keeps the last
  finished answers (oldest first), so several attaches in a row stay visible.
- ``rank{R}.heartbeat.json`` (written by rank R's recorder thread about every
  second; HEARTBEAT_SCHEMA): rank, world_size, host, pid, start_ns, ts_ns,
  step (the step now running), steps_per_s (recent rate, null until known),
  state ("running" | "capturing" | "stopped"). A heartbeat older than a few
  seconds, or a "stopped" one, means the rank no longer runs.

Finding runs (``find_runs``, ``find_run``) lives here too, so the report and the
dashboard accept the same paths: a run directory, a trace folder, a trace file,
or a folder holding runs.

Bounds on numbers read from these files (a number read from disk never sizes an
allocation unchecked): a rank is 0..MAX_WORLD_SIZE-1 and a world size
1..MAX_WORLD_SIZE (2^20); a step is 0..MAX_STEP (2^53); a ``*_ns`` timestamp is a
non-negative int64. Readers drop a record or field outside these bounds (and
``read_run_manifest`` says so under ``problems``). Every reader opens files through
``rankscope.profiler.safeio``: regular files only, never blocking, bounded reads.

This module imports only the standard library: it runs inside training jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from rankscope.profiler import safeio
from rankscope.profiler.errors import RankscopeError

RUN_SCHEMA = "rankscope.run/1"
RANK_SCHEMA = "rankscope.rank/1"
STEPS_SCHEMA = "rankscope.steps/1"
TELEMETRY_SCHEMA = "rankscope.telemetry/1"

REQUEST_SCHEMA = "rankscope.attach-request/1"
ACK_SCHEMA = "rankscope.attach-ack/1"
HEARTBEAT_SCHEMA = "rankscope.heartbeat/1"

RUN_MANIFEST = "run.json"
CONTROL_DIR = "control"
REQUEST_FILE = "attach.request.json"

# Attach requests: what a rank accepts at all (see the docstring).
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ATTACH_STEPS = 100
# How far past a rank's current step a request may start: further ahead, a
# forgotten request would hold the channel for the rest of the job.
MAX_ATTACH_LEAD_STEPS = 100_000
MAX_REQUEST_BYTES = 4096
ACK_STATES = ("accepted", "started", "done", "refused", "failed", "cancelled")

# Bounds on numbers read from run files (see the module docstring).
MAX_WORLD_SIZE = 1 << 20
MAX_STEP = 1 << 53
INT64_MAX = (1 << 63) - 1

TRACE_SUFFIXES = (".pt.trace.json.gz", ".pt.trace.json", ".json.gz", ".json")

_RANK_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(?:rank|worker)[-_]?(\d+)(?![0-9])", re.IGNORECASE)


def rank_meta_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank{rank}.meta.json"


def steps_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank{rank}.steps.jsonl"


def collectives_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank{rank}.collectives.jsonl"


def telemetry_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank{rank}.telemetry.jsonl"


def log_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank{rank}.log"


def trace_path(run_dir: Path, rank: int, first_step: int, last_step: int) -> Path:
    """Where rank ``rank`` exports the profiler window of steps first..last (inclusive)."""
    return Path(run_dir) / f"rank{rank}.step{first_step}-{last_step}.pt.trace.json.gz"


def control_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CONTROL_DIR


def request_path(run_dir: Path) -> Path:
    return control_dir(run_dir) / REQUEST_FILE


def ack_path(run_dir: Path, rank: int) -> Path:
    return control_dir(run_dir) / f"rank{rank}.ack.json"


def heartbeat_path(run_dir: Path, rank: int) -> Path:
    return control_dir(run_dir) / f"rank{rank}.heartbeat.json"


def rank_from_filename(name: str) -> int | None:
    """``rank3``, ``rank-3``, ``rank_3``, ``worker3`` in a file name give 3; else None."""
    m = _RANK_IN_NAME.search(Path(name).name)
    return int(m.group(1)) if m else None


def is_trace_file(path: Path) -> bool:
    name = path.name
    # Hidden files are writes in progress (the exporter's temporary JSON, atomic
    # rewrites), never finished traces.
    if name.startswith(".") or not path.is_file():
        return False
    if name.endswith((".pt.trace.json.gz", ".pt.trace.json")):
        return True
    # Other JSON files may be traces (HTA's rank-N.json.gz, ad-hoc exports), but the
    # collector's own JSON files never are.
    if name in (RUN_MANIFEST, "manifest.json") or name.endswith(
        (
            ".meta.json",
            ".steps.json",
            ".jsonl",
            ".request.json",
            ".ack.json",
            ".status.json",
            ".heartbeat.json",
        )
    ):
        return False
    return name.endswith((".json.gz", ".json"))


def write_json_atomic(path: Path, obj: Any, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``obj`` as JSON so readers never see half a file.

    ``fsync=False`` skips forcing the data to disk: for files rewritten every
    second (heartbeats), where the next write supersedes a lost one anyway.
    """
    import tempfile  # here, not at the top: report start-up never writes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False, default=str)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a run directory is read by other
        # users (the dashboard on a login node), like every other file in it.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def valid_rank(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value < MAX_WORLD_SIZE


def valid_world_size(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 < value <= MAX_WORLD_SIZE


def valid_ns(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= INT64_MAX


def read_json(path: Path, *, nofollow: bool = False, dir_fd: int | None = None) -> Any:
    """A small JSON file's value: regular files only (``safeio``), at most MAX_JSON_BYTES.

    Raises ``OSError`` (including ``safeio.UnsafeFile``) or ``ValueError`` (bad JSON,
    bad UTF-8, nesting too deep), nothing else.
    """
    data = safeio.read_bytes(path, safeio.MAX_JSON_BYTES, nofollow=nofollow, dir_fd=dir_fd)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line; a torn last line (a crash) is skipped.

    So is any line that is not UTF-8 or not JSON, or longer than
    ``safeio.MAX_LINE_BYTES``; an unreadable file (not a regular file, say) yields nothing.
    """
    try:
        lines = safeio.read_lines(path)
        for raw in lines:
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                yield obj
    except OSError:
        return


def _finite_number(value: Any) -> bool:
    if type(value) is float:
        return value == value and abs(value) != float("inf")
    return type(value) is int and -INT64_MAX <= value <= INT64_MAX


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


def is_run_dir(path: Path) -> bool:
    """A directory the collector wrote (it has a run manifest or per-rank manifests)."""
    p = Path(path)
    return p.is_dir() and ((p / RUN_MANIFEST).is_file() or any(p.glob("rank*.meta.json")))


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
    ranks: dict[int, dict[str, Any]] = {}
    for p in sorted(run_dir.glob("rank*.meta.json")):
        try:
            meta = read_json(p)
        except (OSError, ValueError) as e:
            problems.append(f"{p.name}: {_reason(e)}; ignored")
            continue
        if not isinstance(meta, dict) or not valid_rank(meta.get("rank")):
            problems.append(f"{p.name}: no rank in 0..{MAX_WORLD_SIZE - 1}; ignored")
            continue
        if "world_size" in meta and not valid_world_size(meta["world_size"]):
            del meta["world_size"]
        ranks[meta["rank"]] = meta
    manifest["ranks"] = ranks
    manifest["problems"] = problems
    return manifest


def _reason(e: BaseException) -> str:
    if isinstance(e, safeio.UnsafeFile):
        return e.reason
    if isinstance(e, OSError):
        return f"cannot read it ({e.strerror or e})"
    return f"not valid JSON ({type(e).__name__})"


def capture_windows(run_dir: Path) -> list[CaptureWindow]:
    """Every capture window recorded in the per-rank manifests, in rank and step order."""
    out: list[CaptureWindow] = []
    for rank, meta in read_run_manifest(run_dir)["ranks"].items():
        for w in meta.get("windows", []) or []:
            try:
                out.append(
                    CaptureWindow(rank, int(w["first_step"]), int(w["last_step"]), str(w["file"]))
                )
            except (KeyError, TypeError, ValueError):
                continue
    return sorted(out, key=lambda w: (w.rank, w.first_step))


def read_steps(run_dir: Path, rank: int) -> list[dict[str, Any]]:
    """The step timer's records for a rank: dicts with step, start_ns, end_ns.

    Records whose step is not in 0..MAX_STEP, whose times are not int64
    nanoseconds, or which end before they start are dropped; a ``data_ns`` that is
    not an int64 of nanoseconds is removed from its record (so are ``cpu_ns`` and ``runq_ns``).
    """
    rows = []
    for obj in iter_jsonl(steps_path(run_dir, rank)):
        step, start, end = obj.get("step"), obj.get("start_ns"), obj.get("end_ns")
        if (
            type(step) is int
            and 0 <= step <= MAX_STEP
            and valid_ns(start)
            and valid_ns(end)
            and end >= start
        ):
            for key in ("data_ns", "cpu_ns", "runq_ns"):
                if key in obj and not valid_ns(obj[key]):
                    del obj[key]
            rows.append(obj)
    return rows


def _ns_or_null(value: Any) -> bool:
    return value is None or valid_ns(value)


def read_collectives(run_dir: Path, rank: int) -> list[dict[str, Any]]:
    """The flight-recorder records of a rank (format in the module docstring).

    Records missing a field, with ``seq`` outside 0..MAX_STEP, times that are not
    int64 nanoseconds (or null where allowed), or a non-finite ``duration_ms`` are
    dropped; the rest are returned as written, in file order.
    """
    rows = []
    for obj in iter_jsonl(collectives_path(run_dir, rank)):
        seq, nbytes, duration = obj.get("seq"), obj.get("bytes"), obj.get("duration_ms")
        if (
            type(seq) is int
            and 0 <= seq <= MAX_STEP
            and isinstance(obj.get("pg"), str)
            and isinstance(obj.get("pg_desc"), str)
            and isinstance(obj.get("name"), str)
            and type(obj.get("p2p")) is bool
            and type(nbytes) is int
            and -1 <= nbytes <= INT64_MAX
            and valid_ns(obj.get("enqueue_ns"))
            and _ns_or_null(obj.get("start_ns"))
            and _ns_or_null(obj.get("end_ns"))
            and (duration is None or (type(duration) in (int, float) and _finite_number(duration)))
            and isinstance(obj.get("state"), str)
        ):
            rows.append(obj)
    return rows


def clean_sample(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A telemetry record with a valid ``ts_ns`` and only finite numbers, or None."""
    if not valid_ns(obj.get("ts_ns")):
        return None
    return {
        k: v
        for k, v in obj.items()
        if not isinstance(v, int | float) or isinstance(v, bool) or _finite_number(v)
    }


def read_telemetry(run_dir: Path, rank: int) -> list[dict[str, Any]]:
    return read_samples(telemetry_path(run_dir, rank))


def read_samples(path: Path) -> list[dict[str, Any]]:
    """Telemetry records of one JSONL file (``clean_sample`` applied; headers skipped)."""
    out = []
    for o in iter_jsonl(path):
        row = clean_sample(o)
        if row is not None:
            out.append(row)
    return out


def ranks_with_files(run_dir: Path, pattern: str) -> Iterable[tuple[int, Path]]:
    for p in sorted(Path(run_dir).glob(pattern)):
        r = rank_from_filename(p.name)
        if r is not None:
            yield r, p


def control_dir_problem(run_dir: Path) -> str | None:
    """Why ``control/`` must not be used (a symlink, not a directory), or None."""
    import stat

    try:
        st = os.lstat(control_dir(run_dir))
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{CONTROL_DIR}/ cannot be read ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"{CONTROL_DIR}/ is a symlink; refusing to use it"
    if not stat.S_ISDIR(st.st_mode):
        return f"{CONTROL_DIR} is not a directory"
    return None


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
    if not valid_rank(hb.get("rank")):
        return f"rank is not an integer in 0..{MAX_WORLD_SIZE - 1}"
    if not valid_ns(hb.get("ts_ns")):
        return "ts_ns is not an int64 of nanoseconds"
    if "start_ns" in hb and hb["start_ns"] is not None and not valid_ns(hb["start_ns"]):
        return "start_ns is not an int64 of nanoseconds"
    if "world_size" in hb and not valid_world_size(hb["world_size"]):
        return f"world_size is not an integer in 1..{MAX_WORLD_SIZE}"
    step = hb.get("step", 0)
    if type(step) is not int or not 0 <= step <= MAX_STEP:
        return f"step is not an integer in 0..{MAX_STEP}"
    rate = hb.get("steps_per_s")
    if rate is not None and not (_finite_number(rate) and rate >= 0):
        return "steps_per_s is not a finite number"
    if "pid" in hb and type(hb["pid"]) is not int:
        return "pid is not an integer"
    for key in ("host", "state"):
        if key in hb and (not isinstance(hb[key], str) or len(hb[key]) > 256):
            return f"{key} is not a short string"
    return None


def read_heartbeats(run_dir: Path, bad: dict[str, str] | None = None) -> dict[int, dict[str, Any]]:
    """rank -> its latest heartbeat (unreadable or foreign files are left out).

    A heartbeat that fails ``heartbeat_problem`` is left out too; with ``bad``,
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
    return (
        isinstance(ans, dict)
        and isinstance(ans.get("id"), str)
        and ans.get("state") in ACK_STATES
        and all(
            ans.get(k) is None or (type(ans.get(k)) is int and 0 <= ans[k] <= MAX_STEP)
            for k in ("first_step", "last_step")
        )
    )


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


# --- Finding runs: the one discovery both the report and the dashboard use ---

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
