"""Kineto microseconds -> int64 nanoseconds, and which rows fit int64 at all."""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.ingest.kineto.times import MAX_DUR_US, dur_ns, sane_times, to_ns


def test_to_ns_adds_the_base_and_rounds_the_fraction() -> None:
    ts_us = np.array([0.0, 10.5, 1.0006, -2.25])
    assert to_ns(ts_us, 1_000).tolist() == [1_000, 11_500, 2_001, -1_250]
    assert to_ns(ts_us, 0).dtype == np.int64


def test_to_ns_is_exact_where_a_float_product_is_not() -> None:
    ts_us = np.array([1_700_000_000_123_456.75])
    assert to_ns(ts_us, 0).tolist() == [1_700_000_000_123_456_750]
    assert int(ts_us[0] * 1000) != 1_700_000_000_123_456_750


def test_dur_ns_rounds_and_never_goes_negative() -> None:
    assert dur_ns(np.array([2.25, 0.0004, 0.0006, -0.0004])).tolist() == [2_250, 0, 1, 0]


def test_sane_times_keeps_what_fits_int64() -> None:
    ts = np.array([1.0, np.nan, 1e300, 1.0, 1.0, 1.0])
    dur = np.array([1.0, 1.0, 1.0, -1.0, MAX_DUR_US, MAX_DUR_US * 2])
    assert sane_times(ts, dur).tolist() == [True, False, False, False, True, False]
