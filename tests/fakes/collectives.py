"""Hand-built matched collectives: a job whose per-step work per rank is given in ms.

Rank r does ``gaps[r][s]`` ms of its own work before the one all_reduce of step
s; the collective ends for everyone when the last rank arrives plus a
``TRANSFER_MS`` transfer. So step s lasts ``max_r gaps[r][s] + TRANSFER_MS`` and
the others wait for the rank with the longest gap: numbers checkable by hand.
"""

from __future__ import annotations

import numpy as np

from rankscope.dashboard.ingest.table import Table

MS = 1_000_000
TRANSFER_MS = 2.0


def run_of(gaps: list[list[float]]) -> tuple[Table, dict[int, dict[int, tuple[int, int]]]]:
    """The matched table and step windows of a job whose per-step gaps are ``gaps[rank][step]``."""
    g = np.asarray(gaps, dtype=np.float64)
    n_ranks, n_steps = g.shape
    cols: dict[str, list[object]] = {
        k: []
        for k in (
            "instance",
            "rank",
            "step",
            "name",
            "pg",
            "bytes",
            "start_ns",
            "dur_ms",
            "transfer_ms",
            "wait_ms",
            "last_rank",
        )
    }
    windows: dict[int, dict[int, tuple[int, int]]] = {r: {} for r in range(n_ranks)}
    end = 0
    for s in range(n_steps):
        starts = [end + int(g[r, s] * MS) for r in range(n_ranks)]
        new_end = max(starts) + int(TRANSFER_MS * MS)
        last = int(np.argmax(g[:, s]))
        for r in range(n_ranks):
            dur = (new_end - starts[r]) / MS
            cols["instance"].append(s)
            cols["rank"].append(r)
            cols["step"].append(s)
            cols["name"].append("all_reduce")
            cols["pg"].append("0")
            cols["bytes"].append(1024)
            cols["start_ns"].append(starts[r])
            cols["dur_ms"].append(dur)
            cols["transfer_ms"].append(TRANSFER_MS)
            cols["wait_ms"].append(dur - TRANSFER_MS)
            cols["last_rank"].append(last)
            windows[r][s] = (end, new_end)
        end = new_end
    data = {k: (v if k in ("name", "pg") else np.asarray(v)) for k, v in cols.items()}
    return Table.build(data, strings=("name", "pg")), windows
