"""DataLoader wait per step across ranks, from each rank's step timer.

``wait_by_step(ranks, steps)`` reads ``step_marks`` (step, data_ns; a negative
``data_ns`` is "not recorded") of every rank and returns, per step of ``steps``,
the longest and the median wait over the ranks that recorded one, in ms (NaN
where no rank did). The Whole run page draws them beside the step time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rankscope.dashboard.ingest.run import RankData


def wait_by_step(ranks: Mapping[int, RankData], steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(longest, median) DataLoader wait per step over ranks, ms (NaN unrecorded)."""
    waits = np.full((len(ranks), len(steps)), np.nan)
    for k, (_, rd) in enumerate(sorted(ranks.items())):
        marks = rd.step_marks
        if not len(marks) or "data_ns" not in marks:
            continue
        ms = marks["data_ns"].astype(np.float64) / 1e6
        ms[marks["data_ns"] < 0] = np.nan
        by_step = dict(zip(marks["step"].tolist(), ms.tolist(), strict=True))
        waits[k] = [by_step.get(int(s), np.nan) for s in steps]
    recorded = ~np.isnan(waits).all(axis=0)
    longest = np.full(len(steps), np.nan)
    median = np.full(len(steps), np.nan)
    longest[recorded] = np.nanmax(waits[:, recorded], axis=0)
    median[recorded] = np.nanmedian(waits[:, recorded], axis=0)
    return longest, median
