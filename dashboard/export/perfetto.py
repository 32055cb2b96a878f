"""The whole job as one trace for Perfetto (ui.perfetto.dev) or chrome://tracing.

``write_perfetto(analysis, report, path, ...)`` writes Chrome's JSON trace-event
format (``.json``, or gzip-compressed when ``path`` ends in ``.gz``) and returns
an ``ExportSummary``. JSON rather than Perfetto's protobuf: every viewer of the
source traces (Perfetto, chrome://tracing, HTA, a text editor) reads it, it needs
no protobuf package beside the one streamlit pins, and a test can check it with
``json``. Its cost is size (about 140 bytes an event), hence the bound below.

Layout (``pid`` = the rank; timestamps in µs with ns digits, from ``origin_ns``):

- one process per rank, "rank R", with the threads of its source traces: each
  host thread (``tid`` as recorded) with its host ranges, and per GPU stream
  ``GPU d stream s`` (kernels, memcpy, memset) and ``GPU d stream s annotations``;
- ``steps``: a slice per step (the collector's step timer, else the trace's
  ProfilerStep windows);
- ``collectives <pg>``: a slice per matched collective instance on this rank
  (``args``: instance, step, wait_ms, transfer_ms, last_rank), and per instance
  one flow chain (``s`` -> ``t``... -> ``f``, ``cat`` "collective", ``id`` =
  instance + 1) through every rank it was matched on, in order of arrival, so the
  last arrow ends on the rank everyone waited for;
- ``rankscope verdict``: the report's verdict as instants: the straggler (at its
  first analysed step), each stall step, each rotating stall; a hang verdict is a
  global instant;
- NVML/host telemetry: a counter track per field (``C`` events, ``args.value``).

Timestamps are aligned across ranks by ``align.clock_alignment`` (stated in the
file's top-level ``metadata.rankscope.alignment``). Each track is written in time
order (a parent slice before its children). ``max_bytes`` bounds the file: after
each rank the size is extrapolated to every rank and the export is refused
(``RankscopeError``, the partial file removed) past it, before a browser is asked
to open more than it can.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.export.align import Alignment, Method, clock_alignment
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler.errors import RankscopeError

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis
    from rankscope.dashboard.analysis.report import Report
    from rankscope.dashboard.ingest.run import RankData

SCHEMA = "rankscope.perfetto/1"
MAX_BYTES = 1_000_000_000  # about where a browser tab stops opening a JSON trace dependably
# Synthetic thread ids, above any Linux tid (pid_max is at most 2**22).
STEPS_TID = 1_000_000_000
VERDICT_TID = STEPS_TID + 1
COLLECTIVES_TID = STEPS_TID + 100  # + the process group's index
GPU_TID = 1_100_000_000  # + device * 100_000 + stream
GPU_ANN_TID = 1_200_000_000
_DEVICE_STRIDE = 100_000


@dataclass(frozen=True)
class ExportSummary:
    path: str
    bytes: int  # uncompressed JSON
    events: int
    ranks: list[int]
    flows: int  # collective instances linked across ranks
    counters: int  # counter events (telemetry samples x fields)
    alignment: Alignment
    seconds: float


def _us(ns: np.ndarray) -> list[str]:
    """int64 ns -> JSON numbers in µs with all ns digits (no float rounding)."""
    ns = np.asarray(ns, dtype=np.int64)
    whole, frac = np.divmod(ns, 1000)
    return [f"{w}.{f:03d}" for w, f in zip(whole.tolist(), frac.tolist(), strict=True)]


def _js(text: str) -> str:
    return json.dumps(text)


def _meta(kind: str, pid: int, tid: int, args: dict[str, Any]) -> str:
    return json.dumps(
        {"ph": "M", "name": kind, "pid": pid, "tid": tid, "args": args}, separators=(",", ":")
    )


def _slices(
    pid: int,
    tid: int,
    ts: np.ndarray,
    dur: np.ndarray,
    names: list[str],
    name_codes: np.ndarray,
    cat: str | list[str],
    cat_codes: np.ndarray | None = None,
) -> list[str]:
    """``X`` events of one track in time order (longer first at a tie: parents first).

    ``names``/``cat`` are already JSON strings, indexed by the codes.
    """
    if not len(ts):
        return []
    order = np.lexsort((-dur, ts))
    ts, dur, name_codes = ts[order], np.maximum(dur[order], 0), name_codes[order]
    head = f'{{"ph":"X","pid":{pid},"tid":{tid},"ts":'
    if isinstance(cat, str):
        tail = [f',"cat":{cat}}}'] * len(ts)
    else:
        assert cat_codes is not None
        tail = [f',"cat":{cat[c]}}}' for c in cat_codes[order].tolist()]
    return [
        f'{head}{t},"dur":{d},"name":{names[n]}{c}'
        for t, d, n, c in zip(_us(ts), _us(dur), name_codes.tolist(), tail, strict=True)
    ]


class _Bounded:
    """A text sink that counts what it writes and refuses past ``limit`` characters."""

    def __init__(self, f: IO[str], limit: int) -> None:
        self.f, self.limit, self.written, self.events = f, limit, 0, 0

    def events_out(self, lines: Iterable[str]) -> None:
        for line in lines:
            text = (",\n" if self.events else "") + line
            self.f.write(text)
            self.written += len(text)
            self.events += 1
        if self.written > self.limit:
            raise _TooLarge(self.written)

    def raw(self, text: str) -> None:
        self.f.write(text)
        self.written += len(text)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _open(path: Path, compressed: bool) -> IO[str]:
    if compressed:
        return gzip.open(path, "wt", encoding="ascii", compresslevel=6)
    return open(path, "w", encoding="ascii")


def _in_span(ts: np.ndarray, span: tuple[int, int] | None) -> np.ndarray:
    if span is None:
        return np.ones(len(ts), dtype=bool)
    return (ts >= span[0]) & (ts < span[1])


def _step_span(analysis: Analysis, rank: int) -> tuple[int, int] | None:
    w = analysis.windows.get(rank, {})
    bounds = [w[s] for s in analysis.steps if s in w]
    if not bounds:
        return None
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


def _steps_table(rd: RankData, analysis: Analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, start_ns, end_ns): the collector's step timer, else the trace's step windows."""
    marks = rd.step_marks
    if len(marks) and {"step", "start_ns", "end_ns"} <= set(marks.columns):
        ok = (marks["start_ns"] >= 0) & (marks["end_ns"] >= marks["start_ns"])
        return marks["step"][ok], marks["start_ns"][ok], marks["end_ns"][ok]
    w = {s: b for s, b in analysis.windows.get(rd.rank, {}).items() if s >= 0}
    steps = np.asarray(sorted(w), dtype=np.int64)
    return (
        steps,
        np.asarray([w[s][0] for s in steps.tolist()], dtype=np.int64),
        np.asarray([w[s][1] for s in steps.tolist()], dtype=np.int64),
    )


def _telemetry_fields(tel: Table) -> list[str]:
    return [
        c
        for c in tel.columns
        if c not in ("ts_ns", "rank", "step") and tel[c].dtype.kind in "fiu" and len(tel)
    ]


class _RankWriter:
    """One rank's events: its tracks, with its shift and the file's origin applied."""

    def __init__(self, rank: int, shift: int, origin: int, span: tuple[int, int] | None) -> None:
        self.rank, self.shift, self.origin, self.span = rank, shift, origin, span

    def t(self, ns: np.ndarray) -> np.ndarray:
        return np.asarray(ns, dtype=np.int64) - self.shift - self.origin

    def host(self, cpu: Table) -> Iterator[str]:
        if not len(cpu):
            return
        keep = _in_span(cpu["ts"], self.span)
        names = [_js(n) for n in cpu.vocab["name"]]
        cats = [_js(c) for c in cpu.vocab["cat"]]
        tids = cpu["tid"][keep]
        ts, dur = self.t(cpu["ts"][keep]), cpu["dur"][keep]
        codes, cat_codes = cpu["name"][keep], cpu["cat"][keep]
        for tid in sorted(set(tids.tolist())):
            m = tids == tid
            yield _meta("thread_name", self.rank, tid, {"name": f"host thread {tid}"})
            yield _meta("thread_sort_index", self.rank, tid, {"sort_index": 10})
            yield from _slices(self.rank, tid, ts[m], dur[m], names, codes[m], cats, cat_codes[m])

    def gpu(self, gpu: Table, ann: Table) -> Iterator[str]:
        if len(gpu):
            keep = _in_span(gpu["ts"], self.span)
            names = [_js(n) for n in gpu.vocab["name"]]
            kinds = [_js(k) for k in gpu.vocab["kind"]]
            dev = np.maximum(gpu["device"][keep], 0)
            stream = np.maximum(gpu["stream"][keep], 0)
            ts, dur = self.t(gpu["ts"][keep]), gpu["dur"][keep]
            codes, kind = gpu["name"][keep], gpu["kind"][keep]
            for d, s in sorted(set(zip(dev.tolist(), stream.tolist(), strict=True))):
                m = (dev == d) & (stream == s)
                tid = GPU_TID + d * _DEVICE_STRIDE + s
                yield _meta("thread_name", self.rank, tid, {"name": f"GPU {d} stream {s}"})
                yield _meta("thread_sort_index", self.rank, tid, {"sort_index": 20})
                yield from _slices(self.rank, tid, ts[m], dur[m], names, codes[m], kinds, kind[m])
        if len(ann):
            keep = _in_span(ann["ts"], self.span)
            names = [_js(n) for n in ann.vocab["name"]]
            stream = np.maximum(ann["stream"][keep], 0)
            ts, dur, codes = self.t(ann["ts"][keep]), ann["dur"][keep], ann["name"][keep]
            for s in sorted(set(stream.tolist())):
                m = stream == s
                tid = GPU_ANN_TID + s
                label = f"GPU stream {s} annotations"
                yield _meta("thread_name", self.rank, tid, {"name": label})
                yield _meta("thread_sort_index", self.rank, tid, {"sort_index": 21})
                cat = _js("gpu_user_annotation")
                yield from _slices(self.rank, tid, ts[m], dur[m], names, codes[m], cat)

    def steps(self, step: np.ndarray, start: np.ndarray, end: np.ndarray) -> Iterator[str]:
        keep = _in_span(start, self.span)
        step, start, end = step[keep], start[keep], end[keep]
        if not len(step):
            return
        yield _meta("thread_name", self.rank, STEPS_TID, {"name": "steps"})
        yield _meta("thread_sort_index", self.rank, STEPS_TID, {"sort_index": 0})
        names = [_js(f"step {s}") for s in step.tolist()]
        codes = np.arange(len(step))
        yield from _slices(
            self.rank, STEPS_TID, self.t(start), end - start, names, codes, _js("step")
        )

    def telemetry(self, tel: Table) -> Iterator[str]:
        if not len(tel) or "ts_ns" not in tel:
            return
        ok = (tel["ts_ns"] > 0) & _in_span(tel["ts_ns"], self.span)
        order = np.argsort(tel["ts_ns"][ok], kind="stable")
        ts = _us(self.t(tel["ts_ns"][ok][order]))
        for name in _telemetry_fields(tel):
            values = tel[name][ok][order].astype(np.float64)
            head = f'{{"ph":"C","pid":{self.rank},"name":{_js(name)},"ts":'
            for t, v in zip(ts, values.tolist(), strict=True):
                if math.isfinite(v):
                    yield f'{head}{t},"args":{{"value":{_num(v)}}}}}'


def _with_ts(event: dict[str, Any], ts_ns: int) -> str:
    """``event`` as JSON with ``ts`` in µs and every ns digit."""
    (t,) = _us(np.array([ts_ns]))
    return json.dumps(event, separators=(",", ":"))[:-1] + f',"ts":{t}}}'


def _num(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def _collective_tracks(
    collectives: Table, rank: int, shift: int, origin: int
) -> tuple[list[str], dict[int, tuple[int, int]]]:
    """This rank's matched collectives as slices on a track per process group, and
    where each instance's flow point goes: instance -> (tid, aligned start ns)."""
    if not len(collectives):
        return [], {}
    m = collectives["rank"] == rank
    if not m.any():
        return [], {}
    pgs = collectives.vocab["pg"]
    names = collectives.vocab["name"]
    out: list[str] = []
    points: dict[int, tuple[int, int]] = {}
    pg_codes = collectives["pg"][m]
    for code in sorted(set(pg_codes.tolist())):
        sel = np.flatnonzero(m)[pg_codes == code]
        tid = COLLECTIVES_TID + code
        label = f"collectives {pgs[code]}".rstrip() if pgs[code] else "collectives"
        out.append(_meta("thread_name", rank, tid, {"name": label}))
        out.append(_meta("thread_sort_index", rank, tid, {"sort_index": 2}))
        start = collectives["start_ns"][sel] - shift - origin
        dur = np.maximum(np.rint(collectives["dur_ms"][sel] * 1e6).astype(np.int64), 1)
        order = np.lexsort((-dur, start))
        for i in order.tolist():
            row = sel[i]
            inst = int(collectives["instance"][row])
            args = {
                "instance": inst,
                "step": int(collectives["step"][row]),
                "pg": pgs[code],
                "wait_ms": round(float(collectives["wait_ms"][row]), 3),
                "transfer_ms": round(float(collectives["transfer_ms"][row]), 3),
                "last_rank": int(collectives["last_rank"][row]),
            }
            ts, d = _us(np.array([start[i], dur[i]]))
            out.append(
                f'{{"ph":"X","pid":{rank},"tid":{tid},"ts":{ts},"dur":{d},'
                f'"name":{_js(names[int(collectives["name"][row])])},"cat":"collective",'
                f'"args":{json.dumps(args, separators=(",", ":"))}}}'
            )
            points[inst] = (tid, int(start[i]))
    return out, points


def _flows(points: dict[int, dict[int, tuple[int, int]]]) -> tuple[list[str], int]:
    """Per instance seen on 2+ ranks: one chain s -> t... -> f in arrival order."""
    by_instance: dict[int, list[tuple[int, int, int]]] = {}
    for rank, pts in points.items():
        for inst, (tid, ts) in pts.items():
            by_instance.setdefault(inst, []).append((ts, rank, tid))
    out: list[str] = []
    chains = 0
    for inst, nodes in sorted(by_instance.items()):
        if len(nodes) < 2:
            continue
        nodes.sort()
        chains += 1
        for k, (ts, rank, tid) in enumerate(nodes):
            ph = "s" if k == 0 else "f" if k == len(nodes) - 1 else "t"
            (t,) = _us(np.array([ts]))
            out.append(
                f'{{"ph":"{ph}","pid":{rank},"tid":{tid},"ts":{t},"id":{inst + 1},'
                f'"cat":"collective","name":"collective","bp":"e"}}'
            )
    return out, chains


def _verdict_events(
    report: Report, analysis: Analysis, alignment: Alignment, origin: int
) -> list[str]:
    """The report's verdict as instants on each rank's verdict track (a hang: global)."""
    out: list[str] = []

    def step_start(rank: int, step: int | None) -> int | None:
        w = analysis.windows.get(rank, {})
        if step is None:
            starts = [w[s][0] for s in analysis.steps if s in w]
            return min(starts) if starts else None
        return w[step][0] if step in w else None

    def instant(rank: int, ns: int, name: str, args: dict[str, Any]) -> None:
        event = {"ph": "i", "s": "t", "pid": rank, "tid": VERDICT_TID, "name": name}
        out.append(
            _with_ts(event | {"cat": "verdict", "args": args}, ns - alignment.shift(rank) - origin)
        )

    marked: set[int] = set()
    for s in report.stragglers:
        steps = [(x.step, x.lag_ms) for x in s.steps]
        sentence = wording.straggler_verdict(
            s.rank,
            s.cause,
            s.severity,
            s.caused_wait_ms_per_step,
            s.pattern,
            steps,
            s.cause_detail,
        )
        at = step_start(s.rank, None)
        if at is not None:
            marked.add(s.rank)
            instant(
                s.rank,
                at,
                f"straggler: rank {s.rank}",
                {"verdict": sentence, "pattern": s.pattern, "cause": s.cause},
            )
        for step, lag in steps:
            at = step_start(s.rank, step)
            if at is not None:
                marked.add(s.rank)
                instant(
                    s.rank,
                    at,
                    f"stall: step {step}",
                    {"verdict": wording.stall_label(s.rank, lag), "lag_ms": round(lag, 3)},
                )
    rot = report.imbalance.rotating
    for x in rot.steps if rot else []:
        at = step_start(x.rank, x.step)
        if at is not None:
            marked.add(x.rank)
            instant(
                x.rank,
                at,
                f"rotating stall: step {x.step}",
                {"verdict": wording.stall_label(x.rank, x.lag_ms), "lag_ms": round(x.lag_ms, 3)},
            )
    names = [_meta("thread_name", r, VERDICT_TID, {"name": "rankscope verdict"}) for r in marked]
    names += [_meta("thread_sort_index", r, VERDICT_TID, {"sort_index": 1}) for r in marked]
    hang = report.hang
    if hang is not None:
        entered = [g.entered_ns for g in hang.groups if g.entered_ns is not None]
        rank = hang.rank if hang.rank is not None else 0
        ends = [b[1] for w in analysis.windows.values() for b in w.values()]
        at = min(entered) if entered else (max(ends) if ends else None)
        if at is not None:
            event = {"ph": "i", "s": "g", "pid": rank, "tid": VERDICT_TID, "name": "hang"}
            args = {"verdict": hang.headline, "kind": hang.kind, "rank": hang.rank}
            event |= {"cat": "verdict", "args": args}
            out.append(_with_ts(event, at - alignment.shift(rank) - origin))
    return names + out


def _origin(
    analysis: Analysis, alignment: Alignment, spans: dict[int, tuple[int, int] | None]
) -> int:
    """The earliest aligned timestamp the file will hold: its time zero."""
    firsts: list[int] = []
    for rank, rd in analysis.run.ranks.items():
        shift = alignment.shift(rank)
        span = spans[rank]
        for col in (rd.cpu["ts"], rd.gpu["ts"], rd.gpu_ann["ts"]):
            col = col[_in_span(col, span)]
            if len(col):
                firsts.append(int(col.min()) - shift)
        tel = rd.telemetry
        if len(tel) and "ts_ns" in tel:
            t = tel["ts_ns"][(tel["ts_ns"] > 0) & _in_span(tel["ts_ns"], span)]
            if len(t):
                firsts.append(int(t.min()) - shift)
        _, start, _ = _steps_table(rd, analysis)
        start = start[_in_span(start, span)]
        if len(start):
            firsts.append(int(start.min()) - shift)
    return min(firsts) if firsts else 0


def write_perfetto(
    analysis: Analysis,
    report: Report,
    path: str | Path,
    *,
    align: Method = "step_start",
    only_steps: bool = False,
    max_bytes: int = MAX_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Write the trace (see the module docstring); a RankscopeError past ``max_bytes``.

    ``only_steps``: keep only events inside each rank's analysed steps (``--steps``).
    """
    started = time.monotonic()
    path = Path(path)
    run = analysis.run
    ranks = sorted(run.ranks)
    manifest_offsets = {
        r: (rd.meta.get("manifest") or {}).get("clock_offset_ns") for r, rd in run.ranks.items()
    }
    alignment = clock_alignment(analysis.windows, analysis.steps, manifest_offsets, align)
    spans = {r: _step_span(analysis, r) if only_steps else None for r in ranks}
    origin = _origin(analysis, alignment, spans)
    partial = path.with_name(path.name + ".partial")
    points: dict[int, dict[int, tuple[int, int]]] = {}
    counters = 0
    try:
        with _open(partial, path.name.endswith(".gz")) as f:
            out = _Bounded(f, max_bytes)
            out.raw('{"traceEvents":[\n')
            for i, rank in enumerate(ranks):
                rd = run.ranks[rank]
                w = _RankWriter(rank, alignment.shift(rank), origin, spans[rank])
                shift_ms = alignment.shift(rank) / 1e6
                host = (rd.meta.get("manifest") or {}).get("host")
                label = f"clock shifted {-shift_ms:+.3f} ms ({alignment.method})"
                out.events_out(
                    [
                        _meta("process_name", rank, 0, {"name": f"rank {rank}"}),
                        _meta("process_sort_index", rank, 0, {"sort_index": rank}),
                        _meta(
                            "process_labels",
                            rank,
                            0,
                            {"labels": f"host {host}, {label}" if host else label},
                        ),
                    ]
                )
                out.events_out(w.steps(*_steps_table(rd, analysis)))
                lines, points[rank] = _collective_tracks(
                    analysis.collectives, rank, alignment.shift(rank), origin
                )
                out.events_out(lines)
                out.events_out(w.host(rd.cpu))
                out.events_out(w.gpu(rd.gpu, rd.gpu_ann))
                before = out.events
                out.events_out(w.telemetry(rd.telemetry))
                counters += out.events - before
                expected = out.written * len(ranks) / (i + 1)
                if expected > max_bytes:
                    raise _TooLarge(int(expected))
                if progress:
                    progress(i + 1, len(ranks))
            flow_lines, chains = _flows(points)
            out.events_out(flow_lines)
            out.events_out(_verdict_events(report, analysis, alignment, origin))
            meta = {
                "rankscope": {
                    "schema": SCHEMA,
                    "run": run.path,
                    "ranks": ranks,
                    "world_size": run.world_size,
                    "steps": analysis.steps,
                    "origin_ns": origin,
                    "alignment": {
                        "method": alignment.method,
                        "description": alignment.description,
                        "reference_rank": alignment.reference_rank,
                        "offsets_ns": {str(r): v for r, v in alignment.offsets_ns.items()},
                        "notes": alignment.notes,
                        "applied_as": "t_aligned = t - offsets_ns[rank] - origin_ns",
                    },
                    "collective_flows": chains,
                }
            }
            out.raw('\n],\n"displayTimeUnit":"ns",\n"metadata":')
            out.raw(json.dumps(meta, separators=(",", ":")) + "}\n")
        os.replace(partial, path)
    except _TooLarge as e:
        partial.unlink(missing_ok=True)
        raise RankscopeError(
            f"the trace would be about {e.size / 1e9:.1f} GB of JSON, past the"
            f" {max_bytes / 1e9:.1f} GB a browser can open: export fewer ranks (--ranks) or"
            " steps (--steps), or raise --max-gb"
        ) from None
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise RankscopeError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:  # interrupted: leave no half-written trace behind
        partial.unlink(missing_ok=True)
        raise
    return ExportSummary(
        path=str(path),
        bytes=out.written,
        events=out.events,
        ranks=ranks,
        flows=chains,
        counters=counters,
        alignment=alignment,
        seconds=time.monotonic() - started,
    )
