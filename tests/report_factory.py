"""Small hand-built typed reports (``analysis.report.Report``) for the renderer and view tests.

Every piece has defaults a test overrides by keyword, so a test names only the
numbers it checks: ``make_report(ranks=[rank_row(0, step_ms=100.0)], stragglers=[...])``.
"""

from __future__ import annotations

from typing import Any

from rankscope.dashboard.analysis.report import (
    ImbalanceReport,
    RankRow,
    Report,
    Rotating,
    RunInfo,
    StallAt,
    WholeRunReport,
)
from rankscope.dashboard.analysis.results import (
    CollectiveSummary,
    Finding,
    KernelSummary,
    LastArrival,
    StepRank,
    StepStall,
    Straggler,
)

_ROW_DEFAULTS: dict[str, Any] = {
    "step_ms": None,
    "compute_ms": None,
    "comm_ms": None,
    "comm_exposed_ms": None,
    "comm_wait_ms": None,
    "data_ms": None,
    "host_ms": None,
    "idle_ms": None,
    "gpu_busy_pct": None,
    "temporal_breakdown": None,
    "comm_overlap_pct": None,
    "comm_overlapped_ms": None,
    "memcpy_ms": None,
    "data_exposed_ms": None,
    "caused_wait_ms": None,
    "sm_efficiency_pct": None,
    "achieved_occupancy_pct": None,
    "streams": [],
    "idle_breakdown": None,
    "telemetry": None,
    "device": None,
    "files": [],
}


def rank_row(rank: int, **fields: Any) -> RankRow:
    """One rank row; every number not given is None (not measured)."""
    return RankRow(rank=rank, **(_ROW_DEFAULTS | fields))


def straggler(rank: int, pattern: str = "persistent", **fields: Any) -> Straggler:
    """A high-severity host straggler: 60 ms/step late, the others wait 58 ms/step."""
    base: dict[str, Any] = {
        "rank": rank,
        "cause": "host",
        "severity": "high",
        "excess_ms_per_step": 60.0,
        "caused_wait_ms_per_step": 58.0,
        "cause_excess_ms_per_step": 59.0,
        "last_arrivals": 3,
        "evidence": "",
        "pattern": pattern,
        "cause_detail": None,
        "cause_breakdown": {"host": 59.0},
        "confidence": "high",
        "p_value": 0.001,
        "excess_ci_ms": [50.0, 70.0],
        "steps": [],
        "est_saving_ms_per_step": 55.0,
        "hint": None,
    }
    base |= fields
    base["steps"] = [
        s if isinstance(s, StepStall) else StepStall(s["step"], s["lag_ms"]) for s in base["steps"]
    ]
    return Straggler(**base)


def step_rank(row: dict[str, Any]) -> StepRank:
    return StepRank(**row)


def rotating(counts: dict[int, int], stalls: list[tuple[int, int, float]], **kw: Any) -> Rotating:
    """Rotating lateness from (step, rank, lag_ms) stalls."""
    return Rotating(
        counts=counts,
        steps=[StallAt(step=step, rank=rank, lag_ms=lag) for step, rank, lag in stalls],
        wait_fraction=kw.get("wait_fraction", 0.3),
        est_saving_ms_per_step=kw.get("est_saving_ms_per_step", 30.0),
    )


def make_report(
    *,
    run_ranks: list[int] | None = None,
    steps: list[int] | None = None,
    step_ms: float | None = 90.0,
    world_size: int | None = None,
    ranks: list[RankRow] | None = None,
    stragglers: list[Straggler] | None = None,
    per_step: list[StepRank] | None = None,
    rotating: Rotating | None = None,
    joint: float | None = None,
    last_arrival: LastArrival | None = None,
    findings: list[Finding] | None = None,
    collectives: list[CollectiveSummary] | None = None,
    top_kernels: list[KernelSummary] | None = None,
    whole_run: WholeRunReport | None = None,
    **run: Any,
) -> Report:
    """A report of ``run_ranks`` (default: the rows' ranks, else 0-2) over ``steps``."""
    rows = ranks or []
    in_run = run_ranks if run_ranks is not None else ([r.rank for r in rows] or [0, 1, 2])
    info: dict[str, Any] = {
        "path": "runs/handmade",
        "world_size": world_size if world_size is not None else len(in_run),
        "ranks": in_run,
        "steps": steps if steps is not None else [10, 11, 12, 13, 14],
        "skipped_files": [],
        "skipped_reasons": [],
        "step_source": "profiler",
        "step_ms": step_ms,
        "has_gpu": False,
        "warnings": [],
        "missing_trace": [],
    } | run
    return Report(
        run=RunInfo(**info),
        ranks=rows,
        imbalance=ImbalanceReport(
            ranks=len(rows),
            last_arrival=last_arrival,
            joint_saving_ms_per_step=joint,
            noise_ms=None,
            rotating=rotating,
        ),
        stragglers=stragglers or [],
        collectives=collectives or [],
        findings=findings or [],
        top_kernels=top_kernels or [],
        per_step=per_step or [],
        whole_run=whole_run,
    )
