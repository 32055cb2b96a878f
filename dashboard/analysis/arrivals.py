"""Arrival lag per collective instance: the light layer's evidence with many collectives a step.

Input: ``wholerun.LightRank``s (``coll_key`` = ``wholerun.coll_keys``: group, p2p, seq,
``enqueue_ns``: when the rank issued the instance, ``clock_offset_ns``: its clock
minus rank 0's, and its steps) and the steps to judge. Output of
``arrival_gaps``: a (rank, step) matrix of ms, each rank's *own* lateness summed
over the instances it issued in that step; None where the run has at most one
collective per step (the whole-run evidence then stays "work before the step's
last collective", which needs no cross-rank clock).

Each process group is judged on its own, among its members (the ranks that
logged it): per instance every member logged, ``lag = arrival - first arrival`` (arrival =
``enqueue_ns - clock_offset_ns``, on rank 0's clock). Part of a lag can be
carried over from the instance before in the same group: a collective the ranks
issue without waiting for it (DDP's bucketed all-reduces) leaves a late rank
just as late at the next one. So an instance's lag counts in full where every
rank issued it after the last arrival at the group's previous instance (that
instance held them together: FSDP's all-gathers, whose output the next layer
needs), else only its growth over the previous lag. A rank that waits at early
all-gathers is therefore not late; the rank that arrives last at most of them
adds up its lateness at each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rankscope.dashboard.ingest.table import distinct, isin


class LightRank(Protocol):
    """What this module reads of a ``wholerun.LightRank`` (its own module imports this one)."""

    @property
    def step(self) -> np.ndarray: ...
    @property
    def start_ns(self) -> np.ndarray: ...
    @property
    def end_ns(self) -> np.ndarray: ...
    @property
    def coll_key(self) -> np.ndarray: ...
    @property
    def enqueue_ns(self) -> np.ndarray: ...
    @property
    def clock_offset_ns(self) -> int: ...


NS_PER_MS = 1e6
# Instances handled together (bounds memory to ranks x CHUNK arrival times).
CHUNK = 4096
_PG_SHIFT = 41  # wholerun.PG_SHIFT (that module imports this one)


def _step_of(r: LightRank, ts: np.ndarray) -> np.ndarray:
    """The step number holding each timestamp on r's own clock, -1 outside every step."""
    order = np.argsort(r.start_ns, kind="stable")
    starts = r.start_ns[order]
    k = np.searchsorted(starts, ts, side="right") - 1
    out = np.full(len(ts), -1, dtype=np.int64)
    ok = k >= 0
    idx = order[k[ok]]
    inside = ts[ok] < r.end_ns[idx]
    hit = np.flatnonzero(ok)[inside]
    out[hit] = r.step[idx[inside]]
    return out


def collectives_per_step(ranks: Sequence[LightRank]) -> float:
    """The median number of collectives a rank issued in a step (0 without any)."""
    counts: list[np.ndarray] = []
    for r in ranks:
        s = _step_of(r, r.enqueue_ns)
        s = s[s >= 0]
        if len(s):
            # collectives per step: run lengths of the sorted steps (np.unique would
            # import numpy.ma, ~25 ms of a report's start-up)
            s = np.sort(s)
            edges = np.flatnonzero(s[1:] != s[:-1]) + 1
            counts.append(np.diff(np.concatenate(([0], edges, [len(s)]))))
    if not counts:
        return 0.0
    # np.sort, not np.median: that imports numpy.ma (~25 ms of every report's start-up)
    c = np.sort(np.concatenate(counts))
    mid = len(c) // 2
    return float(c[mid]) if len(c) % 2 else (float(c[mid - 1]) + float(c[mid])) / 2.0


def arrival_gaps(ranks: Sequence[LightRank], steps: np.ndarray) -> np.ndarray | None:
    """Each rank's own arrival lateness summed per step of ``steps`` (ms; module docstring).

    Each process group is judged among its members (the ranks that logged it) over
    the instances they all logged. None with fewer than two ranks, without such an
    instance, or with at most one collective per step.
    """
    n, m = len(ranks), len(steps)
    if n < 2 or not m or collectives_per_step(ranks) <= 1:
        return None
    gaps = np.zeros((n, m))
    groups = [r.coll_key >> _PG_SHIFT for r in ranks]
    found = False
    for g in distinct(np.concatenate(groups)).tolist():
        members = [k for k in range(n) if (groups[k] == g).any()]
        if len(members) < 2:
            continue
        keys = None
        for k in members:
            logged = distinct(ranks[k].coll_key[groups[k] == g])
            keys = logged if keys is None else keys[isin(keys, logged)]
        if keys is None or not len(keys):
            continue
        found = True
        own = _group_gaps([ranks[k] for k in members], keys, steps)
        gaps[members] += own
    return gaps if found else None


def _group_gaps(ranks: Sequence[LightRank], keys: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The members' own lateness per step over one group's instances ``keys`` (sorted)."""
    n, m = len(ranks), len(steps)
    rows = []
    for r in ranks:
        ok = isin(r.coll_key, keys)
        pos = np.searchsorted(keys, r.coll_key[ok])
        order = np.argsort(pos, kind="stable")
        arrival = (r.enqueue_ns[ok] - r.clock_offset_ns)[order]
        step = _step_of(r, r.enqueue_ns[ok])[order]
        col = np.clip(np.searchsorted(steps, step), 0, m - 1)
        col[steps[col] != step] = -1
        rows.append((pos[order], arrival, col))
    gaps = np.zeros((n, m))
    prev_lag = np.zeros(n)
    prev_release: int | None = None
    for c0 in range(0, len(keys), CHUNK):
        c1 = min(c0 + CHUNK, len(keys))
        arr = np.zeros((n, c1 - c0), dtype=np.int64)
        cols = np.full((n, c1 - c0), -1, dtype=np.int64)
        for k, (pos, arrival, col) in enumerate(rows):
            lo, hi = np.searchsorted(pos, [c0, c1])
            arr[k, pos[lo:hi] - c0] = arrival[lo:hi]
            cols[k, pos[lo:hi] - c0] = col[lo:hi]
        first = arr.min(axis=0)
        lag = (arr - first) / NS_PER_MS
        last = arr.max(axis=0)
        own = np.empty_like(lag)
        for j in range(c1 - c0):
            if prev_release is None or first[j] >= prev_release:
                own[:, j] = lag[:, j]  # the previous instance held every member together
            else:
                own[:, j] = np.maximum(lag[:, j] - prev_lag, 0.0)
            prev_lag, prev_release = lag[:, j], int(last[j])
        for k in range(n):
            ok = cols[k] >= 0
            np.add.at(gaps[k], cols[k][ok], own[k][ok])
    return gaps
