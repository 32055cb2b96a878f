"""Per-rank, per-step breakdown of wall time.

``step_breakdown(activity, windows, comm_wait)`` returns a Table with one row per
(rank, step) and these columns (all ms, for that step):

- ``step_ms``: wall time of the step window
- ``compute_ms``: GPU compute kernels (host operators in a CPU-only trace)
- ``comm_ms``: communication, all of it; ``comm_exposed_ms`` the part not
  hidden under compute; ``comm_overlapped_ms`` = comm - exposed;
  ``comm_wait_ms`` the part spent waiting for the last rank to arrive
- ``memcpy_ms``: memcpy/memset not under compute or communication
- ``data_ms``: data loading, all of it; ``data_exposed_ms`` the part with no
  GPU work, communication or copy beneath it
- ``host_ms``: host-only time: the host works while the GPU has nothing to do
- ``idle_ms``: neither the GPU nor the host is doing anything we can see
- ``gpu_busy_ms``: any GPU activity (NaN without GPU events)

compute + comm_exposed + memcpy + data_exposed + host + idle = step_ms: the
stacked bar of a step always adds up.

``rank_means(breakdown, ranks)`` -> per rank, a ``RankBreakdown`` of those
columns averaged over its steps (NaN for a rank without steps).
"""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis.activity import RankActivity
from rankscope.dashboard.analysis.results import BREAKDOWN_COLUMNS, RankBreakdown
from rankscope.dashboard.ingest.table import Table

NS_PER_MS = 1e6

__all__ = ["BREAKDOWN_COLUMNS", "rank_means", "step_breakdown"]


def step_breakdown(
    activities: dict[int, RankActivity],
    windows: dict[int, dict[int, tuple[int, int]]],
    steps: list[int],
    comm_wait: dict[int, iv.Intervals],
) -> Table:
    rows: dict[str, list[float]] = {c: [] for c in ("rank", "step", *BREAKDOWN_COLUMNS)}
    for rank, act in sorted(activities.items()):
        compute = act.compute
        comm_exposed = iv.subtract(act.comm, compute)
        covered = iv.combine(compute, act.comm)
        memcpy = iv.subtract(act.memcpy, covered)
        covered = iv.combine(covered, act.memcpy, act.gpu)
        data_exposed = iv.subtract(act.data, covered)
        covered = iv.combine(covered, act.data)
        host_only = iv.subtract(act.host, covered)
        waits = comm_wait.get(rank, iv.empty())
        for step in steps:
            if step not in windows[rank]:
                continue
            lo, hi = windows[rank][step]
            wall = hi - lo

            def ms(x: iv.Intervals, lo: int = lo, hi: int = hi) -> float:
                return iv.clipped_length(x, lo, hi) / NS_PER_MS

            c = ms(compute)
            comm_total = ms(act.comm)
            exposed = ms(comm_exposed)
            mem = ms(memcpy)
            data_exp = ms(data_exposed)
            host = ms(host_only)
            rows["rank"].append(rank)
            rows["step"].append(step)
            rows["step_ms"].append(wall / NS_PER_MS)
            rows["compute_ms"].append(c)
            rows["comm_ms"].append(comm_total)
            rows["comm_exposed_ms"].append(exposed)
            rows["comm_overlapped_ms"].append(comm_total - exposed)
            rows["comm_wait_ms"].append(ms(waits))
            rows["memcpy_ms"].append(mem)
            rows["data_ms"].append(ms(act.data))
            rows["data_exposed_ms"].append(data_exp)
            rows["host_ms"].append(host)
            rows["idle_ms"].append(
                max(wall / NS_PER_MS - (c + exposed + mem + data_exp + host), 0.0)
            )
            rows["gpu_busy_ms"].append(ms(act.gpu) if act.has_gpu else float("nan"))
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    cols["rank"] = cols["rank"].astype(np.int64)
    cols["step"] = cols["step"].astype(np.int64)
    return Table(cols)


def rank_means(breakdown: Table, ranks: list[int]) -> dict[int, RankBreakdown]:
    """Each rank's breakdown averaged over its steps in ``breakdown``."""
    out = {}
    for rank in ranks:
        m = breakdown["rank"] == rank
        out[rank] = RankBreakdown.from_columns(
            rank,
            {
                c: float(np.mean(breakdown[c][m])) if m.any() else float("nan")
                for c in BREAKDOWN_COLUMNS
            },
        )
    return out
