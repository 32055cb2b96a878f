"""Kineto's microsecond floats as int64 nanoseconds, and the bounds that keep them int64.

``to_ns(ts_us, base_ns)`` and ``dur_ns(dur_us)`` convert whole columns exactly
(never through a float64 product, which loses nanoseconds past ~2^53);
``sane_times(ts_us, dur_us)`` says which rows fit, so the others can be dropped
(and counted) before converting.
"""

from __future__ import annotations

import numpy as np

# Bounds that keep every timestamp an int64 of nanoseconds: |ts| up to ~2096 in
# microseconds since the epoch, a duration up to ~116 days, a base time up to ~2096.
# Events outside them are dropped (and counted in meta["dropped_events"]).
MAX_TS_US = 4e15
MAX_DUR_US = 1e13
MAX_BASE_NS = 4 * 10**18


def to_ns(ts_us: np.ndarray, base_ns: int) -> np.ndarray:
    """Kineto microsecond floats -> int64 ns, exact where a float64 product would not be."""
    whole = np.floor(ts_us)
    frac_ns = np.rint((ts_us - whole) * 1000.0).astype(np.int64)
    return base_ns + whole.astype(np.int64) * 1000 + frac_ns


def sane_times(ts_us: np.ndarray, dur_us: np.ndarray) -> np.ndarray:
    """Rows whose start and duration keep every nanosecond value inside int64."""
    with np.errstate(invalid="ignore"):
        return (
            np.isfinite(ts_us)
            & np.isfinite(dur_us)
            & (np.abs(ts_us) <= MAX_TS_US)
            & (dur_us >= 0)
            & (dur_us <= MAX_DUR_US)
        )


def dur_ns(dur_us: np.ndarray) -> np.ndarray:
    """Microsecond durations -> int64 ns, rounded to the nearest ns, never negative."""
    return np.maximum(np.rint(dur_us * 1000.0), 0).astype(np.int64)
