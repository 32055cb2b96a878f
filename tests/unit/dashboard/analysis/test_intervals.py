"""Interval algebra (``analysis.intervals``) against a brute-force set of points."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rankscope.dashboard.analysis import intervals as iv

spans = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 15)), max_size=12)


def as_set(pairs: list[tuple[int, int]]) -> iv.Intervals:
    s = np.array([a for a, _ in pairs], dtype=np.int64)
    e = np.array([a + d for a, d in pairs], dtype=np.int64)
    return iv.union(s, e)


def points(x: iv.Intervals) -> set[int]:
    return {p for a, b in zip(*x, strict=True) for p in range(int(a), int(b))}


@settings(max_examples=200, deadline=None)
@given(spans, spans)
def test_interval_algebra_matches_brute_force(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    A, B = as_set(a), as_set(b)
    pa, pb = points(A), points(B)
    assert iv.length(A) == len(pa)
    assert points(iv.intersect(A, B)) == pa & pb
    assert points(iv.subtract(A, B)) == pa - pb
    assert points(iv.combine(A, B)) == pa | pb
    assert iv.clipped_length(A, 10, 30) == len({p for p in pa if 10 <= p < 30})
    # Merged sets are sorted and disjoint.
    s, e = iv.intersect(A, B)
    assert (s[1:] > e[:-1]).all() and (e > s).all()
