"""The report dict (``rankscope.report/1``): the stable JSON contract.

``build_report(analysis)`` returns plain JSON-ready data::

    {"schema": "rankscope.report/1",
     "run": {path, world_size, ranks, steps, skipped_files, step_source, warnings},
     "ranks": [{rank, step_ms, compute_ms, comm_ms, comm_exposed_ms, comm_wait_ms,
                data_ms, host_ms, idle_ms, gpu_busy_pct,
                temporal_breakdown: {idle_pct, compute_pct, non_compute_pct} | null,
                comm_overlap_pct: float | null, ...extensions}],
     "imbalance": {...}, "stragglers": [...], "collectives": [...], "findings": [...]}

``*_ms`` are per-step means over the analysed steps; ``null`` where the trace
cannot tell. Fields beyond the issue's contract are extensions, never renames.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis

SCHEMA = "rankscope.report/1"


def _ms(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), 3)


def build_report(a: Analysis) -> dict[str, Any]:
    run = a.run
    ranks_out = []
    for r in sorted(a.per_rank):
        pr = a.per_rank[r]
        has_comm = len(run.ranks[r].comms) > 0
        util = a.utilisation[r]
        ranks_out.append(
            {
                "rank": r,
                "step_ms": _ms(pr["step_ms"]),
                "compute_ms": _ms(pr["compute_ms"]),
                "comm_ms": _ms(pr["comm_ms"]) if has_comm else None,
                "comm_exposed_ms": _ms(pr["comm_exposed_ms"]) if has_comm else None,
                "comm_wait_ms": _ms(pr["comm_wait_ms"])
                if has_comm and len(a.per_rank) > 1
                else None,
                "data_ms": _ms(pr["data_ms"]),
                "host_ms": _ms(pr["host_ms"]),
                "idle_ms": _ms(pr["idle_ms"]),
                "gpu_busy_pct": util["gpu_busy_pct"],
                "temporal_breakdown": a.hta[r]["temporal_breakdown"],
                "comm_overlap_pct": a.hta[r]["comm_overlap_pct"],
                # extensions
                "comm_overlapped_ms": _ms(pr["comm_overlapped_ms"]) if has_comm else None,
                "memcpy_ms": _ms(pr["memcpy_ms"]),
                "data_exposed_ms": _ms(pr["data_exposed_ms"]),
                "caused_wait_ms": _ms(a.caused_wait_ms.get(r)),
                "sm_efficiency_pct": util["sm_efficiency_pct"],
                "achieved_occupancy_pct": util["achieved_occupancy_pct"],
                "streams": util["streams"],
                "idle_breakdown": a.idle[r],
                "telemetry": a.telemetry[r],
                "device": run.ranks[r].meta.get("device_name") or None,
                "files": run.ranks[r].files,
            }
        )
    return {
        "schema": SCHEMA,
        "run": {
            "path": run.path,
            "world_size": run.world_size,
            "ranks": sorted(a.per_rank),
            "steps": [s for s in a.steps if s >= 0],
            "skipped_files": [s["file"] for s in run.skipped_files],
            # extensions
            "skipped_reasons": run.skipped_files,
            "step_source": a.step_source,
            "step_ms": _ms(a.step_ms),
            "has_gpu": a.has_gpu,
            "warnings": a.warnings,
        },
        "ranks": ranks_out,
        "imbalance": a.imbalance,
        "stragglers": a.stragglers,
        "collectives": a.collective_summary,
        "findings": a.findings,
        "top_kernels": a.kernels,
    }
