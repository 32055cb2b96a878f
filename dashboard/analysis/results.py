"""The typed results that cross from the analysis to the report and the dashboard.

Each analysis module returns these dataclasses; ``report.build_report`` gathers
them into the typed ``Report`` (``rankscope.report/1``), which holds many of them
as they are. A field's name is its JSON name, so a field added here (with a
default) is added to the report and its schema, never renamed; closed sets of
words (cause, pattern, severity, confidence, finding kind) are ``Literal`` types.
Times are ms per analysed step, ``None`` (or NaN in ``RankBreakdown``) where the
trace cannot tell. No logic lives here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

# The columns of the per-(rank, step) breakdown table, in report order (see ``breakdown``).
BREAKDOWN_COLUMNS = (
    "step_ms",
    "compute_ms",
    "comm_ms",
    "comm_exposed_ms",
    "comm_overlapped_ms",
    "comm_wait_ms",
    "memcpy_ms",
    "data_ms",
    "data_exposed_ms",
    "host_ms",
    "idle_ms",
    "gpu_busy_ms",
)

# Why a straggler is late: the keys of ``wording.CAUSE_NAME`` (see ``diagnosis``).
Cause = Literal[
    "data_loading",
    "host",
    "gpu_compute",
    "cpu_compute",
    "communication",
    "hardware",
    "host_contention",
    "unknown",
]
CAUSES: tuple[Cause, ...] = get_args(Cause)
# What a cause says more precisely: ``host`` time that no traced op covers.
CauseDetail = Literal["untraced", "off_cpu"]
# How a straggler is late over the analysed steps (see ``diagnosis``).
Pattern = Literal["persistent", "intermittent"]
PATTERNS: tuple[Pattern, ...] = get_args(Pattern)
# How much a finding or straggler costs (``diagnosis.severity``), and how sure a verdict is.
Severity = Literal["high", "medium", "low"]
Confidence = Literal["high", "medium", "low"]
# What a finding is about: one per rule of ``findings``.
FindingKind = Literal[
    "missing_trace",
    "straggler",
    "rotating",
    "exposed_communication",
    "data_loading",
    "host_bound",
    "compute_imbalance",
    "low_gpu_utilisation",
    "pipeline_bottleneck",
    "pipeline_bubble",
    "memory_near_limit",
    "memory_imbalance",
    "memory_growth",
]
FINDING_KINDS: tuple[FindingKind, ...] = get_args(FindingKind)


@dataclass(frozen=True)
class RankBreakdown:
    """One rank's step breakdown, averaged over the analysed steps (NaN: not measured)."""

    rank: int
    step_ms: float
    compute_ms: float
    comm_ms: float
    comm_exposed_ms: float
    comm_overlapped_ms: float
    comm_wait_ms: float
    memcpy_ms: float
    data_ms: float
    data_exposed_ms: float
    host_ms: float
    idle_ms: float
    gpu_busy_ms: float

    @classmethod
    def from_columns(cls, rank: int, values: dict[str, float]) -> RankBreakdown:
        return cls(rank=rank, **{c: values.get(c, math.nan) for c in BREAKDOWN_COLUMNS})

    def value(self, column: str) -> float:
        """The mean of one ``BREAKDOWN_COLUMNS`` column, by name."""
        if column not in BREAKDOWN_COLUMNS:
            raise KeyError(column)
        return float(getattr(self, column))


@dataclass(frozen=True)
class TemporalBreakdown:
    """HTA's temporal breakdown of one rank's GPU span, in percent."""

    idle_pct: float
    compute_pct: float
    non_compute_pct: float


@dataclass(frozen=True)
class HtaMetrics:
    temporal_breakdown: TemporalBreakdown | None
    comm_overlap_pct: float | None


@dataclass(frozen=True)
class StreamBusy:
    stream: int
    busy_ms_per_step: float
    busy_pct: float
    kernels: int


@dataclass(frozen=True)
class GpuUtilisation:
    """How busy one rank's GPU was, from its trace (all None without GPU events)."""

    gpu_busy_pct: float | None = None
    sm_efficiency_pct: float | None = None
    achieved_occupancy_pct: float | None = None
    streams: list[StreamBusy] = field(default_factory=list)


@dataclass(frozen=True)
class IdleBreakdown:
    """Why one rank's GPU was idle, ms per step (HTA's idle-time categories)."""

    host_wait_ms: float
    kernel_wait_ms: float
    other_ms: float


@dataclass(frozen=True)
class FieldStats:
    """One telemetry field: mean and max over the run, mean inside the analysed steps."""

    mean: float
    max: float
    mean_in_steps: float | None = None


@dataclass(frozen=True)
class TelemetrySummary:
    samples: int
    samples_in_steps: int
    fields: dict[str, FieldStats] = field(default_factory=dict)
    throttled_pct: float | None = None  # share of samples with clocks held back


@dataclass(frozen=True)
class KernelSummary:
    """One GPU kernel: mean time per step and rank, and its spread across ranks."""

    name: str
    ms_per_step: float
    share_pct: float
    calls_per_step: float
    min_rank_ms: float
    max_rank_ms: float
    max_rank: int
    spread_cv: float


@dataclass(frozen=True)
class CollectiveSummary:
    """One collective name in one process group, over the analysed steps."""

    name: str
    pg: str
    count: int
    bytes: int | None
    transfer_ms: float
    wait_ms: float
    last_arrival_counts: dict[int, int]
    effective_gbps: float | None


@dataclass(frozen=True)
class MetricSpread:
    """One breakdown metric across ranks."""

    mean: float
    max: float
    min: float
    max_over_mean: float | None
    cv: float | None
    max_rank: int


@dataclass(frozen=True)
class LastArrival:
    """The rank that arrives last most often, straggler or not, and what it costs."""

    rank: int
    count: int
    of: int
    excess_ms_per_step: float
    excess_pct_of_step: float | None


@dataclass(frozen=True)
class StepStall:
    """One step at which a straggler was late, and by how much (ms beyond the others)."""

    step: int
    lag_ms: float


@dataclass(frozen=True)
class RotatingLateness:
    """Stalls that move between ranks: no single straggler, yet the ranks wait a lot."""

    counts: dict[int, int]  # rank -> steps at which it stalled
    steps: list[StepStall]
    ranks_by_step: list[int]  # the rank that stalled, per entry of ``steps``
    wait_fraction: float  # mean waiting share of the step
    est_saving_ms_per_step: float  # if every rank's work were the median rank's


@dataclass(frozen=True)
class StepRank:
    """One rank in one step: the per-step evidence behind the diagnosis."""

    rank: int
    step: int
    step_ms: float
    excess_ms: float  # its own work before the step's collectives beyond the others' median
    caused_wait_ms: float  # the others' mean wait at collectives where it arrived last
    lag_ms: float  # its arrival lag at the step's last collective, behind the first to arrive


@dataclass(frozen=True)
class Imbalance:
    ranks: int
    metrics: dict[str, MetricSpread] = field(default_factory=dict)
    last_arrival: LastArrival | None = None
    # what fixing every straggler together would save (one what-if, never a sum)
    joint_saving_ms_per_step: float | None = None
    rotating: RotatingLateness | None = None
    noise_ms: float | None = None  # robust spread of the per-step excesses between ranks


@dataclass(frozen=True)
class Straggler:
    """A rank the others wait for, and why (``cause``: one of ``CAUSES``)."""

    rank: int
    cause: Cause
    severity: Severity
    excess_ms_per_step: float
    caused_wait_ms_per_step: float
    # how much more of its cause this rank has than the others' median (None: communication)
    cause_excess_ms_per_step: float | None
    last_arrivals: int
    evidence: str
    # The diagnosis behind it (see ``diagnosis``); defaults keep the contract additive.
    pattern: Pattern = "persistent"
    cause_detail: CauseDetail | None = None  # "untraced": host time with no traced op
    cause_breakdown: dict[str, float] = field(default_factory=dict)  # cause -> ms/step
    confidence: Confidence = "low"
    p_value: float | None = None
    excess_ci_ms: list[float] | None = None  # 90% bootstrap interval of the mean excess
    steps: list[StepStall] = field(default_factory=list)  # intermittent: where and how late
    est_saving_ms_per_step: float = 0.0  # its share of the what-if saving
    hint: str | None = None
    # When its pattern holds (see ``diagnosis``): the steps it started and stopped at (None:
    # at the edge of the analysed steps), the same in seconds from the first step (light
    # layer only), its period (late every Nth step); ``shared_contention``: its run-queue
    # wait is load every rank sees, not its own.
    onset_step: int | None = None
    end_step: int | None = None
    onset_s: float | None = None
    end_s: float | None = None
    period_steps: int | None = None
    shared_contention: bool = False
    # Light layer, a host short of CPU: the other ranks' run-queue wait (ms a step) after
    # waiting for it, which hid its lateness; the verdict judged each rank without it.
    hidden_by_queue_ms: float | None = None


@dataclass(frozen=True)
class Finding:
    """A plain-language statement with the step time it would save (see ``findings``)."""

    kind: FindingKind
    severity: Severity
    title: str
    detail: str
    ranks: list[int]
    est_saving_ms_per_step: float
