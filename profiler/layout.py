"""Run-directory layout: file names, format versions, bounds, paths and atomic writes.

The layout itself (which file holds what) is described in ``rankscope.profiler.rundir``;
the records inside the files are the Structs of ``rankscope.profiler.records``.
Standard library and msgspec only: it runs inside training jobs.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import msgspec

RUN_SCHEMA = "rankscope.run/1"
RANK_SCHEMA = "rankscope.rank/1"
STEPS_SCHEMA = "rankscope.steps/1"
# What a profiler window did during a step (a steps row's ``capture``), in the
# order a window goes through them: "start" (the profiler started at its
# beginning), "window" (recorded or warm-up under the profiler), "stop" (the
# profiler stopped and handed the trace off at its beginning), "export" (the
# trace was being written beside it).
CAPTURE_PHASES = ("start", "window", "stop", "export")
TELEMETRY_SCHEMA = "rankscope.telemetry/1"
COLLECTIVES_SCHEMA = "rankscope.collectives/1"
# Where a rank learns the run it belongs to: ``rankscope run`` sets the first for
# every process of the job; torchrun sets the second (``none`` when not given).
RUN_ID_VARIABLES = ("RANKSCOPE_RUN_ID", "TORCHELASTIC_RUN_ID")

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


def run_id_from_env(environ: Any = None) -> str | None:
    """The id every rank of this job shares (``RUN_ID_VARIABLES``), or None (unknown)."""
    env = os.environ if environ is None else environ
    for name in RUN_ID_VARIABLES:
        value = str(env.get(name) or "").strip()
        if value and value.lower() != "none":
            return value[:64]
    return None


# torchrun's count of restarts of the job's workers (0: the first attempt).
RESTART_VARIABLE = "TORCHELASTIC_RESTART_COUNT"
ATTEMPT_DIR_RE = re.compile(r"^attempt(\d{1,6})$")
_MAX_ATTEMPT = 999_999


def restart_count(environ: Any = None) -> int:
    """Which attempt this process belongs to: torchrun's restart count, 0 when absent."""
    env = os.environ if environ is None else environ
    try:
        n = int(str(env.get(RESTART_VARIABLE) or "0").strip())
    except ValueError:
        return 0
    return n if 0 <= n <= _MAX_ATTEMPT else 0


def attempt_dir(run_dir: Path, attempt: int) -> Path:
    """Where an earlier attempt's files go when torchrun restarts the job."""
    return Path(run_dir) / f"attempt{attempt}"


def attempt_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """The earlier attempts set aside in ``run_dir``, oldest first."""
    out = []
    try:
        children = list(Path(run_dir).iterdir())
    except OSError:
        return []
    for child in children:
        m = ATTEMPT_DIR_RE.match(child.name)
        if m and child.is_dir() and not child.is_symlink():
            out.append((int(m.group(1)), child))
    return sorted(out)


def set_aside_attempt(run_dir: Path, rank: int, world_size: int, attempt: int) -> list[str]:
    """Move the files an earlier attempt of the job left for ``rank`` into
    ``attempt{K}/`` (K: the attempt their manifest names, else ``attempt - 1``), so
    that a restarted attempt never writes over them. Rank 0 also moves the files of
    ranks at or past ``world_size`` (a smaller restarted world) and copies
    ``run.json``. Returns the names moved; never raises for a file it cannot move."""
    run_dir = Path(run_dir)
    moved: list[str] = []
    try:
        names = [p.name for p in run_dir.iterdir() if p.is_file() and not p.is_symlink()]
    except OSError:
        return moved
    owners: dict[int, list[str]] = {}
    for name in names:
        r = rank_from_filename(name)
        if r is None or not name.startswith(f"rank{r}."):
            continue
        if r == rank or (rank == 0 and r >= world_size):
            owners.setdefault(r, []).append(name)
    for r, files in owners.items():
        old = _attempt_of(run_dir / f"rank{r}.meta.json")
        if old is None:
            old = attempt - 1
        if old >= attempt:
            continue  # this attempt's own files (a second collector in the process)
        dest = attempt_dir(run_dir, old)
        try:
            dest.mkdir(exist_ok=True)
        except OSError:
            continue
        for name in files:
            with contextlib.suppress(OSError):
                os.replace(run_dir / name, dest / name)
                moved.append(name)
    if rank == 0 and moved:
        manifest = run_dir / RUN_MANIFEST
        old = _attempt_of(manifest)
        dest = attempt_dir(run_dir, attempt - 1 if old is None else old)
        if old is None or old < attempt:
            # A copy (this attempt's rank 0 rewrites run.json) that says how it ended.
            with contextlib.suppress(OSError, ValueError, msgspec.DecodeError):
                dest.mkdir(exist_ok=True)
                loaded = (
                    msgspec.json.decode(manifest.read_bytes()[: 1 << 20])
                    if manifest.is_file()
                    else {"schema": RUN_SCHEMA, "attempt": attempt - 1}
                )
                if isinstance(loaded, dict):
                    loaded["ended"] = "restarted"
                    write_json_atomic(dest / RUN_MANIFEST, loaded)
    return moved


def _attempt_of(path: Path) -> int | None:
    """The ``attempt`` a manifest names (None: no manifest, or one from before attempts)."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return None
        value = msgspec.json.decode(path.read_bytes()).get("attempt")
    except (OSError, ValueError, AttributeError, msgspec.DecodeError):
        return None
    return value if type(value) is int and 0 <= value <= _MAX_ATTEMPT else None


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


def is_run_input_name(name: str) -> bool:
    """Whether a file of this name, inside a run folder, is (or would be read as) an input.

    The manifests, JSONL logs and control files the collector writes, every name a
    trace folder's discovery may read as a trace, and any ``rank{R}`` file (the
    collector's log, hang evidence): ``rankscope report -o`` refuses to write them.
    """
    base = Path(name).name
    return (
        base == RUN_MANIFEST
        or base.endswith((*TRACE_SUFFIXES, ".jsonl"))
        or rank_from_filename(base) is not None
    )


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
            ".progress.json",  # rankscope.profiler.evidence
            ".hang.json",
        )
    ):
        return False
    return name.endswith((".json.gz", ".json"))


def encode_json(obj: Any) -> bytes:
    """``obj`` (a record Struct, or plain JSON values) as strict, indented JSON.

    NaN and infinities become ``null`` (msgspec's rule), so every file a run holds
    parses with a strict JSON parser; anything else unknown is written as its ``str``.
    """
    return msgspec.json.format(msgspec.json.encode(obj, enc_hook=str), indent=1)


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
        with os.fdopen(fd, "wb") as f:
            f.write(encode_json(obj))
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


def is_run_dir(path: Path) -> bool:
    """A directory the collector wrote (it has a run manifest or per-rank manifests)."""
    p = Path(path)
    return p.is_dir() and ((p / RUN_MANIFEST).is_file() or any(p.glob("rank*.meta.json")))


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
