"""Pipelines: stages, their bubble, and the stage that holds them back.

From the trace window (``pipelines_of``) or, over the whole run, from the light
layer's sends and receives that the collector timed itself on gloo
(``light_pipelines``; ``rankscope.profiler.p2p``).

``pipelines_of(comms, windows, steps, offsets)`` reads each rank's point-to-point
rows (``send``/``recv``/``isend``/``irecv`` in the ingest's ``comms`` table) over
the analysed steps and returns one ``Pipeline`` per chain of ranks that pass
messages to their neighbours.

**Who talks to whom.** gloo's host ranges carry no peer, so peers are found by
timing: a receive that waits ends just after its sender starts the send. Each
receive is paired with the send on another rank that started last inside it
(clocks put on rank 0's by the manifests' ``clock_offset_ns``); a receive with
no send inside it did not wait and pairs with nothing. A send's end says less:
an ``isend`` whose wait comes later (``torch.distributed.pipelining``) ends
whenever it is waited for, and its range covers every receive meanwhile. A pair
of ranks' weight is the number of receives paired between them, either way.
Timing on a busy host is rough (a rank woken late starts its send late), so
each rank keeps its two heaviest partners only (a stage has two neighbours at
most), and two ranks are neighbours when each keeps the other and they paired
at least ``MIN_PAIRS`` receives. Ranks and edges form a graph; each connected part that is a chain
(no rank with three neighbours, no cycle) of two ranks or more is a pipeline.
Stage 0 is the end of the chain whose first point-to-point operation in a step
is a send (the first stage computes, then sends; every other stage first
receives); if that does not decide, the end with the lower rank.

**Per stage**, means over the analysed steps: ``step_ms`` (its step window),
``blocked_ms`` (the union of its point-to-point rows inside the step: blocked
in a receive until the neighbour sends, or in a send until it receives; given
the rank's ``blocked`` intervals, ``RankActivity.p2p``, only the part of those
rows where it ran no operator: an ``isend`` whose wait comes later spans the
compute issued meanwhile, as ``torch.distributed.pipelining`` does),
``busy_ms`` = step - blocked (its own work: compute, host work and gaps alike;
the per-rank table splits it further), and ``bubble`` = blocked / step.

**The schedule's ideal.** ``micro_batches`` (m) is the median number of sends per
step of stage 0 (it sends one activation per micro-batch and nothing else); the
ideal bubble of GPipe and 1F1B with p stages is (p-1)/(m+p-1).

**The bottleneck.** The busiest stage, when it is busy at least
``BUSY_RATIO`` x the median stage and ``MIN_EXTRA_SHARE`` of the step more.
In a run with no GPU where every stage's step timer recorded the training
thread's CPU time (``cpu_ms``), that stage must also use ``BUSY_RATIO`` x the
median stage's CPU time: a stage on a shared, loaded host that waits for a CPU
(or for I/O) looks busier by the wall clock without more work of its own (seen:
a balanced 4-stage GPipe job on 2 loaded cores read stage 0 1.25x busier by the
wall clock, 1.05x by CPU time). ``cpu_ratio`` is that stage's CPU time / the
median stage's.
What-if: with per-micro-batch stage times c_s = B_s/m (B: busy per step), a
GPipe/1F1B step takes about (m-1) max c + sum c; spread evenly it would take
(m+p-1) mean c, so rebalancing saves about (m-1)(B_max - B_mean)/m per step
(without m: step x (1 - B_mean/B_max)).

**Over the whole run** (``light_pipelines``, ``source`` "light"): each send and
receive the collector timed names its peer, so neighbours are the ranks that
exchanged ``MIN_PAIRS`` operations or more, sending both ways (activations one
way, gradients back; each keeps its two busiest partners), not a guess from
timing; a rank is ``blocked`` from when its training thread began to wait for an
operation until the wait returned (a receive waits for the send; an ``isend``
waited for later is blocked only then), and its steps are the step timer's.
Steps are those every stage timed, less the first (start-up) and any a profiler
window touched. NCCL's sends and receives (its flight
recorder's) carry no CPU wait and are not used here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.ingest.table import Table

NS_PER_MS = 1e6
_SENDS = ("send", "isend")
_RECVS = ("recv", "irecv")
MIN_PAIRS = 3  # sends paired between two ranks before they count as neighbours
BUSY_RATIO = 1.2  # the bottleneck is busy this much more than the median stage
MIN_EXTRA_SHARE = 0.05  # ... and this share of the step more


class PipelineStage(msgspec.Struct, frozen=True, kw_only=True):
    """One stage of a pipeline: its rank and where its step goes (ms per step)."""

    stage: int
    rank: int
    step_ms: float
    busy_ms: float  # step - blocked: its own work (compute, host work, gaps)
    blocked_ms: float  # in point-to-point sends and receives: waiting for a neighbour
    bubble: float  # blocked / step
    sends_per_step: float
    recvs_per_step: float
    # the rank's training thread's CPU time a step (step timer), in a run with no GPU;
    # null where not recorded
    cpu_ms: float | None = None


class Pipeline(msgspec.Struct, frozen=True, kw_only=True):
    """A chain of ranks passing activations (module docstring)."""

    ranks: list[int]  # in stage order
    stages: list[PipelineStage]
    # "first send" or "rank order": how stage 0 was told from the last; "ring": a looped
    # (interleaved) schedule, whose last rank sends back to the first: no micro-batches
    # or ideal are given
    order_source: str
    micro_batches: int | None
    ideal_bubble: float | None  # (p-1)/(m+p-1)
    bubble: float  # the stages' mean
    bottleneck_stage: int | None
    bottleneck_rank: int | None
    busy_ratio: float  # the busiest stage's busy time / the median stage's
    saving_ms_per_step: float  # from rebalancing the stages' work (0 without a bottleneck)
    step_ms: float
    # the busiest stage's CPU time / the median stage's (no GPU, step timer); null otherwise
    cpu_ratio: float | None = None
    # "window": the trace window's sends and receives; "light": the collector's timing of
    # gloo's over the whole run (module docstring), with the steps it covers
    source: str = "window"
    first_step: int | None = None
    last_step: int | None = None


def _rows(
    t: Table, windows: Mapping[int, tuple[int, int]], steps: list[int], offset: int
) -> dict[str, np.ndarray] | None:
    """A rank's point-to-point rows inside the analysed steps, on rank 0's clock."""
    if not len(t):
        return None
    names = t.strings("name")
    send = np.isin(names, _SENDS)
    p2p = send | np.isin(names, _RECVS)
    step = np.full(len(t), -(1 << 62), dtype=np.int64)
    for s in steps:
        if s in windows:
            lo, hi = windows[s]
            step[(t["launch_ts"] >= lo) & (t["launch_ts"] < hi)] = s
    keep = p2p & (step > -(1 << 62))
    if not keep.any():
        return None
    start = t["ts"][keep].astype(np.int64) - offset
    return {
        "start": start,
        "end": start + t["dur"][keep].astype(np.int64),
        "send": send[keep],
        "step": step[keep],
    }


def _neighbours(rows: dict[int, dict[str, np.ndarray]]) -> dict[int, set[int]]:
    """Each rank's neighbours, from its receives paired with other ranks' sends by time.

    A receive that waits ends just after its sender starts the send: its partner is
    the rank whose send started last inside the receive. (A send's end says less: an
    ``isend`` whose wait comes later ends whenever it is waited for.)"""
    send_ranks, send_start = [], []
    for r, d in rows.items():
        m = d["send"]
        send_ranks.append(np.full(int(m.sum()), r, dtype=np.int64))
        send_start.append(d["start"][m])
    sr, ss = np.concatenate(send_ranks), np.concatenate(send_start)
    order = np.argsort(ss, kind="stable")
    sr, ss = sr[order], ss[order]
    out: dict[int, set[int]] = {r: set() for r in rows}
    weight: dict[tuple[int, int], int] = {}  # (a, b), a < b: receives paired either way
    if not len(sr):
        return out
    for r, d in rows.items():
        m = ~d["send"]
        votes: dict[int, int] = {}
        for s, e in zip(d["start"][m].tolist(), d["end"][m].tolist(), strict=True):
            # sends that started inside it, before it ended (one starting as it ends did not
            # feed it)
            lo, hi = np.searchsorted(ss, s, "left"), np.searchsorted(ss, e, "left")
            idx = np.arange(lo, hi)[sr[lo:hi] != r]
            if not len(idx):
                continue  # the data was there already: the receive did not wait
            peer = int(sr[idx[-1]])
            votes[peer] = votes.get(peer, 0) + 1
        for peer, n in votes.items():
            weight[(min(r, peer), max(r, peer))] = weight.get((min(r, peer), max(r, peer)), 0) + n
    # Each rank keeps its two strongest partners (a stage has two neighbours at most); an
    # edge is one both ends keep, paired at least MIN_PAIRS times.
    kept: dict[int, set[int]] = {}
    for r in rows:
        mine = sorted(
            (
                (n, b if a == r else a)
                for (a, b), n in weight.items()
                if r in (a, b) and n >= MIN_PAIRS
            ),
            reverse=True,
        )
        kept[r] = {peer for _, peer in mine[:2]}
    for r in rows:
        out[r] = {peer for peer in kept[r] if r in kept.get(peer, set())}
    return out


def _chains(adj: dict[int, set[int]]) -> list[tuple[list[int], bool]]:
    """The connected parts of ``adj`` that are chains of two ranks or more, end to end,
    or rings of three or more (``True``: a looped schedule, every rank with two
    neighbours and as many edges as ranks); trees are left out."""
    seen: set[int] = set()
    out = []
    for start in sorted(adj):
        if start in seen or not adj[start]:
            continue
        part, todo = set(), [start]
        while todo:
            r = todo.pop()
            if r in part:
                continue
            part.add(r)
            todo += adj[r] - part
        seen |= part
        edges = sum(len(adj[r]) for r in part) // 2
        ring = len(part) >= 3 and edges == len(part) and all(len(adj[r]) == 2 for r in part)
        if not ring and (any(len(adj[r]) > 2 for r in part) or edges != len(part) - 1):
            continue  # a tree, not a chain
        end = min(r for r in part if len(adj[r]) == (2 if ring else 1))
        chain, prev = [end], None
        while len(chain) < len(part):
            nxt = min(adj[chain[-1]] - {prev} if prev is not None else adj[chain[-1]])
            prev = chain[-1]
            chain.append(nxt)
        out.append((chain, ring))
    return out


def _sends_first(d: dict[str, np.ndarray]) -> bool:
    """Whether the rank's first point-to-point operation of its first step is a send."""
    first = d["step"] == d["step"].min()
    return bool(d["send"][first][np.argmin(d["start"][first])])


def _stage(stage: int, rank: int, d: dict[str, np.ndarray], windows: dict[int, tuple[int, int]],
           steps: list[int]) -> PipelineStage:  # fmt: skip
    step_ns, blocked_ns, sends, recvs = [], [], [], []
    for s in steps:
        if s not in windows:
            continue
        lo, hi = windows[s]
        m = d["step"] == s
        step_ns.append(hi - lo)
        if "blocked_start" in d:
            blocked_ns.append(iv.clipped_length((d["blocked_start"], d["blocked_end"]), lo, hi))
        else:
            a = np.clip(d["start"][m], lo, hi)
            b = np.clip(d["end"][m], lo, hi)
            blocked_ns.append(iv.length(iv.union(a, b)))
        sends.append(int(d["send"][m].sum()))
        recvs.append(int((~d["send"][m]).sum()))
    step = float(np.mean(step_ns)) / NS_PER_MS if step_ns else 0.0
    blocked = float(np.mean(blocked_ns)) / NS_PER_MS if blocked_ns else 0.0
    return PipelineStage(
        stage=stage,
        rank=rank,
        step_ms=round(step, 3),
        busy_ms=round(step - blocked, 3),
        blocked_ms=round(blocked, 3),
        bubble=round(blocked / step, 4) if step > 0 else 0.0,
        sends_per_step=float(np.mean(sends)) if sends else 0.0,
        recvs_per_step=float(np.mean(recvs)) if recvs else 0.0,
    )


def _micro_batches(d: dict[str, np.ndarray], steps: list[int]) -> int | None:
    counts = [int((d["send"] & (d["step"] == s)).sum()) for s in steps]
    m = int(np.median(counts)) if counts else 0
    return m if m > 0 else None


def pipelines_of(
    comms: Mapping[int, Table],
    windows: Mapping[int, dict[int, tuple[int, int]]],
    steps: list[int],
    offsets: Mapping[int, int] | None = None,
    blocked: Mapping[int, iv.Intervals | None] | None = None,
    cpu_ms: Mapping[int, float] | None = None,
) -> list[Pipeline]:
    """Every pipeline among the ranks (module docstring); [] when no rank passes messages.

    ``blocked``: per rank, its time blocked in sends and receives on its own clock
    (``RankActivity.p2p``); without it, the union of its point-to-point rows.
    ``cpu_ms``: per rank, its training thread's mean CPU time a step over ``steps``
    (the step timer's ``cpu_ns``), given only for a run with no GPU."""
    offsets = offsets or {}
    rows = {}
    for r in sorted(comms):
        d = _rows(comms[r], windows.get(r, {}), steps, offsets.get(r, 0))
        if d is not None:
            b = (blocked or {}).get(r)
            if b is not None:
                d["blocked_start"] = b[0] - offsets.get(r, 0)
                d["blocked_end"] = b[1] - offsets.get(r, 0)
            rows[r] = d
    if len(rows) < 2:
        return []
    return _pipelines(rows, _neighbours(rows), windows, steps, cpu_ms or {})


def _pipelines(
    rows: dict[int, dict[str, np.ndarray]],
    adj: dict[int, set[int]],
    windows: Mapping[int, dict[int, tuple[int, int]]],
    steps: list[int],
    cpu_ms: Mapping[int, float],
) -> list[Pipeline]:
    out = []
    for chain, ring in _chains(adj):
        if ring:
            out.append(_pipeline(_ring_order(chain, rows), rows, windows, steps, "ring", cpu_ms))
            continue
        first, last = rows[chain[0]], rows[chain[-1]]
        source = "first send"
        if _sends_first(last) and not _sends_first(first):
            chain = chain[::-1]
        elif _sends_first(first) == _sends_first(last):
            source = "rank order"
            if chain[-1] < chain[0]:
                chain = chain[::-1]
        out.append(_pipeline(chain, rows, windows, steps, source, cpu_ms))
    return out


def _ring_order(ring: list[int], rows: dict[int, dict[str, np.ndarray]]) -> list[int]:
    """A looped schedule's ranks in stage order: from the rank whose first operation of a
    step is a send (the first stage), towards the peer of that send where the rows name
    peers; else from the lowest rank, towards its lower neighbour after it."""
    firsts = [r for r in ring if _sends_first(rows[r])]
    start = firsts[0] if len(firsts) == 1 else min(ring)
    i = ring.index(start)
    order = ring[i:] + ring[:i]
    d = rows[start]
    if "peer" in d:
        first = d["step"] == d["step"].min()
        sends = d["send"] & first
        if sends.any():
            to = int(d["peer"][sends][np.argmin(d["start"][sends])])
            if to == order[-1]:
                order = [order[0], *order[:0:-1]]
    return order


def _by_peer(rows: dict[int, dict[str, np.ndarray]]) -> dict[int, set[int]]:
    """Neighbours from the peers the sends and receives name (``light_pipelines``).

    A training pipeline passes activations one way and their gradients back: a rank
    that only ever sends to a peer, or only receives from it (a metric sent to rank 0
    beside data parallel training), is no stage of a pipeline with it."""
    count: dict[tuple[int, int], int] = {}  # (rank, peer): operations rank had with peer
    for r, d in rows.items():
        known = d["peer"] >= 0
        peers, n = np.unique(d["peer"][known], return_counts=True)
        to = set(np.unique(d["peer"][known & d["send"]]).tolist())
        back = set(np.unique(d["peer"][known & ~d["send"]]).tolist())
        for peer, k in zip(peers.tolist(), n.tolist(), strict=True):
            if peer != r and peer in rows and peer in to and peer in back:
                count[(r, peer)] = k
    kept: dict[int, set[int]] = {}
    for r in rows:
        mine = sorted(
            ((n, peer) for (a, peer), n in count.items() if a == r and n >= MIN_PAIRS),
            reverse=True,
        )
        kept[r] = {peer for _, peer in mine[:2]}
    return {r: {p for p in kept[r] if r in kept.get(p, set())} for r in rows}


def light_pipelines(
    comms: Mapping[int, Table],
    marks: Mapping[int, Table],
    cpu_ms: Callable[[list[int]], Mapping[int, float]] | None = None,
) -> list[Pipeline]:
    """Every pipeline over the whole run from the light layer (module docstring); [] when
    no two ranks logged sends and receives the collector timed. ``cpu_ms``: per rank, its
    training thread's mean CPU time a step over the given steps, as ``pipelines_of``
    takes it (a run with no GPU)."""
    rows: dict[int, dict[str, np.ndarray]] = {}
    windows: dict[int, dict[int, tuple[int, int]]] = {}
    for r in sorted(comms):
        t, m = comms[r], marks.get(r)
        if not len(t) or "wait_start_ns" not in t or m is None or not len(m):
            continue
        timed = (t["p2p"] != 0) & (t["wait_start_ns"] >= 0)
        if not timed.any() or "start_ns" not in m or "end_ns" not in m:
            continue
        step, lo, hi = (np.asarray(m[k], np.int64) for k in ("step", "start_ns", "end_ns"))
        ok = np.ones(len(step), dtype=bool)
        if "capture" in m:
            ok &= np.nan_to_num(np.asarray(m["capture"], np.float64), nan=0.0) == 0
        windows[r] = {
            int(s): (int(a), int(b)) for s, a, b, k in zip(step, lo, hi, ok, strict=True) if k
        }
        names = t.strings("name")
        send = np.isin(names, _SENDS)[timed]
        enq, wait, end = t["enqueue_ns"][timed], t["wait_start_ns"][timed], t["end_ns"][timed]
        end = np.maximum(end, wait)
        # a send from its call (its peer's receive ends just after); a receive from the
        # wait (before it, the data may have been there already)
        start = np.where(send, enq, wait)
        spans = sorted(windows[r].items(), key=lambda kv: kv[1])
        if not spans:
            continue
        bounds = np.array([b for _, b in spans], dtype=np.int64)
        at = np.searchsorted(bounds[:, 0], start, "right") - 1
        inside = (at >= 0) & (start < bounds[np.clip(at, 0, None), 1])
        if not inside.any():
            continue
        step_of = np.array([s for s, _ in spans], dtype=np.int64)[at[inside]]
        order = np.argsort(start[inside], kind="stable")
        # the waits as a sorted, disjoint set (an isend waited for later is called before
        # a receive waited for in between: in call order its wait comes after)
        blocked = iv.union(wait[inside], end[inside])
        rows[r] = {
            "start": start[inside][order],
            "end": end[inside][order],
            "send": send[inside][order],
            "step": step_of[order],
            "peer": np.asarray(t["peer"][timed], np.int64)[inside][order],
            "blocked_start": blocked[0],
            "blocked_end": blocked[1],
        }
    if len(rows) < 2:
        return []
    adj = _by_peer(rows)
    out = []
    for members, _ in _chains(adj):
        # each pipeline over the steps all its stages timed, less the first (start-up)
        steps = sorted(set.intersection(*(set(windows[r]) for r in members)))[1:]
        if not steps:
            continue
        part = {r: adj[r] for r in members}
        for p in _pipelines(rows, part, windows, steps, cpu_ms(steps) if cpu_ms else {}):
            out.append(
                msgspec.structs.replace(p, source="light", first_step=steps[0], last_step=steps[-1])
            )
    return out


def _pipeline(
    chain: list[int],
    rows: dict[int, dict[str, np.ndarray]],
    windows: Mapping[int, dict[int, tuple[int, int]]],
    steps: list[int],
    source: str,
    cpu_ms: Mapping[int, float],
) -> Pipeline:
    stages = [_stage(i, r, rows[r], windows.get(r, {}), steps) for i, r in enumerate(chain)]
    cpu = None
    if chain and all(r in cpu_ms for r in chain):
        stages = [msgspec.structs.replace(s, cpu_ms=round(cpu_ms[s.rank], 3)) for s in stages]
        cpu = np.array([cpu_ms[r] for r in chain])
    p = len(stages)
    # a looped schedule's first rank sends for every virtual stage it holds: its count
    # is not the micro-batches, and the ideal depends on the (unknown) loops
    m = None if source == "ring" else _micro_batches(rows[chain[0]], steps)
    ideal = (p - 1) / (m + p - 1) if m else None
    busy = np.array([s.busy_ms for s in stages])
    step = float(np.mean([s.step_ms for s in stages]))
    med, top = float(np.median(busy)), int(np.argmax(busy))
    ratio = float(busy[top] / med) if med > 0 else 1.0
    bottleneck = top if ratio >= BUSY_RATIO and busy[top] - med >= MIN_EXTRA_SHARE * step else None
    cpu_ratio = None
    if cpu is not None:
        cpu_med = float(np.median(cpu))
        cpu_ratio = float(cpu[top] / cpu_med) if cpu_med > 0 else None
        if cpu_ratio is not None and cpu_ratio < BUSY_RATIO:
            bottleneck = None  # busier by the wall clock only: a wait for a CPU or for I/O
    saving = 0.0
    if bottleneck is not None:
        extra = float(busy[top] - busy.mean())
        saving = (m - 1) * extra / m if m else step * extra / float(busy[top])
    return Pipeline(
        ranks=chain,
        stages=stages,
        order_source=source,
        micro_batches=m,
        ideal_bubble=None if ideal is None else round(ideal, 4),
        bubble=round(float(np.mean([s.bubble for s in stages])), 4),
        bottleneck_stage=bottleneck,
        bottleneck_rank=None if bottleneck is None else chain[bottleneck],
        busy_ratio=round(ratio, 3),
        cpu_ratio=None if cpu_ratio is None else round(cpu_ratio, 3),
        saving_ms_per_step=round(max(saving, 0.0), 3),
        step_ms=round(step, 3),
    )
