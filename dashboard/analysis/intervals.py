"""Interval algebra on numpy arrays: a set of intervals is a pair (starts, ends).

Every function takes and returns int64 arrays; a *merged* set is sorted and has
no overlaps (``union`` makes one). Lengths are in the inputs' unit (ns here).
"""

from __future__ import annotations

import numpy as np

Intervals = tuple[np.ndarray, np.ndarray]

_EMPTY = np.zeros(0, dtype=np.int64)


def empty() -> Intervals:
    return _EMPTY, _EMPTY


def union(starts: np.ndarray, ends: np.ndarray) -> Intervals:
    """Merge possibly overlapping intervals into a sorted, disjoint set."""
    if len(starts) == 0:
        return empty()
    order = np.argsort(starts, kind="stable")
    s = np.asarray(starts, dtype=np.int64)[order]
    e = np.asarray(ends, dtype=np.int64)[order]
    run_end = np.maximum.accumulate(e)
    # A new group starts where an interval begins after everything before it ended.
    new_group = np.empty(len(s), dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] > run_end[:-1]
    idx = np.flatnonzero(new_group)
    group_end_idx = np.append(idx[1:] - 1, len(s) - 1)
    return s[idx], run_end[group_end_idx]


def combine(*sets: Intervals) -> Intervals:
    """The union of several interval sets."""
    if not sets:
        return empty()
    return union(np.concatenate([s for s, _ in sets]), np.concatenate([e for _, e in sets]))


def close_gaps(iv: Intervals, max_gap: int) -> Intervals:
    """A merged set with every gap of at most ``max_gap`` between two intervals filled."""
    s, e = iv
    if len(s) < 2:
        return iv
    new_group = np.empty(len(s), dtype=bool)
    new_group[0] = True
    new_group[1:] = s[1:] - e[:-1] > max_gap
    idx = np.flatnonzero(new_group)
    return s[idx], e[np.append(idx[1:] - 1, len(s) - 1)]


def length(iv: Intervals) -> int:
    s, e = iv
    return int((e - s).sum()) if len(s) else 0


def clip(iv: Intervals, lo: int, hi: int) -> Intervals:
    """A merged set cut to [lo, hi]."""
    s, e = iv
    if len(s) == 0:
        return iv
    i = np.searchsorted(e, lo, side="right")
    j = np.searchsorted(s, hi, side="left")
    s2, e2 = s[i:j].copy(), e[i:j].copy()
    if len(s2):
        s2[0] = max(s2[0], lo)
        e2[-1] = min(e2[-1], hi)
    keep = e2 > s2
    return s2[keep], e2[keep]


def clipped_length(iv: Intervals, lo: int, hi: int) -> int:
    return length(clip(iv, lo, hi))


def intersect(a: Intervals, b: Intervals) -> Intervals:
    """The intersection of two merged sets."""
    (as_, ae), (bs, be) = a, b
    if len(as_) == 0 or len(bs) == 0:
        return empty()
    # Every intersection piece starts at a start of one set inside an interval of the other.
    ends_out = []
    starts_out = []
    for s_arr, e_arr, other_s, other_e in ((as_, ae, bs, be), (bs, be, as_, ae)):
        k = np.searchsorted(other_s, s_arr, side="right") - 1
        ok = (k >= 0) & (s_arr < other_e[np.clip(k, 0, None)])
        starts_out.append(s_arr[ok])
        ends_out.append(np.minimum(e_arr[ok], other_e[k[ok]]))
    s = np.concatenate(starts_out)
    e = np.concatenate(ends_out)
    keep = e > s
    return union(s[keep], e[keep])


def subtract(a: Intervals, b: Intervals) -> Intervals:
    """Parts of merged set ``a`` not covered by merged set ``b``."""
    if len(a[0]) == 0 or len(b[0]) == 0:
        return a
    return complement_within(b, a)


def complement_within(b: Intervals, a: Intervals) -> Intervals:
    """``a`` minus ``b`` for merged sets, via the gaps of ``b``."""
    bs, be = b
    big = np.iinfo(np.int64).max // 4
    gap_s = np.concatenate([[-big], be])
    gap_e = np.concatenate([bs, [big]])
    keep = gap_e > gap_s
    return intersect(a, (gap_s[keep], gap_e[keep]))


def overlap_length(a: Intervals, b: Intervals) -> int:
    return length(intersect(a, b))
