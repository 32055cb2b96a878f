"""Per-step timelines and per-instance arrival order, for drawing one step across ranks.

``step_timeline(activities, windows, waits, step, resolution_ns)`` -> Table, one row
per drawn segment of that step on every rank that has it:

- ``rank``; ``category`` (string): ``compute``, ``comm_wait`` (in a collective,
  waiting for the last rank), ``comm`` (in a collective, transferring), ``memcpy``,
  ``data`` (data loading with nothing on the GPU), ``host`` (host-only), ``idle``
- ``start_ms``, ``end_ms``: relative to that rank's own start of the step, so ranks
  line up at step start whatever their clock offset

The categories are exclusive, in that order of precedence (a stretch under
compute and communication is compute), like the step breakdown. Segments
closer than ``resolution_ns`` are merged, so a step draws at most about
``window / resolution`` shapes per rank and category, never one per event.

``arrival_lag(collectives)`` -> Table with one row per (instance, rank) of
``Analysis.collectives``: ``instance``, ``rank``, ``step``, ``name`` (string) and
``lag_ms``: how much later than the first rank this rank arrived, from waits
alone (the first arrival waits longest), so it is free of clock skew.

``last_arrivals_by_step(collectives)`` -> Table (``step``, ``rank``,
``last_arrivals``: instances of that step where this rank arrived last,
``caused_wait_ms``: the other ranks' wait summed over those instances).

``collective_time_by_rank(collectives, n_steps)`` -> Table (``rank``,
``transfer_ms``, ``wait_ms``: per step, summed over collectives; ``last_arrivals``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import RankActivity
from rankscope.dashboard.ingest.table import Table, distinct

NS_PER_MS = 1e6
CATEGORIES = ("compute", "comm_wait", "comm", "memcpy", "data", "host", "idle")
CATEGORY_LABELS = {
    "compute": "compute",
    "comm_wait": "waiting in a collective",
    "comm": "communication (transfer)",
    "memcpy": "memcpy",
    "data": "data loading",
    "host": "host only",
    "idle": "idle",
}


def coarsen(ivs: iv.Intervals, resolution_ns: int) -> iv.Intervals:
    """Merge intervals of a merged set that are less than ``resolution_ns`` apart."""
    s, e = ivs
    if len(s) < 2 or resolution_ns <= 0:
        return ivs
    new_group = np.empty(len(s), dtype=bool)
    new_group[0] = True
    new_group[1:] = (s[1:] - e[:-1]) >= resolution_ns
    idx = np.flatnonzero(new_group)
    last = np.append(idx[1:] - 1, len(s) - 1)
    return s[idx], e[last]


def _layers(act: RankActivity, waits: iv.Intervals, lo: int, hi: int) -> dict[str, iv.Intervals]:
    def cut(x: iv.Intervals) -> iv.Intervals:
        return iv.clip(x, lo, hi)

    compute = cut(act.compute)
    comm = cut(act.comm)
    comm_wait = iv.subtract(iv.intersect(comm, cut(waits)), compute)
    covered = iv.combine(compute, comm_wait)
    comm_transfer = iv.subtract(comm, covered)
    covered = iv.combine(covered, comm_transfer)
    memcpy = iv.subtract(cut(act.memcpy), covered)
    covered = iv.combine(covered, memcpy, cut(act.gpu))
    data = iv.subtract(cut(act.data), covered)
    covered = iv.combine(covered, data)
    host = iv.subtract(cut(act.host), covered)
    covered = iv.combine(covered, host)
    window = (np.array([lo], dtype=np.int64), np.array([hi], dtype=np.int64))
    idle = iv.subtract(window, covered)
    return {
        "compute": compute,
        "comm_wait": comm_wait,
        "comm": comm_transfer,
        "memcpy": memcpy,
        "data": data,
        "host": host,
        "idle": idle,
    }


def step_timeline(
    activities: Mapping[int, RankActivity],
    windows: dict[int, dict[int, tuple[int, int]]],
    waits: dict[int, iv.Intervals],
    step: int,
    resolution_ns: int | None = None,
    ranks: Iterable[int] | None = None,
    max_segments_per_rank: int = 1500,
) -> Table:
    """Segments of ``step`` per rank (see the module docstring)."""
    wanted = sorted(activities) if ranks is None else sorted(set(ranks) & set(activities))
    out: dict[str, list[object]] = {"rank": [], "category": [], "start_ms": [], "end_ms": []}
    spans = [
        windows[r][step][1] - windows[r][step][0] for r in wanted if step in windows.get(r, {})
    ]
    if resolution_ns is None:
        # About a pixel of a 1200-pixel-wide chart of the longest rank's step.
        resolution_ns = max(max(spans, default=0) // 1200, 1)
    for rank in wanted:
        if step not in windows.get(rank, {}):
            continue
        lo, hi = windows[rank][step]
        layers = _layers(activities[rank], waits.get(rank, iv.empty()), lo, hi)
        res = resolution_ns
        while True:
            coarse = {c: coarsen(layers[c], res) for c in CATEGORIES}
            if sum(len(s) for s, _ in coarse.values()) <= max_segments_per_rank:
                break
            res *= 2
        for cat in CATEGORIES:
            s, e = coarse[cat]
            out["rank"].extend([rank] * len(s))
            out["category"].extend([cat] * len(s))
            out["start_ms"].extend(((s - lo) / NS_PER_MS).tolist())
            out["end_ms"].extend(((e - lo) / NS_PER_MS).tolist())
    return Table.build(
        {
            "rank": np.asarray(out["rank"], dtype=np.int64),
            "category": out["category"],
            "start_ms": np.asarray(out["start_ms"], dtype=np.float64),
            "end_ms": np.asarray(out["end_ms"], dtype=np.float64),
        },
        strings=("category",),
    )


def arrival_lag(collectives: Table) -> Table:
    """Per (instance, rank), how late it arrived after the first rank (see the docstring)."""
    n = len(collectives)
    if not n:
        return Table.build(
            {
                "instance": np.zeros(0, np.int64),
                "rank": np.zeros(0, np.int64),
                "step": np.zeros(0, np.int64),
                "name": [],
                "lag_ms": np.zeros(0),
            },
            strings=("name",),
        )
    inst = collectives["instance"]
    wait = collectives["wait_ms"]
    max_wait = np.zeros(int(inst.max()) + 1, dtype=np.float64)
    np.maximum.at(max_wait, inst, wait)
    return Table(
        {
            "instance": inst,
            "rank": collectives["rank"],
            "step": collectives["step"],
            "name": collectives["name"],
            "lag_ms": max_wait[inst] - wait,
        },
        {"name": collectives.vocab["name"]},
    )


def last_arrivals_by_step(collectives: Table) -> Table:
    """Per (step, rank): instances where the rank arrived last and the wait it caused there."""
    counts: dict[tuple[int, int], list[float]] = {}
    if len(collectives):
        inst = collectives["instance"]
        last = collectives["last_rank"]
        step = collectives["step"]
        wait = collectives["wait_ms"]
        seen: set[int] = set()
        for i in range(len(inst)):
            key = (int(step[i]), int(last[i]))
            if last[i] < 0:
                continue
            entry = counts.setdefault(key, [0.0, 0.0])
            if int(inst[i]) not in seen:
                seen.add(int(inst[i]))
                entry[0] += 1
            entry[1] += float(wait[i])
    keys = sorted(counts)
    return Table(
        {
            "step": np.asarray([k[0] for k in keys], dtype=np.int64),
            "rank": np.asarray([k[1] for k in keys], dtype=np.int64),
            "last_arrivals": np.asarray([counts[k][0] for k in keys], dtype=np.int64),
            "caused_wait_ms": np.asarray([counts[k][1] for k in keys], dtype=np.float64),
        }
    )


def collective_time_by_rank(collectives: Table, n_steps: int) -> Table:
    """Per rank, collective transfer and wait time per step, and how often it arrived last."""
    if not len(collectives):
        z = np.zeros(0)
        return Table(
            {"rank": np.zeros(0, np.int64), "transfer_ms": z, "wait_ms": z, "last_arrivals": z}
        )
    ranks = distinct(collectives["rank"])
    n = max(n_steps, 1)
    transfer, wait, last = [], [], []
    inst_last = dict(
        zip(collectives["instance"].tolist(), collectives["last_rank"].tolist(), strict=False)
    )
    for r in ranks:
        m = collectives["rank"] == r
        transfer.append(float(collectives["transfer_ms"][m].sum()) / n)
        wait.append(float(collectives["wait_ms"][m].sum()) / n)
        last.append(sum(1 for v in inst_last.values() if v == r))
    return Table(
        {
            "rank": ranks.astype(np.int64),
            "transfer_ms": np.asarray(transfer),
            "wait_ms": np.asarray(wait),
            "last_arrivals": np.asarray(last, dtype=np.int64),
        }
    )
