"""The report dict (``rankscope.report/1``): the stable JSON contract.

``build_report(analysis)`` serialises the typed results of an ``Analysis``
(see ``results``) into plain JSON-ready data, and computes nothing::

    {"schema": "rankscope.report/1",
     "run": {path, world_size, ranks, steps, skipped_files, step_source, warnings,
             missing_trace: [rank]},
     "ranks": [{rank, step_ms, compute_ms, comm_ms, comm_exposed_ms, comm_wait_ms,
                data_ms, host_ms, idle_ms, gpu_busy_pct,
                temporal_breakdown: {idle_pct, compute_pct, non_compute_pct} | null,
                comm_overlap_pct: float | null, ...extensions}],
     "imbalance": {ranks, <metric>: {mean, max, min, max_over_mean, cv, max_rank},
                   last_arrival: {rank, count, of, excess_ms_per_step,
                                  excess_pct_of_step} | null},
     "stragglers": [Straggler], "collectives": [CollectiveSummary],
     "findings": [Finding], "top_kernels": [KernelSummary],
     "per_step": [StepRank],
     "whole_run": {first_step, last_step, n_steps, stragglers, rotating,
                   joint_saving_ms_per_step, matched_collectives, steps: [StepSummary]} | null,
     "verdict": {headline, rank, cause, pattern, source, agreement, explanation,
                 onset_step, end_step, period_steps, window_steps} | null}

``*_ms`` are per-step means over the analysed steps; ``null`` where the trace
cannot tell. A result type's fields are its JSON fields (``dataclasses.asdict``),
so fields are added, never renamed; fields beyond the issue's contract are
extensions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from rankscope.dashboard.analysis.results import (
    CollectiveSummary,
    Imbalance,
    RotatingLateness,
    StepRank,
    TelemetrySummary,
)

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis

SCHEMA = "rankscope.report/1"


def _ms(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), 3)


def telemetry_json(t: TelemetrySummary | None) -> dict[str, Any] | None:
    """Samples, then one entry per field (``mean_in_steps`` only where steps had samples)."""
    if t is None:
        return None
    out: dict[str, Any] = {"samples": t.samples, "samples_in_steps": t.samples_in_steps}
    for name, stats in t.fields.items():
        entry: dict[str, float] = {"mean": stats.mean, "max": stats.max}
        if stats.mean_in_steps is not None:
            entry["mean_in_steps"] = stats.mean_in_steps
        out[name] = entry
    if t.throttled_pct is not None:
        out["throttled_pct"] = t.throttled_pct
    return out


def imbalance_json(imb: Imbalance) -> dict[str, Any]:
    out: dict[str, Any] = {"ranks": imb.ranks}
    out.update({metric: asdict(spread) for metric, spread in imb.metrics.items()})
    out["last_arrival"] = None if imb.last_arrival is None else asdict(imb.last_arrival)
    # extensions: the diagnosis' run-level results
    out["joint_saving_ms_per_step"] = imb.joint_saving_ms_per_step
    out["noise_ms"] = imb.noise_ms
    out["rotating"] = rotating_json(imb.rotating)
    return out


def rotating_json(rot: RotatingLateness | None) -> dict[str, Any] | None:
    """Rotating lateness: string rank keys, each stall with its step, rank and lag."""
    if rot is None:
        return None
    return {
        "counts": {str(r): n for r, n in rot.counts.items()},
        "steps": [
            {"step": st.step, "rank": r, "lag_ms": st.lag_ms}
            for st, r in zip(rot.steps, rot.ranks_by_step, strict=True)
        ],
        "wait_fraction": rot.wait_fraction,
        "est_saving_ms_per_step": rot.est_saving_ms_per_step,
    }


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def flat_asdict(o: Any) -> dict[str, Any]:
    """``asdict`` for a dataclass whose fields are plain values (no nested dataclass,
    list or dict): 20x quicker, which counts per rank and per step at 1,024 ranks."""
    return {name: getattr(o, name) for name in _field_names(type(o))}


def step_json(row: StepRank) -> dict[str, Any]:
    out = flat_asdict(row)
    out["step_ms"] = _ms(row.step_ms)
    return out


def collective_json(c: CollectiveSummary) -> dict[str, Any]:
    out = asdict(c)
    # JSON object keys are strings.
    out["last_arrival_counts"] = {str(r): n for r, n in c.last_arrival_counts.items()}
    return out


def _rank_json(a: Analysis, r: int) -> dict[str, Any]:
    run = a.run
    pr = a.per_rank[r]
    has_comm = a.n_comms.get(r, 0) > 0
    util = a.utilisation[r]
    hta = a.hta[r]
    idle = a.idle[r]
    return {
        "rank": r,
        "step_ms": _ms(pr.step_ms),
        "compute_ms": _ms(pr.compute_ms),
        "comm_ms": _ms(pr.comm_ms) if has_comm else None,
        "comm_exposed_ms": _ms(pr.comm_exposed_ms) if has_comm else None,
        "comm_wait_ms": _ms(pr.comm_wait_ms) if has_comm and len(a.per_rank) > 1 else None,
        "data_ms": _ms(pr.data_ms),
        "host_ms": _ms(pr.host_ms),
        "idle_ms": _ms(pr.idle_ms),
        "gpu_busy_pct": util.gpu_busy_pct,
        "temporal_breakdown": None
        if hta.temporal_breakdown is None
        else asdict(hta.temporal_breakdown),
        "comm_overlap_pct": hta.comm_overlap_pct,
        # extensions
        "comm_overlapped_ms": _ms(pr.comm_overlapped_ms) if has_comm else None,
        "memcpy_ms": _ms(pr.memcpy_ms),
        "data_exposed_ms": _ms(pr.data_exposed_ms),
        "caused_wait_ms": _ms(a.caused_wait_ms.get(r)),
        "sm_efficiency_pct": util.sm_efficiency_pct,
        "achieved_occupancy_pct": util.achieved_occupancy_pct,
        "streams": [flat_asdict(s) for s in util.streams],
        "idle_breakdown": None if idle is None else flat_asdict(idle),
        "telemetry": telemetry_json(a.telemetry[r]),
        "device": run.ranks[r].meta.get("device_name") or None,
        "files": run.ranks[r].files,
    }


def build_report(a: Analysis) -> dict[str, Any]:
    run = a.run
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
            # ranks with step timings but no trace beside traced ranks
            "missing_trace": a.missing_trace,
        },
        "ranks": [_rank_json(a, r) for r in sorted(a.per_rank)],
        "imbalance": imbalance_json(a.imbalance),
        "stragglers": [asdict(s) for s in a.stragglers],
        "collectives": [collective_json(c) for c in a.collective_summary],
        "findings": [asdict(f) for f in a.findings],
        "top_kernels": [asdict(k) for k in a.kernels],
        # extension: per rank and step, the evidence behind the stragglers
        "per_step": [step_json(row) for row in a.per_step],
        # extension: every step of every rank, from the light layer
        "whole_run": whole_run_json(a),
        # extension: the one verdict from the window and the whole run (``verdict``)
        "verdict": asdict(a.verdict) if a.verdict is not None else None,
    }


def whole_run_json(a: Analysis) -> dict[str, Any] | None:
    w = a.whole_run
    if w is None:
        return None
    d = w.diagnosis
    return {
        "first_step": w.first_step,
        "last_step": w.last_step,
        "n_steps": w.n_steps,
        "stragglers": [asdict(s) for s in a.whole_run_stragglers],
        "rotating": rotating_json(d.rotating),
        "joint_saving_ms_per_step": d.joint_saving_ms_per_step,
        "noise_ms": d.noise_ms,
        "matched_collectives": w.matched_collectives,
        "unmatched_collectives": w.unmatched_collectives,
        "steps": [asdict(s) for s in w.steps],
    }
