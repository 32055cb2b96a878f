"""The live state of a run directory, read incrementally: what ``rankscope metrics`` serves.

``RunTail(run_dir).refresh()`` reads what every rank appended to its light-layer
files since the last call and returns a ``Snapshot``: one ``RankLive`` per rank
(its last step and step time, DataLoader wait, arrival lag at the latest
collectives, state, GPU telemetry, the whole-run straggler verdict) and a few
run-wide figures. Nothing here serves HTTP or knows Prometheus
(``export.prometheus`` turns a snapshot into metric families).

Bounded memory and work whatever the run's length: each JSONL file is read from
where the previous refresh stopped, never more than its tail bytes
(``TAIL_BYTES``) per refresh (a file that grew further is skipped ahead to its
tail, the torn first line dropped); only complete lines are decoded (a line
still being written waits for the next refresh); each rank keeps its last
``STEP_TAIL`` steps, ``COLLECTIVE_TAIL`` collectives and ``THROTTLE_TAIL``
telemetry samples. A file replaced or truncated (``rankscope run --overwrite``)
is read again from its tail, and what was kept of it dropped. The straggler
verdict (``analysis.wholerun``, the whole-run rule over the tails) is recomputed
at most every ``verdict_every_s``, and no more often than keeps it under
``VERDICT_CPU_SHARE`` of the exporter's time.

Arrival lag (``RankLive.lag_s``): in the process group most ranks logged
(point-to-point records aside), at the latest instance every member logged,
``arrival - first arrival`` with ``arrival = enqueue_ns - clock_offset_ns`` (rank
0's clock); ``lag_median_s`` is the median over the last ``LAG_INSTANCES`` such
instances. Rank state: ``stalled`` (its progress file says so), ``stopped`` (its
progress file, heartbeat or manifest says it ended, or the job has exited),
``lost`` (no heartbeat for ``HEARTBEAT_STALE_S`` and no word that it stopped),
``running``, else ``unknown`` (no progress file nor heartbeat yet).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from rankscope.profiler import evidence, records, rundir, safeio

TAIL_BYTES = {"steps": 96 << 10, "collectives": 192 << 10, "telemetry": 64 << 10}
STEP_TAIL = 256
COLLECTIVE_TAIL = 1024
THROTTLE_TAIL = 256
LAG_INSTANCES = 32
HEARTBEAT_STALE_S = 15.0
VERDICT_CPU_SHARE = 0.1
STATES = ("running", "stalled", "stopped", "lost", "unknown")
# pg: the process group's code in ``RunTail``'s vocabulary; duration_ms NaN: not timed
COLL_DTYPE = np.dtype(
    [("pg", np.int64), ("seq", np.int64), ("enqueue_ns", np.int64), ("duration_ms", np.float64)]
)
_FILE = re.compile(r"^rank(\d+)\.(steps|collectives|telemetry)\.jsonl$")
_META = re.compile(r"^rank(\d+)\.meta\.json$")
_NS = 1e9


class TailFile:
    """The complete lines appended to one file since the last ``read``, at most ``tail`` bytes."""

    def __init__(self, path: Path, tail: int) -> None:
        self.path = path
        self.tail = tail
        self.offset = 0
        self.identity: tuple[int, int] | None = None
        self.partial = b""
        self.drop_first = False  # the next bytes start inside a line
        self.restarts = 0  # times the file was replaced or truncated (its lines start over)

    def read(self) -> list[bytes]:
        try:
            fd = safeio.open_regular(self.path)
        except OSError:
            return []
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino)
            if identity != self.identity or st.st_size < self.offset:
                if self.identity is not None:
                    self.restarts += 1
                self.identity, self.offset, self.partial = identity, 0, b""
                self.drop_first = False
            if st.st_size - self.offset > self.tail:
                self.offset, self.partial = st.st_size - self.tail, b""
                self.drop_first = True
            size = st.st_size - self.offset
            data = os.pread(fd, size, self.offset) if size > 0 else b""
        except OSError:
            return []
        finally:
            os.close(fd)
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if self.drop_first and lines:
            lines.pop(0)
            self.drop_first = False
        if len(self.partial) > safeio.MAX_LINE_BYTES:
            self.partial, self.drop_first = b"", True
        return [ln for ln in lines if ln.strip()]


@dataclass
class _Rank:
    """What the exporter keeps of one rank between refreshes."""

    rank: int
    files: dict[str, TailFile] = field(default_factory=dict)
    steps: deque[records.StepRecord] = field(default_factory=lambda: deque(maxlen=STEP_TAIL))
    # the last COLLECTIVE_TAIL collectives (point-to-point left out), compact: COLL_DTYPE rows
    colls: np.ndarray = field(default_factory=lambda: np.zeros(0, COLL_DTYPE))
    throttle: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=THROTTLE_TAIL))
    sample: dict[str, Any] | None = None  # the latest telemetry sample
    meta: dict[str, Any] = field(default_factory=dict)
    meta_mtime: int = -1
    restarts: dict[str, int] = field(default_factory=dict)  # per file kind, as last seen

    def lines(self, kind: str) -> list[bytes]:
        """The new lines of one of its files; what was kept of it is dropped if it started over."""
        tail = self.files[kind]
        lines = tail.read()
        if tail.restarts != self.restarts.setdefault(kind, tail.restarts):
            self.restarts[kind] = tail.restarts
            if kind == "steps":
                self.steps.clear()
            elif kind == "collectives":
                self.colls = np.zeros(0, COLL_DTYPE)
            else:
                self.throttle.clear()
                self.sample = None
        return lines


@dataclass(frozen=True)
class RankLive:
    """One rank's live figures (None: not known yet). Times in seconds."""

    rank: int
    host: str
    last_step: int | None = None
    step_s: float | None = None  # the last step's duration
    step_median_s: float | None = None  # over the rank's last STEP_TAIL steps
    data_wait_s: float | None = None  # DataLoader wait in the last step
    data_wait_median_s: float | None = None
    lag_s: float | None = None  # arrival lag at the latest collective every member logged
    lag_median_s: float | None = None
    state: str = "unknown"  # one of STATES
    heartbeat_age_s: float | None = None
    straggler: bool | None = None  # the whole-run rule's verdict (None: no verdict yet)
    straggler_excess_s: float | None = None  # its excess per step, when a straggler
    gpu: dict[str, float] = field(default_factory=dict)  # telemetry field -> latest value


@dataclass(frozen=True)
class Snapshot:
    """Every rank's ``RankLive`` and the run-wide figures, at one refresh."""

    ranks: list[RankLive]
    world_size: int | None
    finished: bool
    exit_code: int | None
    verdict_steps: int  # steps the straggler verdict covered (0: none)
    verdict_age_s: float | None
    refresh_s: float  # wall time this refresh took


_step_decoder = msgspec.json.Decoder(records.StepRecord)
_coll_decoder = msgspec.json.Decoder(records.CollectiveRecord)


class _Throttle(msgspec.Struct):
    ts_ns: int
    throttle_reasons: int | float | None = None


_throttle_decoder = msgspec.json.Decoder(_Throttle)


def _decode_steps(lines: list[bytes]) -> list[records.StepRecord]:
    out = []
    for raw in lines[-STEP_TAIL:]:  # older lines would fall out of the tail at once
        try:
            out.append(_step_decoder.decode(raw))
        except (msgspec.MsgspecError, ValueError):
            try:  # the slow path checks the bounds (and repairs what it can)
                out.append(records.decode(raw, records.StepRecord))
            except records.BadRecord:
                continue  # a header line or a bad row: the report names those, not the exporter
    return out


def _decode_colls(lines: list[bytes], pg_code: dict[str, int]) -> np.ndarray:
    rows = []
    for raw in lines[-COLLECTIVE_TAIL:]:
        try:
            c = _coll_decoder.decode(raw)
        except (msgspec.MsgspecError, ValueError):
            continue
        if not c.p2p:
            code = pg_code.setdefault(c.pg, len(pg_code))
            dur = np.nan if c.duration_ms is None else float(c.duration_ms)
            rows.append((code, c.seq, c.enqueue_ns, dur))
    return np.array(rows, COLL_DTYPE)


def _decode_samples(lines: list[bytes]) -> tuple[list[tuple[int, int]], dict[str, Any] | None]:
    """(ts_ns, throttle reasons) of the lines that have them, and the last sample whole."""
    throttle = []
    for raw in lines[-THROTTLE_TAIL:]:
        try:
            t = _throttle_decoder.decode(raw)
        except (msgspec.MsgspecError, ValueError):
            continue
        if isinstance(t.throttle_reasons, int | float) and t.throttle_reasons == t.throttle_reasons:
            throttle.append((t.ts_ns, int(t.throttle_reasons)))
    for raw in reversed(lines):
        try:
            obj = records.parse(raw)
        except records.BadRecord:
            continue
        if isinstance(obj, dict) and "schema" not in obj:
            sample = rundir.clean_sample(obj)
            if sample is not None:
                return throttle, sample
    return throttle, None


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


class RunTail:
    """A run directory read incrementally (module docstring); ``refresh()`` gives a Snapshot."""

    def __init__(self, run_dir: Path, *, verdict_every_s: float = 5.0) -> None:
        self.run_dir = Path(run_dir)
        self.verdict_every_s = verdict_every_s
        self._ranks: dict[int, _Rank] = {}
        self._pg_code: dict[str, int] = {}  # process group name -> code in COLL_DTYPE rows
        self._verdict: dict[int, float] = {}  # straggler rank -> excess s per step
        self._verdict_ranks: set[int] = set()  # ranks the verdict judged
        self._verdict_steps = 0
        self._verdict_at: float | None = None
        self._verdict_cost = 0.0  # seconds the latest verdict took

    # --- reading -----------------------------------------------------------------

    def _scan(self) -> None:
        """Find ranks and files new since the last scan (one directory listing)."""
        with contextlib.suppress(OSError), os.scandir(self.run_dir) as entries:
            for e in entries:
                m = _FILE.match(e.name)
                if m:
                    rank, kind = int(m.group(1)), m.group(2)
                    r = self._ranks.setdefault(rank, _Rank(rank))
                    if kind not in r.files:
                        r.files[kind] = TailFile(Path(e.path), TAIL_BYTES[kind])
                    continue
                m = _META.match(e.name)
                if m:
                    self._ranks.setdefault(int(m.group(1)), _Rank(int(m.group(1))))

    def _read_rank(self, r: _Rank) -> None:
        if "steps" in r.files:
            r.steps.extend(_decode_steps(r.lines("steps")))
        if "collectives" in r.files:
            new = _decode_colls(r.lines("collectives"), self._pg_code)
            if len(new):
                r.colls = np.concatenate([r.colls, new])[-COLLECTIVE_TAIL:]
        if "telemetry" in r.files:
            throttle, sample = _decode_samples(r.lines("telemetry"))
            r.throttle.extend(throttle)
            if sample is not None:
                r.sample = sample
        path = rundir.rank_meta_path(self.run_dir, r.rank)
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return
        if mtime != r.meta_mtime:
            try:
                meta = rundir.read_json(path)
            except (OSError, ValueError):
                return
            if isinstance(meta, dict):
                r.meta, r.meta_mtime = meta, mtime

    # --- figures -----------------------------------------------------------------

    def _offset(self, r: _Rank) -> int:
        off = r.meta.get("clock_offset_ns")
        return off if type(off) is int else 0

    def _lags(self) -> dict[int, tuple[float, float]]:
        """rank -> (lag at the latest common instance, median over LAG_INSTANCES), in s."""
        members: dict[int, list[_Rank]] = {}
        for r in self._ranks.values():
            for code in set(r.colls["pg"][-4 * LAG_INSTANCES :].tolist()):
                members.setdefault(code, []).append(r)
        if not members:
            return {}
        pg = max(members, key=lambda c: (len(members[c]), -c))
        ranks = members[pg]
        if len(ranks) < 2:
            return {}
        seqs, arrivals = [], []
        for r in ranks:
            rows = r.colls[r.colls["pg"] == pg]
            seqs.append(rows["seq"])
            arrivals.append(rows["enqueue_ns"] - self._offset(r))
        latest = min(int(q.max()) for q in seqs)
        oldest = max(int(q.min()) for q in seqs)
        wanted = np.arange(max(oldest, latest - 4 * LAG_INSTANCES + 1), latest + 1)
        table = np.full((len(ranks), len(wanted)), -1, np.int64)
        for k, (q, a) in enumerate(zip(seqs, arrivals, strict=True)):
            pos = np.searchsorted(q, wanted) if np.all(np.diff(q) >= 0) else None
            if pos is None:  # not in issue order: look each up
                index = {int(x): int(v) for x, v in zip(q.tolist(), a.tolist(), strict=True)}
                table[k] = [index.get(int(w), -1) for w in wanted.tolist()]
                continue
            pos = np.minimum(pos, len(q) - 1)
            table[k] = np.where(q[pos] == wanted, a[pos], -1)
        table = table[:, (table >= 0).all(axis=0)][:, -LAG_INSTANCES:]
        if not table.shape[1]:
            return {}
        lags = (table - table.min(axis=0)) / _NS
        return {
            r.rank: (float(lags[k, -1]), float(np.median(lags[k]))) for k, r in enumerate(ranks)
        }

    def _light_ranks(self) -> list[Any]:
        from rankscope.dashboard.analysis.wholerun import LightRank, coll_keys

        out = []
        for r in sorted(self._ranks.values(), key=lambda x: x.rank):
            if not r.steps or not len(r.colls):
                continue
            steps = list(r.steps)
            colls = r.colls
            tel = list(r.throttle)
            out.append(
                LightRank(
                    rank=r.rank,
                    step=np.array([s.step for s in steps], np.int64),
                    start_ns=np.array([s.start_ns for s in steps], np.int64),
                    end_ns=np.array([s.end_ns for s in steps], np.int64),
                    data_ns=np.array([-1 if s.data_ns is None else s.data_ns for s in steps]),
                    runq_ns=np.array([-1 if s.runq_ns is None else s.runq_ns for s in steps]),
                    cpu_ns=np.array([-1 if s.cpu_ns is None else s.cpu_ns for s in steps]),
                    capture=np.array(
                        [
                            0 if s.capture is None else rundir.CAPTURE_PHASES.index(s.capture) + 1
                            for s in steps
                        ],
                        np.int64,
                    ),
                    coll_key=coll_keys(colls["pg"], colls["seq"]),
                    enqueue_ns=colls["enqueue_ns"].copy(),
                    duration_ms=colls["duration_ms"].copy(),
                    tel_ts_ns=np.array([t[0] for t in tel], np.int64),
                    throttle=np.array([t[1] for t in tel], np.int64),
                    clock_offset_ns=self._offset(r),
                )
            )
        return out

    def _update_verdict(self, now: float) -> None:
        # Never more than VERDICT_CPU_SHARE of the exporter's time on the verdict
        # (1,024 ranks: ~2 s a verdict on a loaded core).
        every = max(self.verdict_every_s, self._verdict_cost / VERDICT_CPU_SHARE)
        if self._verdict_at is not None and now - self._verdict_at < every:
            return
        from rankscope.dashboard.analysis.wholerun import whole_run

        self._verdict_at = now
        started = time.perf_counter()
        try:
            self._compute_verdict(whole_run)
        finally:
            self._verdict_cost = time.perf_counter() - started

    def _compute_verdict(self, whole_run: Any) -> None:
        light = self._light_ranks()
        has_gpu = any(
            str(r.meta.get("device_name") or "cpu") != "cpu" for r in self._ranks.values()
        )
        try:
            result = whole_run(light, has_gpu) if len(light) >= 2 else None
        except (ValueError, IndexError, FloatingPointError):
            result = None  # tails that do not line up yet: no verdict this time
        if result is None:
            self._verdict, self._verdict_ranks, self._verdict_steps = {}, set(), 0
            return
        self._verdict = {v.rank: v.excess_ms_per_step / 1e3 for v in result.diagnosis.stragglers}
        self._verdict_ranks = set(result.ranks)
        self._verdict_steps = result.n_steps

    def _state(self, r: _Rank, hb: dict[str, Any] | None, finished: bool, now_ns: int) -> str:
        try:
            progress = evidence.read_progress(self.run_dir, r.rank)
        except (OSError, msgspec.MsgspecError):
            progress = None
        if progress is not None and progress.state == "stalled":
            return "stalled"
        ended = (
            finished
            or (progress is not None and progress.state == "stopped")
            or (hb is not None and hb.get("state") == "stopped")
            or r.meta.get("end_ns") is not None
        )
        if ended:
            return "stopped"
        if hb is not None and (now_ns - hb["ts_ns"]) / _NS > HEARTBEAT_STALE_S:
            return "lost"
        if progress is not None or hb is not None:
            return "running"
        return "unknown"

    def refresh(self) -> Snapshot:
        t0 = time.perf_counter()
        self._scan()
        for r in self._ranks.values():
            self._read_rank(r)
        try:
            manifest = rundir.read_json(self.run_dir / rundir.RUN_MANIFEST)
        except (OSError, ValueError):
            manifest = None
        manifest = manifest if isinstance(manifest, dict) else {}
        exit_code = manifest.get("exit_code")
        exit_code = exit_code if type(exit_code) is int else None
        world = manifest.get("world_size")
        heartbeats = rundir.read_heartbeats(self.run_dir)
        now_ns = time.time_ns()
        lags = self._lags()
        self._update_verdict(time.monotonic())
        out = []
        for rank in sorted(self._ranks):
            r = self._ranks[rank]
            hb = heartbeats.get(rank)
            host = str(r.meta.get("host") or (hb or {}).get("host") or "")
            steps = list(r.steps)
            last = steps[-1] if steps else None
            durations = [(s.end_ns - s.start_ns) / _NS for s in steps]
            waits = [s.data_ns / _NS for s in steps if s.data_ns is not None]
            lag = lags.get(rank)
            judged = rank in self._verdict_ranks
            out.append(
                RankLive(
                    rank=rank,
                    host=host,
                    last_step=None if last is None else last.step,
                    step_s=None if last is None else durations[-1],
                    step_median_s=_median(durations),
                    data_wait_s=None
                    if last is None or last.data_ns is None
                    else last.data_ns / _NS,
                    data_wait_median_s=_median(waits),
                    lag_s=None if lag is None else lag[0],
                    lag_median_s=None if lag is None else lag[1],
                    state=self._state(r, hb, exit_code is not None, now_ns),
                    heartbeat_age_s=None if hb is None else max(0.0, (now_ns - hb["ts_ns"]) / _NS),
                    straggler=(rank in self._verdict) if judged else None,
                    straggler_excess_s=self._verdict.get(rank),
                    gpu={
                        k: float(v)
                        for k, v in (r.sample or {}).items()
                        if k != "ts_ns" and isinstance(v, int | float) and not isinstance(v, bool)
                    },
                )
            )
        return Snapshot(
            ranks=out,
            world_size=world if type(world) is int else None,
            finished=exit_code is not None,
            exit_code=exit_code,
            verdict_steps=self._verdict_steps,
            verdict_age_s=None if self._verdict_at is None else time.monotonic() - self._verdict_at,
            refresh_s=time.perf_counter() - t0,
        )
