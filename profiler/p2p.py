"""Point-to-point sends and receives of gloo process groups, timed by the collector.

gloo's flight recorder logs collectives only: a pipeline's ``send``/``recv`` (and
``isend``/``irecv``, ``batch_isend_irecv``, ``torch.distributed.pipelining``) leave
no record in it. ``P2PLog`` times them itself and its rows join the flight
recorder's in ``rank{R}.collectives.jsonl`` with ``"source": "collector"``:

- ``enqueue_ns``: when the job called ``isend``/``irecv`` (``send``/``recv`` call them);
- ``wait_start_ns`` / ``end_ns``: when the training thread entered and left
  ``Work.wait`` for it, the time it was blocked until its peer came (a receive
  waits for the send; gloo's send waits until the data is handed over);
- ``peer``: the other rank (global rank; a receive from any source learns it when
  it is waited for), ``bytes``, ``pg``/``pg_desc``, and ``seq``: this rank's own
  count of point-to-point operations in the group, in the order they are written
  (not comparable across ranks).

A send or receive never waited for (the job polls ``is_completed()``) is written
once it has completed, without wait times; one still in flight when the collector
stops is written with ``"state": "scheduled"``. ``snapshot()`` gives the hang
evidence (``rank{R}.hang.json``) the operations not completed when it is taken:
those in flight (and since when the rank waits for each) and the last few whose
wait raised (a timeout): whom a stuck rank waits for.

How: ``install()`` wraps two methods of the classes, once per process:
``ProcessGroup.send``/``recv``/``recv_anysource`` (which ``isend``/``irecv``
call) and ``Work.wait``. The functions the job holds keep their identity
(``P2POp`` checks ``op is isend``), and every other backend passes through
untouched (NCCL's flight recorder logs its own sends and receives). On the
training thread a send or receive only stores a tuple (its row is made on the
recorder thread), and every other ``Work.wait`` called from Python pays one dict
lookup (about 0.15 us). Anything
that goes wrong in rankscope's part is swallowed: the job's call always proceeds
and returns what it would have. Memory is bounded: at most ``PENDING_MAX``
operations in flight are followed and ``DONE_MAX`` rows wait for a flush; past
them operations are counted as ``dropped`` (``describe()``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from typing import Any

PENDING_MAX = 4096
FAILED_KEEP = 16  # the last sends and receives whose wait raised (a timeout, a peer gone)
DONE_MAX = 100_000
SWEEP_AFTER_NS = 1_000_000_000  # an un-waited operation is checked for completion after this

_log: P2PLog | None = None
_installed = False
_lock = threading.Lock()


class P2PLog:
    """The current rank's gloo sends and receives (module docstring)."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._pending: dict[int, tuple[Any, ...]] = {}
        self._done: deque[tuple[Any, ...]] = deque()
        self._seq: dict[str, int] = {}
        # (id(pg), on CPU) -> (pg, whether its backend there is gloo)
        self._gloo: dict[tuple[int, bool], tuple[Any, bool]] = {}
        self._peers: dict[tuple[int, int], int] = {}
        self._waiting: dict[int, int] = {}  # id(work) -> when the wait under way began
        self._failed: deque[tuple[Any, ...]] = deque(maxlen=FAILED_KEEP)
        self.ops = 0
        self.dropped = 0

    # --- the training thread (through the wrappers): as little as can be ---

    def _is_gloo(self, pg: Any, tensor: Any) -> bool:
        key = (id(pg), tensor.is_cpu)
        hit = self._gloo.get(key)
        if hit is not None and hit[0] is pg:
            return hit[1]
        try:
            backend = pg._get_backend(tensor.device)
            gloo = type(backend).__name__ == "ProcessGroupGloo"
        except Exception:
            gloo = False
        if len(self._gloo) < 1024:
            self._gloo[key] = (pg, gloo)
        return gloo

    def started(self, pg: Any, name: str, args: tuple[Any, ...], work: Any, t0: int) -> None:
        tensors = args[0] if args else None
        if work is None or type(tensors) is not list or not tensors:
            return
        if not self._is_gloo(pg, tensors[0]):
            return
        if len(self._pending) >= PENDING_MAX or len(self._done) >= DONE_MAX:
            self.dropped += 1
            return
        nbytes = 0
        for t in tensors:
            nbytes += t.numel() * t.element_size()
        peer = args[1] if name != "recv_anysource" and len(args) > 1 else -1
        # (work, group, name, bytes, peer in the group, called at): the row is made on
        # the recorder thread (``drain``)
        self._pending[id(work)] = (work, pg, name, nbytes, peer, t0)
        self.ops += 1

    def waited(self, work: Any, t0: int, t1: int, ok: bool) -> None:
        hit = self._pending.pop(id(work), None)
        if hit is None:
            return
        source = -1
        if hit[2] == "recv_anysource" and ok:
            with contextlib.suppress(Exception):
                source = int(work._source_rank())
        # the work (and the tensors it holds) is let go now, not at the next flush
        done = ((None, *hit[1:]), t0, t1, "completed" if ok else "failed", source)
        self._done.append(done)
        if not ok:
            self._failed.append(done)

    # --- any thread: the hang evidence (``rankscope.profiler.progress``) ---

    def snapshot(self) -> list[dict[str, Any]]:
        """The sends and receives not completed now, oldest first: those in flight (with
        when the wait for each began, if one is under way) and the last ones whose wait
        raised. For ``rank{R}.hang.json``: whom a stuck rank waits for."""
        out = []
        for key, hit in list(self._pending.items()):
            row = self._entry(hit, "in_flight")
            row["wait_start_ns"] = self._waiting.get(key)
            out.append(row)
        for hit, t0, t1, _, src in list(self._failed):
            row = self._entry(hit, "failed", src)
            row["wait_start_ns"], row["end_ns"] = t0, t1
            out.append(row)
        out.sort(key=lambda r: r["enqueue_ns"])
        return out

    def _entry(self, hit: tuple[Any, ...], state: str, src: int = -1) -> dict[str, Any]:
        _, pg, name, nbytes, peer, t0 = hit
        return {
            "pg": str(getattr(pg, "group_name", "")),
            "pg_desc": str(getattr(pg, "group_desc", "")),
            "name": "send" if name == "send" else "recv",
            "peer": self._global(pg, src if name == "recv_anysource" else peer),
            "bytes": int(nbytes),
            "enqueue_ns": t0,
            "state": state,
            "wait_start_ns": None,
            "end_ns": None,
        }

    # --- the recorder thread ---

    def _global(self, pg: Any, peer: int) -> int | None:
        if type(peer) is not int or peer < 0:
            return None
        key = (id(pg), peer)
        known = self._peers.get(key)
        if known is None:
            try:
                known = int(self._torch.distributed.get_global_rank(pg, peer))
            except Exception:
                known = peer
            if len(self._peers) < 65536:
                self._peers[key] = known
        return known

    def _row(
        self, hit: tuple[Any, ...], wait_ns: int | None, end_ns: int | None, state: str, src: int
    ) -> dict[str, Any]:
        """The ``collectives.jsonl`` row of an operation (the module docstring)."""
        e = self._entry(hit, state, src)
        seq = self._seq.get(e["pg"], 0) + 1
        self._seq[e["pg"]] = seq
        row = {
            "seq": seq,
            "pg": e["pg"],
            "pg_desc": e["pg_desc"],
            "name": e["name"],
            "p2p": True,
            "bytes": e["bytes"],
            "enqueue_ns": e["enqueue_ns"],
            "start_ns": None,
            "end_ns": end_ns,
            "duration_ms": None,
            "state": state,
            "peer": e["peer"],
            "source": "collector",
        }
        if wait_ns is not None:
            row["wait_start_ns"] = wait_ns
        return row

    def drain(self, final: bool = False) -> list[dict[str, Any]]:
        """The rows finished since the last call (with ``final``: every row left), in
        the order the job called them."""
        now = time.time_ns()
        for key, hit in list(self._pending.items()):
            if not final and now - hit[5] < SWEEP_AFTER_NS:
                continue
            try:
                done = bool(hit[0].is_completed())
            except Exception:
                done = False
            if (done or final) and self._pending.pop(key, None) is not None:
                state = "completed" if done else "scheduled"
                self._done.append(((None, *hit[1:]), None, None, state, -1))
        finished = []
        while self._done:
            finished.append(self._done.popleft())
        finished.sort(key=lambda f: f[0][5])
        return [self._row(hit, t0, t1, state, src) for hit, t0, t1, state, src in finished]

    def describe(self) -> dict[str, Any]:
        """For the rank manifest: where point-to-point rows come from and how many."""
        return {
            "source": "collector",
            "backends": ["gloo"],
            "ops": self.ops,
            "dropped": self.dropped,
        }


def install(torch: Any) -> P2PLog | None:
    """Wrap the classes (once per process) and make a new log the current one."""
    global _log, _installed
    try:  # through the job's torch module: this module imports no torch itself
        c10d = torch._C._distributed_c10d
        ProcessGroup, Work = c10d.ProcessGroup, c10d.Work
    except Exception:
        return None
    with _lock:
        if not _installed:
            _installed = True
            for name in ("send", "recv", "recv_anysource"):
                if hasattr(ProcessGroup, name):
                    setattr(ProcessGroup, name, _wrap_p2p(getattr(ProcessGroup, name), name))
            Work.wait = _wrap_wait(Work.wait)
        _log = P2PLog(torch)
        return _log


def snapshot() -> list[dict[str, Any]]:
    """``P2PLog.snapshot`` of the current log ([] when none); never raises."""
    log = _log
    if log is None:
        return []
    try:
        return log.snapshot()
    except Exception:
        return []


def close(log: P2PLog | None) -> None:
    """Stop logging into ``log`` (the wrappers stay and pass every call through)."""
    global _log
    with _lock:
        if _log is log:
            _log = None


def _wrap_p2p(original: Any, name: str) -> Any:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time_ns()
        work = original(self, *args, **kwargs)
        log = _log
        if log is not None and not kwargs:
            with contextlib.suppress(Exception):
                log.started(self, name, args, work, t0)
        return work

    return wrapper


def _wrap_wait(original: Any) -> Any:
    @functools.wraps(original)
    def wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        log = _log
        if log is None or id(self) not in log._pending:
            return original(self, *args, **kwargs)
        t0, ok = time.time_ns(), False
        log._waiting[id(self)] = t0
        try:
            result = original(self, *args, **kwargs)
            ok = True
            return result
        finally:
            with contextlib.suppress(Exception):
                log._waiting.pop(id(self), None)
                log.waited(self, t0, time.time_ns(), ok)

    return wait
