"""The attach channel inside a rank: poll for capture requests, answer them, beat.

File formats are defined in ``rankscope.profiler.rundir`` (``control/``). ``parse_request``
turns the bytes of a request file into an ``AttachRequest`` or raises
``BadRequest`` with the reason; both the collector and ``rankscope attach`` use
it, so what the command writes is exactly what ranks accept.

``ControlChannel.tick()`` runs on the recorder thread (never the training
thread): about every ``poll_s`` it ``lstat``s the request file (one syscall when
nothing changed), reads and validates a new one, and hands a valid request to
the collector through ``offer`` (which stores it in one attribute that the
training thread checks at step boundaries). It writes this rank's heartbeat
about every ``beat_s`` and its acknowledgement whenever a request changes state;
the training and export threads only ``post()`` those state changes to a deque,
and the recorder writes them after the rank manifest on its next flush (so a
"done" ack means the manifest already lists the window).
Anything that goes wrong here disables attach for this rank only (fault part
"attach"); training and the rest of the collector go on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankscope.profiler import rundir
from rankscope.profiler.faults import Faults

_REQUIRED = ("schema", "id", "command", "first_step", "steps", "created_ns")
_OPTIONAL = ("requested_by",)
_MAX_STEP = 2**53  # beyond what any job reaches; rejects absurd numbers early
_HISTORY = 16
# How long a rank keeps counting a request as its own after its collector started:
# a request written a little before (clock skew across hosts) still counts.
_CLOCK_SLACK_NS = 5_000_000_000


class BadRequest(ValueError):
    """A request file that must not be acted on; the message is the reason."""


@dataclass(frozen=True)
class AttachRequest:
    id: str
    first_step: int
    steps: int
    created_ns: int
    requested_by: str = ""

    @property
    def last_step(self) -> int:
        return self.first_step + self.steps - 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": rundir.REQUEST_SCHEMA,
            "id": self.id,
            "command": "capture",
            "first_step": self.first_step,
            "steps": self.steps,
            "created_ns": self.created_ns,
        }
        if self.requested_by:
            out["requested_by"] = self.requested_by
        return out


def _int_field(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    # bool is an int in Python; true/false is not a step count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{key} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key} {value} out of range {lo}..{hi}")
    return value


def validate_request(obj: Any) -> AttachRequest:
    """Check a decoded request against the schema (see ``rankscope.profiler.rundir``)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"not a JSON object but {type(obj).__name__}")
    unknown = sorted(str(k)[:40] for k in obj if k not in _REQUIRED + _OPTIONAL)
    if unknown:
        raise BadRequest(f"unexpected field(s) {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise BadRequest(f"missing field(s) {', '.join(missing)}")
    if obj["schema"] != rundir.REQUEST_SCHEMA:
        raise BadRequest(f"unsupported schema {str(obj['schema'])[:60]!r}")
    if obj["command"] != "capture":
        raise BadRequest(f"unknown command {str(obj['command'])[:60]!r}")
    request_id = obj["id"]
    if not isinstance(request_id, str) or not rundir.REQUEST_ID.match(request_id):
        raise BadRequest("id must be 1-64 letters, digits, '.', '_' or '-'")
    requested_by = obj.get("requested_by", "")
    if not isinstance(requested_by, str) or len(requested_by) > 200:
        raise BadRequest("requested_by must be a short string")
    return AttachRequest(
        id=request_id,
        first_step=_int_field(obj, "first_step", 0, _MAX_STEP),
        steps=_int_field(obj, "steps", 1, rundir.MAX_ATTACH_STEPS),
        created_ns=_int_field(obj, "created_ns", 0, 2**63 - 1),
        requested_by=requested_by,
    )


def parse_request(data: bytes) -> AttachRequest:
    """Decode and validate a request file's bytes."""
    if len(data) > rundir.MAX_REQUEST_BYTES:
        raise BadRequest(f"larger than {rundir.MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"not valid JSON ({type(e).__name__})") from None
    return validate_request(obj)


def read_request_file(path: Path) -> bytes:
    """The request file's bytes, refusing anything but a small regular file.

    ``O_NOFOLLOW`` refuses a symlink at the last component (someone pointing the
    request at another file); the size is checked on the open descriptor, so a
    file swapped in between the check and the read cannot make us read more.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if os.path.islink(path):
            raise BadRequest("the request file is a symlink") from None
        raise BadRequest(f"cannot open it ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadRequest("not a regular file")
        if st.st_size > rundir.MAX_REQUEST_BYTES:
            raise BadRequest(f"larger than {rundir.MAX_REQUEST_BYTES} bytes")
        return os.read(fd, rundir.MAX_REQUEST_BYTES + 1)
    finally:
        os.close(fd)


# offer(request) -> None when accepted, else the reason it is refused.
Offer = Callable[[AttachRequest], "str | None"]


class ControlChannel:
    """One rank's side of the attach channel; every method but ``post`` runs on the recorder."""

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        world_size: int,
        faults: Faults,
        *,
        start_ns: int,
        current_step: Callable[[], int],
        capturing: Callable[[], bool],
        offer: Offer,
        poll_s: float = 0.5,
        beat_s: float = 1.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.world_size = world_size
        self.faults = faults
        self.start_ns = start_ns
        self._current_step = current_step
        self._capturing = capturing
        self._offer = offer
        self.poll_s = poll_s
        self.beat_s = beat_s
        self._request_path = rundir.request_path(self.run_dir)
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last read
        self._handled: set[str] = set()
        self._events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        # (ts_ns, step) of the last beats: the rate spans ~3 s, recent enough that a
        # start-up pause does not make it look slow (a slow rate shortens attach's lead).
        self._beats: deque[tuple[int, int]] = deque(maxlen=4)
        self._host = socket.gethostname()
        self._next_poll = 0.0
        self._next_beat = 0.0
        self.polls = 0  # for tests and the overhead benchmark
        self.flush_wanted = False

    # --- any thread ---

    def post(self, request: AttachRequest, state: str, **fields: Any) -> None:
        """Record a state change of ``request``; the recorder writes the ack next tick."""
        self._events.append(
            {
                "id": request.id,
                "state": state,
                "first_step": request.first_step,
                "last_step": request.last_step,
                "ts_ns": time.time_ns(),
                **fields,
            }
        )

    # --- recorder thread ---

    @property
    def disabled(self) -> bool:
        return self.faults.disabled("attach")

    def open(self) -> None:
        """Make ``control/`` and forget this rank's answers from an earlier run there."""
        cdir = rundir.control_dir(self.run_dir)
        cdir.mkdir(exist_ok=True)
        if cdir.is_symlink() or not cdir.is_dir():
            raise RuntimeError(f"{cdir} is not a plain directory")
        for p in (rundir.ack_path(self.run_dir, self.rank),):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.beat()

    def next_deadline(self) -> float:
        return min(self._next_poll, self._next_beat)

    def tick(self, now: float) -> None:
        if self.disabled:
            return
        try:
            if now >= self._next_poll:
                self._next_poll = now + self.poll_s
                self.poll()
            if now >= self._next_beat:
                self._next_beat = now + self.beat_s
                self.beat()
        except Exception as e:
            self.faults.disable("attach", e)

    def poll(self) -> None:
        self.polls += 1
        try:
            st = os.lstat(self._request_path)
        except FileNotFoundError:
            return
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._seen:
            return
        self._seen = key
        try:
            if stat.S_ISLNK(st.st_mode):
                raise BadRequest("the request file is a symlink")
            request = parse_request(read_request_file(self._request_path))
        except BadRequest as e:
            self._ignore(f"mtime {st.st_mtime_ns}", str(e))
            return
        if request.id in self._handled:
            return
        self._handled.add(request.id)
        if request.created_ns < self.start_ns - _CLOCK_SLACK_NS:
            # Left over from an earlier job in this run directory: never act on it.
            self._ignore(request.id, "written before this rank's collector started")
            return
        reason = self._offer(request)
        if reason is None:
            self.post(request, "accepted")
        else:
            self._ignore(request.id, reason)
            self.post(request, "refused", reason=reason)
        # The recorder flushes right away: the command is waiting for this answer.
        self.flush_wanted = True

    def _ignore(self, what: str, reason: str) -> None:
        # Part names differ per request, so each ignored request gets its own log line.
        self.faults.report(f"attach request {what}", f"ignored: {reason}")

    def write_acks(self) -> None:
        if not self._events:
            return
        latest: dict[str, Any] | None = None
        while self._events:
            latest = self._events.popleft()
            if latest["state"] in ("done", "refused", "failed"):
                self._history.append(latest)
        assert latest is not None
        ack = {"schema": rundir.ACK_SCHEMA, "rank": self.rank, **latest}
        ack["history"] = list(self._history)
        rundir.write_json_atomic(rundir.ack_path(self.run_dir, self.rank), ack)

    def beat(self, state: str | None = None) -> None:
        now_ns = time.time_ns()
        step = int(self._current_step())
        self._beats.append((now_ns, step))
        old_ns, old_step = self._beats[0]
        rate = (step - old_step) * 1e9 / (now_ns - old_ns) if now_ns > old_ns else None
        heartbeat = {
            "schema": rundir.HEARTBEAT_SCHEMA,
            "rank": self.rank,
            "world_size": self.world_size,
            "host": self._host,
            "pid": os.getpid(),
            "start_ns": self.start_ns,
            "ts_ns": now_ns,
            "step": step,
            "steps_per_s": None if rate is None else round(rate, 3),
            "state": state or ("capturing" if self._capturing() else "running"),
        }
        # No fsync: rewritten every second, a lost one is superseded by the next.
        rundir.write_json_atomic(
            rundir.heartbeat_path(self.run_dir, self.rank), heartbeat, fsync=False
        )

    def close(self) -> None:
        """The collector stops: last answers, and a heartbeat that says so."""
        if self.disabled:
            return
        try:
            self.write_acks()
            self.beat("stopped")
        except Exception as e:
            self.faults.disable("attach", e)
