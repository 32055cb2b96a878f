"""Collectives matched across ranks: who waited, for how long, and for whom.

``match_collectives(comms, windows, steps)`` takes each rank's ``comms`` table
(ingest) and step windows, keeps the collectives inside the analysed steps and
identifies each *instance* across ranks by (process group, sequence number)
when every rank's trace carries sequence numbers, else by (process group,
name, step, order of that name within the step). It returns a Table with one
row per (instance, rank):

- ``instance``, ``rank``, ``step``, ``name`` (string), ``pg`` (string), ``bytes``
- ``start_ns``, ``dur_ms``: when the collective began on this rank and how long it took
- ``transfer_ms``: the shortest duration of this instance over all ranks; skew-free,
  because the last rank to arrive does not wait
- ``wait_ms`` = ``dur_ms`` - ``transfer_ms``: time spent waiting for the last arrival
- ``last_rank``: the rank that arrived last (the one with the shortest duration)

Instances seen on a single rank have no one to wait for (wait 0, last_rank -1).

``wait_intervals(matched)`` -> per rank, the merged time it waited;
``last_arrivals(matched)`` -> per rank, how many instances it arrived last at;
``collective_summary(matched, n_steps, n_ranks)`` -> ``CollectiveSummary`` per
collective name and process group.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.results import CollectiveSummary
from rankscope.dashboard.ingest.table import Table, distinct, first_indices

NS_PER_MS = 1e6


def _step_of(ts: np.ndarray, windows: dict[int, tuple[int, int]], steps: list[int]) -> np.ndarray:
    out = np.full(len(ts), np.iinfo(np.int64).min, dtype=np.int64)
    for step in steps:
        if step in windows:
            lo, hi = windows[step]
            out[(ts >= lo) & (ts < hi)] = step
    return out


def match_collectives(
    comms: dict[int, Table],
    windows: dict[int, dict[int, tuple[int, int]]],
    steps: list[int],
) -> Table:
    per_rank: dict[int, dict[str, np.ndarray]] = {}
    for rank, t in comms.items():
        if not len(t):
            continue
        # By launch time: a collective belongs to the step whose host code issued it.
        step = _step_of(t["launch_ts"], windows.get(rank, {}), steps)
        keep = step != np.iinfo(np.int64).min
        if not keep.any():
            continue
        per_rank[rank] = {
            "ts": t["ts"][keep],
            "dur": t["dur"][keep],
            "step": step[keep],
            "seq": t["seq"][keep],
            "bytes": t["bytes"][keep],
            "name": t.strings("name")[keep],
            "pg": t.strings("pg")[keep],
        }
    use_seq = bool(per_rank) and all((r["seq"] >= 0).all() for r in per_rank.values())

    # key -> rank -> row index
    instances: dict[tuple[object, ...], dict[int, int]] = defaultdict(dict)
    for rank, r in per_rank.items():
        order = np.argsort(r["ts"], kind="stable")
        counters: dict[tuple[object, ...], int] = defaultdict(int)
        for i in order:
            if use_seq:
                key: tuple[object, ...] = (r["pg"][i], int(r["seq"][i]))
            else:
                base = (r["pg"][i], r["name"][i], int(r["step"][i]))
                key = (*base, counters[base])
                counters[base] += 1
            instances[key].setdefault(rank, int(i))

    out: dict[str, list[object]] = defaultdict(list)

    # Instances in time order of their first appearance, so ids read naturally.
    def first_ts(item: tuple[tuple[object, ...], dict[int, int]]) -> int:
        _, ranks = item
        return min(int(per_rank[rk]["ts"][i]) for rk, i in ranks.items())

    for inst_id, (_key, ranks) in enumerate(sorted(instances.items(), key=first_ts)):
        durs = {rk: int(per_rank[rk]["dur"][i]) for rk, i in ranks.items()}
        transfer = min(durs.values())
        last = min(durs, key=lambda rk: (durs[rk], rk)) if len(durs) > 1 else -1
        for rk, i in ranks.items():
            r = per_rank[rk]
            out["instance"].append(inst_id)
            out["rank"].append(rk)
            out["step"].append(int(r["step"][i]))
            out["name"].append(str(r["name"][i]))
            out["pg"].append(str(r["pg"][i]))
            out["bytes"].append(int(r["bytes"][i]))
            out["start_ns"].append(int(r["ts"][i]))
            out["dur_ms"].append(durs[rk] / NS_PER_MS)
            out["transfer_ms"].append(transfer / NS_PER_MS)
            out["wait_ms"].append((durs[rk] - transfer) / NS_PER_MS if last >= 0 else 0.0)
            out["last_rank"].append(last)
    if not out:
        return Table.build(
            {
                "instance": np.zeros(0, np.int64),
                "rank": np.zeros(0, np.int64),
                "step": np.zeros(0, np.int64),
                "name": [],
                "pg": [],
                "bytes": np.zeros(0, np.int64),
                "start_ns": np.zeros(0, np.int64),
                "dur_ms": np.zeros(0),
                "transfer_ms": np.zeros(0),
                "wait_ms": np.zeros(0),
                "last_rank": np.zeros(0, np.int64),
            },
            strings=("name", "pg"),
        )
    data = {
        "instance": np.asarray(out["instance"], dtype=np.int64),
        "rank": np.asarray(out["rank"], dtype=np.int64),
        "step": np.asarray(out["step"], dtype=np.int64),
        "name": out["name"],
        "pg": out["pg"],
        "bytes": np.asarray(out["bytes"], dtype=np.int64),
        "start_ns": np.asarray(out["start_ns"], dtype=np.int64),
        "dur_ms": np.asarray(out["dur_ms"], dtype=np.float64),
        "transfer_ms": np.asarray(out["transfer_ms"], dtype=np.float64),
        "wait_ms": np.asarray(out["wait_ms"], dtype=np.float64),
        "last_rank": np.asarray(out["last_rank"], dtype=np.int64),
    }
    return Table.build(data, strings=("name", "pg"))


def wait_intervals(
    matched: Table, by_last_rank: int | None = None, rows: np.ndarray | None = None
) -> dict[int, iv.Intervals]:
    """Per rank, the merged time it spent waiting (optionally: waiting for one given rank,
    or only in the selected ``rows``).

    A rank waits from the moment a collective starts on it until the last rank
    arrives: [start, start + wait].
    """
    out: dict[int, iv.Intervals] = {}
    if not len(matched):
        return out
    mask = matched["wait_ms"] > 0
    if by_last_rank is not None:
        mask &= matched["last_rank"] == by_last_rank
    if rows is not None:
        mask &= rows
    ranks = matched["rank"]
    start = matched["start_ns"]
    end = start + np.rint(matched["wait_ms"] * NS_PER_MS).astype(np.int64)
    for rank in distinct(ranks):
        m = mask & (ranks == rank)
        out[int(rank)] = iv.union(start[m], end[m])
    return out


def last_arrivals(matched: Table) -> dict[int, int]:
    """How many instances each rank arrived last at (instances with one rank excluded)."""
    _, first = first_indices(matched["instance"])
    counts: dict[int, int] = {}
    for last in matched["last_rank"][first].tolist():
        if last >= 0:
            counts[last] = counts.get(last, 0) + 1
    return counts


def collective_summary(matched: Table, n_steps: int, n_ranks: int) -> list[CollectiveSummary]:
    """One ``CollectiveSummary`` per collective name and process group, most time first.

    ``transfer_ms``: the instances' transfer times summed, per step (concurrent
    instances add up). ``wait_ms``: per rank and step, waiting merged over
    concurrent instances, so it matches the ranks' ``comm_wait_ms``.
    ``bytes``: mean message size of one instance (None when unknown).
    """
    if not len(matched):
        return []
    names = matched.strings("name")
    pgs = matched.strings("pg")
    out = []
    for name, pg in sorted({(str(n), str(p)) for n, p in zip(names, pgs, strict=True)}):
        m = (names == name) & (pgs == pg)
        inst = matched["instance"][m]
        uniq, first = first_indices(inst)
        transfer_per_inst = matched["transfer_ms"][m][first]
        bytes_ = matched["bytes"][m]
        known = bytes_[bytes_ >= 0]
        transfer_ms = float(transfer_per_inst.sum()) / max(n_steps, 1)
        # Effective bandwidth over the skew-free transfer time, where sizes are known.
        bw = (
            float(known.mean()) / (float(transfer_per_inst.mean()) / 1e3) / 1e9
            if len(known) and transfer_per_inst.mean() > 0
            else None
        )
        wait_ns = sum(iv.length(w) for w in wait_intervals(matched, rows=m).values())
        out.append(
            CollectiveSummary(
                name=name,
                pg=pg,
                count=len(uniq),
                bytes=int(known.mean()) if len(known) else None,
                transfer_ms=round(transfer_ms, 3),
                wait_ms=round(wait_ns / NS_PER_MS / max(n_steps, 1) / max(n_ranks, 1), 3),
                last_arrival_counts=dict(sorted(last_arrivals(matched.filter(m)).items())),
                effective_gbps=None if bw is None else round(bw, 3),
            )
        )
    out.sort(key=lambda c: -(c.transfer_ms + c.wait_ms))
    return out
