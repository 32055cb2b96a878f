"""The typed report (``rankscope.report/1``): the stable contract every surface reads.

``build_report(analysis)`` gathers the typed results of an ``Analysis`` (see
``results``) into one ``Report`` and computes nothing. ``render.render_json``
writes it as JSON (msgspec with ``enc_hook``: ``rankscope report --format json``
and the dashboard's download) and ``json_schema()`` is the published schema
(``docs/report.schema.json``, regenerated with ``schema_text()``)::

    Report {schema, run: RunInfo, ranks: [RankRow], imbalance: ImbalanceReport,
            stragglers: [Straggler], collectives: [CollectiveSummary],
            findings: [Finding], top_kernels: [KernelSummary], per_step: [StepRank],
            whole_run: WholeRunReport | None, hang: HangVerdict | None,
            verdict: RunVerdict | None,
            nodes: NodesResult | None, process_groups: [GroupSummary],
            pipelines: [Pipeline], top_operators: [KernelSummary],
            memory: MemoryResult | None}

A type's fields are its JSON fields, in order: fields are added (with a
default, at the end of their type), never renamed. ``*_ms`` are per-step means
over the analysed steps; ``None`` where the trace cannot tell, and a NaN is
written as ``null`` too. Rank-keyed dicts hold int keys (JSON writes them as
strings). Two shapes are not plain records: ``ImbalanceReport`` omits a metric
no rank measured, and ``RankTelemetry`` spreads its fields beside ``samples``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from rankscope.dashboard.analysis.groups import GroupSummary
from rankscope.dashboard.analysis.hang import HangVerdict, LiveRun
from rankscope.dashboard.analysis.memory import MemoryResult
from rankscope.dashboard.analysis.nodes import NodesResult
from rankscope.dashboard.analysis.pipeline import Pipeline
from rankscope.dashboard.analysis.results import (
    CollectiveSummary,
    FieldStats,
    Finding,
    IdleBreakdown,
    KernelSummary,
    LastArrival,
    MetricSpread,
    RotatingLateness,
    StepRank,
    Straggler,
    StreamBusy,
    TelemetrySummary,
    TemporalBreakdown,
)
from rankscope.dashboard.analysis.verdict import RunVerdict
from rankscope.dashboard.analysis.wholerun import GpuSplit, StepSummary

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis

SchemaName = Literal["rankscope.report/1"]
SCHEMA: SchemaName = "rankscope.report/1"


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """A report object: immutable, built by keyword, fields in JSON order."""


class SkippedFile(_Record, frozen=True):
    """A file the run could not use, and why."""

    file: str
    reason: str


class RankEvidenceReport(_Record, frozen=True):
    """What one rank's verdict rests on (``analysis.evidence.RankEvidence``)."""

    rank: int
    used: list[str]  # "trace", "steps", "collectives", "telemetry"
    unused: list[str]  # "collectives: rank1.collectives.jsonl is missing"
    problems: list[str]  # the first records left out, with file, line and reason
    problem_count: int


class RunInfo(_Record, frozen=True):
    path: str
    world_size: int
    ranks: list[int]
    steps: list[int]
    skipped_files: list[str]
    # extensions
    skipped_reasons: list[SkippedFile]
    step_source: str  # "profiler", "collector", ... or "none" (telemetry only)
    step_ms: float | None
    has_gpu: bool
    warnings: list[str]
    missing_trace: list[int]  # ranks with step timings but no trace beside traced ranks
    evidence: list[RankEvidenceReport] = []  # per rank: sources used, and why not
    # torchrun restarts: the attempt this run directory holds (0: the first; None: not
    # recorded), and the folders of the attempts before it, oldest first
    attempt: int | None = None
    earlier_attempts: list[str] = []
    # the job still ran when the report was made (``analysis.hang.live_run``): its ranks
    # running, the furthest step under way; the report covers what was on disk then
    live: LiveRun | None = None


class RankTelemetry:
    """One rank's telemetry: its JSON writes each field beside ``samples``.

    ``{"samples": n, "samples_in_steps": m, "<field>": FieldStats, ...,
    "throttled_pct": x}``; a FieldStats without ``mean_in_steps`` (no sample
    inside the steps) and an unknown ``throttled_pct`` are left out. Not a
    Struct: a field's name is a key of the object, which no Struct can say.
    """

    __slots__ = ("fields", "samples", "samples_in_steps", "throttled_pct")

    def __init__(
        self,
        samples: int,
        samples_in_steps: int,
        fields: dict[str, FieldStats] | None = None,
        throttled_pct: float | None = None,
    ) -> None:
        self.samples = samples
        self.samples_in_steps = samples_in_steps
        self.fields: dict[str, FieldStats] = dict(fields or {})
        self.throttled_pct = throttled_pct

    @classmethod
    def of(cls, t: TelemetrySummary | None) -> RankTelemetry | None:
        if t is None:
            return None
        return cls(t.samples, t.samples_in_steps, t.fields, t.throttled_pct)

    def in_steps(self, name: str) -> float | None:
        """A field's mean inside the analysed steps, else over the run; None if not recorded."""
        stats = self.fields.get(name)
        if stats is None:
            return None
        return stats.mean if stats.mean_in_steps is None else stats.mean_in_steps

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "samples_in_steps": self.samples_in_steps}
        for name, stats in self.fields.items():
            entry: dict[str, float] = {"mean": stats.mean, "max": stats.max}
            if stats.mean_in_steps is not None:
                entry["mean_in_steps"] = stats.mean_in_steps
            out[name] = entry
        if self.throttled_pct is not None:
            out["throttled_pct"] = self.throttled_pct
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RankTelemetry):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RankTelemetry({self.to_json()!r})"


class RankRow(_Record, frozen=True):
    """One rank, ms per step (``comm_*`` None without collectives, ``comm_wait_ms`` alone)."""

    rank: int
    step_ms: float | None
    compute_ms: float | None
    comm_ms: float | None
    comm_exposed_ms: float | None
    comm_wait_ms: float | None
    data_ms: float | None
    host_ms: float | None
    idle_ms: float | None
    gpu_busy_pct: float | None
    temporal_breakdown: TemporalBreakdown | None
    comm_overlap_pct: float | None
    # extensions
    comm_overlapped_ms: float | None
    memcpy_ms: float | None
    data_exposed_ms: float | None
    caused_wait_ms: float | None
    sm_efficiency_pct: float | None
    achieved_occupancy_pct: float | None
    streams: list[StreamBusy]
    idle_breakdown: IdleBreakdown | None
    telemetry: RankTelemetry | None
    device: str | None
    files: list[str]


class StallAt(_Record, frozen=True):
    """One stall of rotating lateness: the step, the rank that stalled, how late (ms)."""

    step: int
    rank: int
    lag_ms: float


class Rotating(_Record, frozen=True):
    """Stalls that move between ranks (see ``results.RotatingLateness``)."""

    counts: dict[int, int]  # rank -> steps at which it stalled
    steps: list[StallAt]
    wait_fraction: float
    est_saving_ms_per_step: float

    @classmethod
    def of(cls, rot: RotatingLateness | None) -> Rotating | None:
        if rot is None:
            return None
        return cls(
            counts=dict(rot.counts),
            steps=[
                StallAt(step=st.step, rank=r, lag_ms=st.lag_ms)
                for st, r in zip(rot.steps, rot.ranks_by_step, strict=True)
            ],
            wait_fraction=rot.wait_fraction,
            est_saving_ms_per_step=rot.est_saving_ms_per_step,
        )


class ImbalanceReport(_Record, frozen=True, kw_only=True, omit_defaults=True):
    """Each ``imbalance.IMBALANCE_METRICS`` across ranks (left out when no rank measured it)."""

    ranks: int
    step_ms: MetricSpread | None = None
    compute_ms: MetricSpread | None = None
    data_ms: MetricSpread | None = None
    host_ms: MetricSpread | None = None
    comm_ms: MetricSpread | None = None
    comm_wait_ms: MetricSpread | None = None
    idle_ms: MetricSpread | None = None
    last_arrival: LastArrival | None
    # extensions: the diagnosis' run-level results
    joint_saving_ms_per_step: float | None
    noise_ms: float | None
    rotating: Rotating | None

    def metric(self, name: str) -> MetricSpread | None:
        """One metric's spread by name (``"step_ms"``, ...); None when not measured."""
        spread = getattr(self, name, None)
        return spread if isinstance(spread, MetricSpread) else None


class WholeRunReport(_Record, frozen=True, kw_only=True):
    """Every step of every rank, from the light layer."""

    first_step: int
    last_step: int
    n_steps: int
    stragglers: list[Straggler]
    rotating: Rotating | None
    joint_saving_ms_per_step: float | None
    noise_ms: float | None
    matched_collectives: int
    unmatched_collectives: int
    # steps the collector's own capture touched, left out of the verdicts
    capture_steps: int = 0
    steps: list[StepSummary]
    # steps whose evidence is NCCL's GPU time, and its transfer/wait split (None: none)
    gpu_steps: int = 0
    gpu_split: GpuSplit | None = None


class Report(_Record, frozen=True, kw_only=True):
    schema: SchemaName = SCHEMA
    run: RunInfo
    ranks: list[RankRow]
    imbalance: ImbalanceReport
    stragglers: list[Straggler]
    collectives: list[CollectiveSummary]
    findings: list[Finding]
    top_kernels: list[KernelSummary]
    # extension: per rank and step, the evidence behind the stragglers
    per_step: list[StepRank]
    # extension: every step of every rank, from the light layer
    whole_run: WholeRunReport | None
    # extension: why the run did not finish (``analysis.hang``); null when it did
    hang: HangVerdict | None = None
    # extension: the one verdict from the window and the whole run (``analysis.verdict``)
    verdict: RunVerdict | None = None
    # extension: the job's nodes and the slow ones (``analysis.nodes``); null when no
    # rank manifest said where it ran
    nodes: NodesResult | None = None
    # extension: each process group's members and who it waits for (``analysis.groups``)
    process_groups: list[GroupSummary] = []
    # chains of ranks passing activations, per stage (analysis.pipeline)
    pipelines: list[Pipeline] = []
    # extension: in a run with no GPU, the CPU operators by self time (an operator less
    # the operators inside it), as top_kernels are for GPU kernels; [] with a GPU
    top_operators: list[KernelSummary] = []
    # extension: each rank's peak memory per device, and the ranks that stand out
    # (``analysis.memory``); null when no rank recorded any memory figure
    memory: MemoryResult | None = None


# ---------------------------------------------------------------- building


def _ms(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), 3)


def _rank_row(a: Analysis, r: int) -> RankRow:
    pr = a.per_rank[r]
    has_comm = a.n_comms.get(r, 0) > 0
    util = a.utilisation[r]
    hta = a.hta[r]
    return RankRow(
        rank=r,
        step_ms=_ms(pr.step_ms),
        compute_ms=_ms(pr.compute_ms),
        comm_ms=_ms(pr.comm_ms) if has_comm else None,
        comm_exposed_ms=_ms(pr.comm_exposed_ms) if has_comm else None,
        comm_wait_ms=_ms(pr.comm_wait_ms) if has_comm and len(a.per_rank) > 1 else None,
        data_ms=_ms(pr.data_ms),
        host_ms=_ms(pr.host_ms),
        idle_ms=_ms(pr.idle_ms),
        gpu_busy_pct=util.gpu_busy_pct,
        temporal_breakdown=hta.temporal_breakdown,
        comm_overlap_pct=hta.comm_overlap_pct,
        comm_overlapped_ms=_ms(pr.comm_overlapped_ms) if has_comm else None,
        memcpy_ms=_ms(pr.memcpy_ms),
        data_exposed_ms=_ms(pr.data_exposed_ms),
        caused_wait_ms=_ms(a.caused_wait_ms.get(r)),
        sm_efficiency_pct=util.sm_efficiency_pct,
        achieved_occupancy_pct=util.achieved_occupancy_pct,
        streams=list(util.streams),
        idle_breakdown=a.idle[r],
        telemetry=RankTelemetry.of(a.telemetry[r]),
        device=a.run.ranks[r].meta.get("device_name") or None,
        files=a.run.ranks[r].files,
    )


def _whole_run(a: Analysis) -> WholeRunReport | None:
    w = a.whole_run
    if w is None:
        return None
    d = w.diagnosis
    return WholeRunReport(
        first_step=w.first_step,
        last_step=w.last_step,
        n_steps=w.n_steps,
        stragglers=list(a.whole_run_stragglers),
        rotating=Rotating.of(d.rotating),
        joint_saving_ms_per_step=d.joint_saving_ms_per_step,
        noise_ms=d.noise_ms,
        matched_collectives=w.matched_collectives,
        unmatched_collectives=w.unmatched_collectives,
        capture_steps=w.capture_steps,
        steps=list(w.steps),
        gpu_steps=w.gpu_steps,
        gpu_split=w.gpu_split,
    )


def build_report(a: Analysis) -> Report:
    run = a.run
    imb = a.imbalance
    return Report(
        run=RunInfo(
            path=run.path,
            world_size=run.world_size,
            ranks=sorted(a.per_rank),
            steps=[s for s in a.steps if s >= 0],
            skipped_files=[s["file"] for s in run.skipped_files],
            skipped_reasons=[
                SkippedFile(file=s["file"], reason=s["reason"]) for s in run.skipped_files
            ],
            step_source=a.step_source,
            step_ms=_ms(a.step_ms),
            has_gpu=a.has_gpu,
            warnings=a.warnings,
            missing_trace=a.missing_trace,
            evidence=[
                RankEvidenceReport(
                    rank=e.rank,
                    used=e.used,
                    unused=e.unused,
                    problems=e.problems,
                    problem_count=e.problem_count,
                )
                for e in a.evidence
            ],
            attempt=run.attempt,
            earlier_attempts=list(run.earlier_attempts),
            live=a.live,
        ),
        ranks=[_rank_row(a, r) for r in sorted(a.per_rank)],
        imbalance=ImbalanceReport(
            ranks=imb.ranks,
            **imb.metrics,
            last_arrival=imb.last_arrival,
            joint_saving_ms_per_step=imb.joint_saving_ms_per_step,
            noise_ms=imb.noise_ms,
            rotating=Rotating.of(imb.rotating),
        ),
        stragglers=list(a.stragglers),
        collectives=list(a.collective_summary),
        findings=list(a.findings),
        top_kernels=list(a.kernels),
        per_step=list(a.per_step),  # the diagnosis rounds them to the µs
        whole_run=_whole_run(a),
        hang=a.hang,
        verdict=a.verdict,
        nodes=a.nodes,
        process_groups=list(a.process_groups),
        pipelines=list(a.pipelines),
        top_operators=list(a.operators),
        memory=a.memory if a.memory.devices else None,
    )


# ---------------------------------------------------------------- JSON and its schema


def enc_hook(o: Any) -> Any:
    """What msgspec cannot write itself: ``RankTelemetry`` and numpy scalars."""
    if isinstance(o, RankTelemetry):
        return o.to_json()
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot encode {type(o).__name__}")


def _schema_hook(t: type) -> dict[str, Any]:
    if t is RankTelemetry:
        return {
            "title": "RankTelemetry",
            "description": RankTelemetry.__doc__.split("\n")[0] if RankTelemetry.__doc__ else "",
            "type": "object",
            "properties": {
                "samples": {"type": "integer"},
                "samples_in_steps": {"type": "integer"},
                "throttled_pct": {"type": "number"},
            },
            "required": ["samples", "samples_in_steps"],
            "additionalProperties": {"$ref": "#/$defs/FieldStats"},
        }
    raise NotImplementedError(t)


def _nullable_numbers(node: Any) -> Any:
    """Every ``number`` also ``null``: the encoder writes a NaN or infinity as null."""
    if isinstance(node, list):
        return [_nullable_numbers(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_numbers(v) for k, v in node.items()}
    if out.get("type") == "number":
        out["type"] = ["number", "null"]
    if "anyOf" in out:  # float | None: number already takes null
        kinds = [n.get("type") for n in out["anyOf"] if isinstance(n, dict)]
        if ["number", "null"] in kinds and "null" in kinds and len(out["anyOf"]) == 2:
            rest = {k: v for k, v in out.items() if k != "anyOf"}
            out = {"type": ["number", "null"], **rest}
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``Report``, from the types (``docs/report.schema.json``)."""
    _, defs = msgspec.json.schema_components([Report, FieldStats], schema_hook=_schema_hook)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": SCHEMA,
        "$ref": "#/$defs/Report",
        "$defs": dict(sorted(defs.items())),
    }
    out = _nullable_numbers(schema)
    assert isinstance(out, dict)
    return out


def schema_text() -> str:
    """``json_schema()`` as the committed file holds it."""
    import json

    return json.dumps(json_schema(), indent=1) + "\n"
