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

Hardening: ``control/`` is opened once (``O_DIRECTORY | O_NOFOLLOW``) and every
read and write goes through that descriptor, so replacing ``control/`` by a
symlink never makes a rank read or write outside the run directory; a rank that
sees ``control/`` replaced turns attach off. A request removed before its window
opens is withdrawn (``rankscope attach --cancel`` removes it) and answered
"cancelled". Ignored requests are logged at most ``_LOG_BURST`` times per
``_LOG_WINDOW_S``, then counted.
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

from rankscope.profiler import records, rundir
from rankscope.profiler.faults import Faults

_REQUIRED = ("schema", "id", "command", "first_step", "steps", "created_ns")
_OPTIONAL = ("requested_by", "trigger")
_MAX_TRIGGER_BYTES = 1024
_MAX_STEP = 2**53  # beyond what any job reaches; rejects absurd numbers early
_HISTORY = 16
_HANDLED = 256  # request ids remembered (bounded: someone may write new ids forever)
_LOG_BURST = 10
_LOG_WINDOW_S = 60.0
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
    # Why auto-capture asked (``rankscope.profiler.autocapture``); None from attach.
    trigger: dict[str, Any] | None = None

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
        if self.trigger is not None:
            out["trigger"] = self.trigger
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
    trigger = obj.get("trigger")
    if trigger is not None and (
        not isinstance(trigger, dict)
        or not isinstance(trigger.get("kind"), str)
        or len(json.dumps(trigger)) > _MAX_TRIGGER_BYTES
    ):
        raise BadRequest(
            f"trigger must be an object with a kind, at most {_MAX_TRIGGER_BYTES} bytes"
        )
    return AttachRequest(
        id=request_id,
        first_step=_int_field(obj, "first_step", 0, _MAX_STEP),
        steps=_int_field(obj, "steps", 1, rundir.MAX_ATTACH_STEPS),
        created_ns=_int_field(obj, "created_ns", 0, 2**63 - 1),
        requested_by=requested_by,
        trigger=trigger,
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


def read_request_file(path: Path | str, dir_fd: int | None = None) -> bytes:
    """The request file's bytes, refusing anything but a small regular file.

    ``O_NOFOLLOW`` refuses a symlink at the last component (someone pointing the
    request at another file); the size is checked on the open descriptor, so a
    file swapped in between the check and the read cannot make us read more.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if dir_fd is None and os.path.islink(path):
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
# withdraw(request) -> True when the request was still waiting and is now dropped.
Withdraw = Callable[[AttachRequest], bool]


def write_json_at(dir_fd: int, name: str, obj: Any, *, fsync: bool = True) -> None:
    """``rundir.write_json_atomic`` relative to an open directory (never through a symlink)."""
    tmp = f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    data = rundir.encode_json(obj)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


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
        withdraw: Withdraw | None = None,
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
        self._withdraw = withdraw
        self.poll_s = poll_s
        self.beat_s = beat_s
        self._request_path = rundir.request_path(self.run_dir)
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last read
        self._handled: dict[str, None] = {}  # insertion-ordered, trimmed to _HANDLED
        self._waiting: AttachRequest | None = None  # accepted, its file still there
        self._dir_fd: int | None = None
        self._dir_id: tuple[int, int] | None = None  # (st_dev, st_ino) of control/
        self._log_window_end = 0.0
        self._logged = 0
        self._unlogged = 0
        self._events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        # (ts_ns, step) of the last beats: the rate spans ~3 s, recent enough that a
        # start-up pause does not make it look slow (a slow rate shortens attach's lead).
        self._beats: deque[tuple[int, int]] = deque(maxlen=4)
        self._anchor: tuple[int, int] | None = None  # (end ns, step + 1) of the first step
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
        with contextlib.suppress(FileExistsError):
            cdir.mkdir()
        problem = rundir.control_dir_problem(self.run_dir)
        if problem is not None:
            raise RuntimeError(problem)
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
        self._dir_fd = os.open(cdir, flags)
        st = os.fstat(self._dir_fd)
        self._dir_id = (st.st_dev, st.st_ino)
        ack = rundir.ack_path(self.run_dir, self.rank).name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ack, dir_fd=self._dir_fd)
        # Temporary files this rank left when it was killed mid-write (same pid
        # prefix cannot be told apart, so every stale one of this rank's files goes).
        for name in os.listdir(self._dir_fd):
            if name.startswith(f".rank{self.rank}.") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self._dir_fd)
        self.beat()

    def _check_dir(self) -> int:
        """The control/ descriptor, after checking control/ is still that directory."""
        fd = self._dir_fd
        if fd is None:
            raise RuntimeError("the control channel is not open")
        try:
            st = os.lstat(rundir.control_dir(self.run_dir))
        except OSError as e:
            raise RuntimeError(f"control/ is gone ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode) or (st.st_dev, st.st_ino) != self._dir_id:
            raise RuntimeError("control/ was replaced (by a symlink or another directory)")
        return fd

    def dir_fd(self) -> int:
        """The checked ``control/`` descriptor, for auto-capture's request (recorder thread)."""
        return self._check_dir()

    def next_deadline(self) -> float:
        return min(self._next_poll, self._next_beat)

    def tick(self, now: float, due: float | None = None) -> None:
        """Poll and beat if their time has come by ``due`` (default ``now``); the
        next ones are timed from ``now``. The recorder passes a ``due`` a little
        after ``now`` so that a poll or beat falling just after one of its wake-ups
        is done in it, not in a wake-up of its own."""
        if self.disabled:
            return
        due = now if due is None else due
        try:
            if due >= self._next_poll:
                self._next_poll = now + self.poll_s
                self.poll()
            if due >= self._next_beat:
                self._next_beat = now + self.beat_s
                self.beat()
        except Exception as e:
            self.faults.disable("attach", e)

    def poll(self) -> None:
        self.polls += 1
        fd = self._check_dir()
        try:
            st = os.stat(rundir.REQUEST_FILE, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            self._seen = None
            self._request_removed()
            return
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._seen:
            return
        self._seen = key
        try:
            if stat.S_ISLNK(st.st_mode):
                raise BadRequest("the request file is a symlink")
            if st.st_uid != os.geteuid():
                # control/ may be group-writable on a shared filesystem: only the job's
                # own user decides when its ranks profile (and where the time goes)
                raise BadRequest(f"the request file is owned by uid {st.st_uid}, not this job's")
            request = parse_request(read_request_file(rundir.REQUEST_FILE, dir_fd=fd))
        except BadRequest as e:
            self._ignore(f"mtime {st.st_mtime_ns}", str(e))
            return
        if request.id in self._handled:
            return
        self._handled[request.id] = None
        while len(self._handled) > _HANDLED:
            del self._handled[next(iter(self._handled))]
        if request.created_ns < self.start_ns - _CLOCK_SLACK_NS:
            # Left over from an earlier job in this run directory: never act on it.
            self._ignore(request.id, "written before this rank's collector started")
            return
        reason = self._offer(request)
        if reason is None:
            self._waiting = request
            self.post(request, "accepted")
        else:
            self._ignore(request.id, reason)
            self.post(request, "refused", reason=reason)
        # The recorder flushes right away: the command is waiting for this answer.
        self.flush_wanted = True

    def _request_removed(self) -> None:
        """The accepted request's file is gone: withdraw it if its window has not opened."""
        request, self._waiting = self._waiting, None
        if request is None or self._withdraw is None:
            return
        if self._withdraw(request):
            self.post(request, "cancelled", reason="the request was removed before its window")
            self.flush_wanted = True

    def window_opened(self, request: AttachRequest) -> None:
        """The window of ``request`` began: removing its file no longer cancels it."""
        if self._waiting is not None and self._waiting.id == request.id:
            self._waiting = None

    def _ignore(self, what: str, reason: str) -> None:
        # Rate-limited: someone rewriting a bad request in a loop must not fill the log.
        now = time.monotonic()
        if now >= self._log_window_end:
            if self._unlogged:
                self.faults.log(
                    "attach requests", f"{self._unlogged} more ignored request(s) not logged"
                )
            self._log_window_end = now + _LOG_WINDOW_S
            self._logged = 0
            self._unlogged = 0
        if self._logged < _LOG_BURST:
            self._logged += 1
            self.faults.log(f"attach request {what[:80]}", f"ignored: {reason[:300]}")
        else:
            self._unlogged += 1

    def write_acks(self) -> None:
        if not self._events:
            return
        latest: dict[str, Any] | None = None
        while self._events:
            latest = self._events.popleft()
            if latest["state"] in ("done", "refused", "failed"):
                self._history.append(latest)
        assert latest is not None
        ack = records.convert(
            {"schema": rundir.ACK_SCHEMA, "rank": self.rank, **latest}, records.Ack
        )
        ack.history = list(self._history)
        write_json_at(self._check_dir(), rundir.ack_path(self.run_dir, self.rank).name, ack)

    def training_started(self, ts_ns: int, step: int) -> None:
        """The recorder saw the first finished step: at ``ts_ns`` step ``step`` began."""
        if self._anchor is None:
            self._anchor = (ts_ns, step)

    def beat(self, state: str | None = None) -> None:
        now_ns = time.time_ns()
        step = int(self._current_step())
        if step > 0:
            # Beats from before the first step measure start-up (imports, rendezvous,
            # data loading), not training: a rate through them is several times too
            # slow, and attach's lead from it too short (the ranks passed the chosen
            # step before they read the request). The rate starts from the end of the
            # first finished step.
            while self._beats and self._beats[0][1] == 0:
                self._beats.popleft()
            if not self._beats and self._anchor is not None and self._anchor[0] < now_ns:
                # A job that trained for less than two beats still has a rate: from
                # the end of its first finished step to now.
                self._beats.append(self._anchor)
        self._beats.append((now_ns, step))
        old_ns, old_step = self._beats[0]
        rate = (step - old_step) * 1e9 / (now_ns - old_ns) if now_ns > old_ns else None
        heartbeat = records.Heartbeat(
            rank=self.rank,
            ts_ns=now_ns,
            world_size=self.world_size,
            host=self._host,
            pid=os.getpid(),
            start_ns=self.start_ns,
            step=step,
            steps_per_s=None if rate is None else round(rate, 3),
            state=state or ("capturing" if self._capturing() else "running"),
        )
        # No fsync: rewritten every second, a lost one is superseded by the next.
        name = rundir.heartbeat_path(self.run_dir, self.rank).name
        write_json_at(self._check_dir(), name, heartbeat, fsync=False)

    def close(self) -> None:
        """The collector stops: last answers, and a heartbeat that says so."""
        if self.disabled:
            return
        try:
            self.write_acks()
            self.beat("stopped")
        except Exception as e:
            self.faults.disable("attach", e)
        finally:
            if self._dir_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._dir_fd)
                self._dir_fd = None
