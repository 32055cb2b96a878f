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

A one-way point-to-point operation (``send``, ``recv``) is matched only by
sequence number. Without one (gloo's host ranges), a send is never paired with
another rank's send by position, as collectives are: each is an instance of its
own, and its whole duration is ``wait_ms``, not transfer: a receive is blocked
until the peer sends, a blocking send until the peer receives (in a pipeline,
its bubble; the message itself, activations of a micro-batch, takes a small
part). NCCL's ``send_recv`` kernel runs on both sides of an exchange and is matched as a collective.

``wait_intervals(matched)`` -> per rank, the merged time it waited;
``last_arrivals(matched)`` -> per rank, how many instances it arrived last at;
``collective_summary(matched, n_steps, n_ranks)`` -> ``CollectiveSummary`` per
collective name and process group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.results import CollectiveSummary
from rankscope.dashboard.ingest.table import Table, distinct, first_indices, isin

NS_PER_MS = 1e6
P2P_NAMES = ("send", "recv", "send_recv", "isend", "irecv")
_ONE_WAY = ("send", "recv", "isend", "irecv")


def _named(codes: np.ndarray, vocab: Any, wanted: tuple[str, ...]) -> np.ndarray:
    """Which rows' name (a code into ``vocab``) is one of ``wanted``."""
    hits = [i for i, n in enumerate(vocab) if str(n) in wanted]
    return isin(codes, np.asarray(hits, dtype=np.int64))


def _step_of(ts: np.ndarray, windows: dict[int, tuple[int, int]], steps: list[int]) -> np.ndarray:
    out = np.full(len(ts), np.iinfo(np.int64).min, dtype=np.int64)
    for step in steps:
        if step in windows:
            lo, hi = windows[step]
            out[(ts >= lo) & (ts < hi)] = step
    return out


def _concat_ranks(
    comms: dict[int, Table],
    windows: dict[int, dict[int, tuple[int, int]]],
    steps: list[int],
) -> dict[str, np.ndarray] | None:
    """Every rank's collectives inside the analysed steps, as one set of columns.

    ``pos`` is the rank's position in ``comms`` (the order ranks are visited in),
    ``order`` a row's position in its rank's launch-time order; ``name``/``pg``
    are codes into the merged vocabularies ``names``/``pgs``.
    """
    parts: list[dict[str, np.ndarray]] = []
    vocab: dict[str, dict[str, int]] = {"name": {}, "pg": {}}
    for rank, t in comms.items():
        if not len(t):
            continue
        # By launch time: a collective belongs to the step whose host code issued it.
        step = _step_of(t["launch_ts"], windows.get(rank, {}), steps)
        keep = step != np.iinfo(np.int64).min
        if not keep.any():
            continue
        ts = t["ts"][keep]
        order = np.empty(len(ts), dtype=np.int64)
        order[np.argsort(ts, kind="stable")] = np.arange(len(ts))
        part = {
            "rank": np.full(len(ts), rank, dtype=np.int64),
            "pos": np.full(len(ts), len(parts), dtype=np.int64),
            "order": order,
            "ts": ts,
            "dur": t["dur"][keep],
            "step": step[keep],
            "seq": t["seq"][keep],
            "bytes": t["bytes"][keep],
        }
        for col in ("name", "pg"):
            remap = np.array(
                [vocab[col].setdefault(str(v), len(vocab[col])) for v in t.vocab[col]],
                dtype=np.int64,
            )
            part[col] = remap[t[col][keep]]
        parts.append(part)
    if not parts:
        return None
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["names"] = np.asarray(list(vocab["name"]), dtype=object)
    out["pgs"] = np.asarray(list(vocab["pg"]), dtype=object)
    return out


def _group_ids(keys: list[np.ndarray]) -> np.ndarray:
    """A dense id per distinct combination of ``keys`` (equal rows, equal ids)."""
    order = np.lexsort(keys[::-1])
    new = np.zeros(len(order), dtype=bool)
    if len(order):
        new[0] = True
        for k in keys:
            ks = k[order]
            new[1:] |= ks[1:] != ks[:-1]
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


def _first_appearance_codes(codes: np.ndarray, vocab: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes renumbered in order of first appearance, and the vocabulary to match
    (what ``Table.build`` makes of the decoded strings)."""
    uniq, first = first_indices(codes)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    remap = np.zeros(int(uniq.max()) + 1 if len(uniq) else 0, dtype=np.int32)
    remap[uniq] = rank
    ordered = uniq[np.argsort(first, kind="stable")]
    return remap[codes], [str(v) for v in vocab[ordered]]


def match_collectives(
    comms: dict[int, Table],
    windows: dict[int, dict[int, tuple[int, int]]],
    steps: list[int],
) -> Table:
    c = _concat_ranks(comms, windows, steps)
    if c is None:
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
    if (c["seq"] >= 0).all():
        key = _group_ids([c["pg"], c["seq"]])
    else:
        # (pg, name, step) and the occurrence of that name within the step, in launch order.
        base = _group_ids([c["pos"], c["pg"], c["name"], c["step"]])
        by_base = np.lexsort((c["order"], base))
        sb = base[by_base]
        first_of_base = np.searchsorted(sb, sb, side="left")
        counter = np.empty(len(base), dtype=np.int64)
        counter[by_base] = np.arange(len(base)) - first_of_base
        # Point-to-point: no position pairs one rank's send with another's (see above).
        p2p = _named(c["name"], c["names"], _ONE_WAY)
        counter = np.where(p2p, -1 - np.arange(len(counter)), counter)
        key = _group_ids([c["pg"], c["name"], c["step"], counter, np.where(p2p, c["pos"], -1)])

    # A rank holds each instance once: its first occurrence in launch order.
    by_key_rank = np.lexsort((c["order"], c["pos"], key))
    kr = key[by_key_rank] * (int(c["pos"].max()) + 1) + c["pos"][by_key_rank]
    first = np.ones(len(kr), dtype=bool)
    first[1:] = kr[1:] != kr[:-1]
    rows = by_key_rank[first]  # sorted by (key, pos)
    key = key[rows]

    # Instances in time order of their first appearance, so ids read naturally; ties
    # in the order the instances were first met (rank by rank, in launch order).
    n_keys = int(key.max()) + 1
    met = c["pos"][rows] * len(c["pos"]) + c["order"][rows]
    first_ts = np.full(n_keys, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_ts, key, c["ts"][rows])
    first_met = np.full(n_keys, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_met, key, met)
    inst_of_key = np.empty(n_keys, dtype=np.int64)
    inst_of_key[np.lexsort((first_met, first_ts))] = np.arange(n_keys)
    inst = inst_of_key[key]

    out_order = np.lexsort((c["pos"][rows], inst))
    rows, inst = rows[out_order], inst[out_order]
    dur = c["dur"][rows].astype(np.int64)
    rank = c["rank"][rows]
    # Per instance: the transfer (shortest duration) and the last arrival (ties: lowest rank).
    starts = np.flatnonzero(np.concatenate([[True], inst[1:] != inst[:-1]]))
    count = np.diff(np.append(starts, len(inst)))
    transfer = np.minimum.reduceat(dur, starts)
    by_dur = np.lexsort((rank, dur, inst))
    last_of = rank[by_dur][np.searchsorted(inst[by_dur], inst[starts], side="left")]
    last_of = np.where(count > 1, last_of, -1)
    per_row = np.repeat(np.arange(len(starts)), count)
    wait = np.where(
        count[per_row] > 1, (dur - transfer[per_row]).astype(np.float64) / NS_PER_MS, 0.0
    )
    transfer_row = transfer[per_row].astype(np.float64) / NS_PER_MS
    if not (c["seq"] >= 0).all():
        # An unpaired send or receive waits for its peer the whole time (see above).
        one_way = _named(c["name"][rows], c["names"], _ONE_WAY) & (count[per_row] == 1)
        wait = np.where(one_way, dur.astype(np.float64) / NS_PER_MS, wait)
        transfer_row = np.where(one_way, 0.0, transfer_row)
    name_codes, names = _first_appearance_codes(c["name"][rows], c["names"])
    pg_codes, pgs = _first_appearance_codes(c["pg"][rows], c["pgs"])
    cols = {
        "instance": inst.astype(np.int64),
        "rank": rank.astype(np.int64),
        "step": c["step"][rows].astype(np.int64),
        "name": name_codes,
        "pg": pg_codes,
        "bytes": c["bytes"][rows].astype(np.int64),
        "start_ns": c["ts"][rows].astype(np.int64),
        "dur_ms": dur.astype(np.float64) / NS_PER_MS,
        "transfer_ms": transfer_row,
        "wait_ms": wait,
        "last_rank": last_of[per_row].astype(np.int64),
    }
    return Table(cols, {"name": names, "pg": pgs})


def union_lengths(
    groups: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct group (sorted), the length of the union of its intervals.

    One pass for all groups: each group is moved to its own stretch of the time
    axis, so one running maximum merges every group at once (``iv.union`` per
    group gives the same integers).
    """
    if len(groups) == 0:
        return groups, np.zeros(0, dtype=np.int64)
    order = np.lexsort((starts, groups))
    g, s, e = groups[order], starts[order].astype(np.int64), ends[order].astype(np.int64)
    new_group = np.concatenate([[True], g[1:] != g[:-1]])
    gid = np.cumsum(new_group) - 1
    group_first = np.flatnonzero(new_group)
    base = s[group_first][gid]  # each group from 0 (its earliest start)
    s, e = s - base, e - base
    width = max(int(e.max()), int(s.max())) + 1
    if width * len(group_first) >= np.iinfo(np.int64).max // 2:
        lengths = [
            iv.length(iv.union(s[a:b], e[a:b]))
            for a, b in zip(group_first, [*group_first[1:], len(g)], strict=True)
        ]
        return g[group_first], np.asarray(lengths, dtype=np.int64)
    s = s + gid * width
    e = e + gid * width
    run_end = np.maximum.accumulate(e)
    new_run = np.concatenate([[True], s[1:] > run_end[:-1]])
    run_first = np.flatnonzero(new_run)
    run_last = np.append(run_first[1:] - 1, len(s) - 1)
    run_length = run_end[run_last] - s[run_first]
    # A group always starts a new run, so each group's runs are contiguous.
    first_run_of_group = np.searchsorted(run_first, group_first)
    return g[group_first], np.add.reduceat(run_length, first_run_of_group)


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
    end = start + _wait_ns(matched)
    # Rows grouped by rank with one sort (a mask per rank is quadratic in ranks).
    order = np.argsort(ranks, kind="stable")
    sorted_ranks = ranks[order]
    uniq = distinct(ranks)
    lo = np.searchsorted(sorted_ranks, uniq, side="left")
    hi = np.searchsorted(sorted_ranks, uniq, side="right")
    for rank, a, b in zip(uniq.tolist(), lo.tolist(), hi.tolist(), strict=True):
        idx = order[a:b]
        idx = idx[mask[idx]]
        out[int(rank)] = iv.union(start[idx], end[idx])
    return out


def _wait_ns(matched: Table) -> np.ndarray:
    return np.rint(matched["wait_ms"] * NS_PER_MS).astype(np.int64)


def waited_ns_by(matched: Table, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct ``group`` value (one per row, sorted out), the merged waiting time
    of its rows with a wait: ``wait_intervals`` lengths for many selections at once."""
    m = matched["wait_ms"] > 0
    start = matched["start_ns"][m]
    return union_lengths(group[m], start, start + _wait_ns(matched)[m])


def p2p_wait_share(matched: Table) -> float | None:
    """The share of the matched wait spent in point-to-point operations (None: no wait)."""
    if not len(matched):
        return None
    wait = matched["wait_ms"]
    total = float(wait.sum())
    if total <= 0:
        return None
    p2p = _named(matched["name"], matched.vocab["name"], P2P_NAMES)
    return float(wait[p2p].sum()) / total


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
    # Waiting per (collective, rank), merged, for every collective in one pass.
    combo = _group_ids([matched["name"].astype(np.int64), matched["pg"].astype(np.int64)])
    rank_id = _group_ids([matched["rank"]])
    groups, waited = waited_ns_by(matched, combo * (int(rank_id.max()) + 1) + rank_id)
    waited_by_combo = np.zeros(int(combo.max()) + 1, dtype=np.int64)
    np.add.at(waited_by_combo, groups // (int(rank_id.max()) + 1), waited)
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
        wait_ns = int(waited_by_combo[combo[m][0]])
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
