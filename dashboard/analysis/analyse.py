"""Run every analysis over a loaded run, once: ``analyse(run, step_range)``.

The result (``Analysis``) holds the tables the report and the dashboard read:
``breakdown`` (rank x step, see ``breakdown``), ``collectives`` (instance x
rank, see ``comms``), and the typed results of ``results``: per-rank means,
HTA-compatible metrics, utilisation, stragglers, collective summaries and
findings. This module only calls the others in order and never words a
sentence; nothing here draws or prints.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankscope.dashboard.analysis import comms as comms_mod
from rankscope.dashboard.analysis import evidence as evidence_mod
from rankscope.dashboard.analysis import findings as findings_mod
from rankscope.dashboard.analysis import hta_compat, imbalance, utilisation, wholerun, wording
from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.analysis import memory as memory_mod
from rankscope.dashboard.analysis import pipeline as pipeline_mod
from rankscope.dashboard.analysis import verdict as verdict_mod
from rankscope.dashboard.analysis.activity import (
    RankActivity,
    malformed_profiler_steps,
    oversized_profiler_steps,
    rank_activity,
)
from rankscope.dashboard.analysis.breakdown import NS_PER_MS, rank_means
from rankscope.dashboard.analysis.diagnosis import coverage_upto
from rankscope.dashboard.analysis.digest import (
    RankDigest,
    coverage_of,
    digest_of,
    telemetry_sums_of,
)
from rankscope.dashboard.analysis.groups import GroupSummary, group_summaries
from rankscope.dashboard.analysis.hang import HangVerdict, LiveRun
from rankscope.dashboard.analysis.nodes import NodesResult, nodes_result
from rankscope.dashboard.analysis.results import (
    BREAKDOWN_COLUMNS,
    CollectiveSummary,
    Finding,
    GpuUtilisation,
    HtaMetrics,
    IdleBreakdown,
    Imbalance,
    KernelSummary,
    RankBreakdown,
    RotatingLateness,
    StepRank,
    Straggler,
    TelemetrySummary,
)
from rankscope.dashboard.ingest.run import Run
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler.errors import RankscopeError

# Ranks (per process group) whose sequence numbers do not line up: each named in a warning.
MAX_SHIFT_WARNINGS = 8


@dataclass
class Analysis:
    run: Run
    steps: list[int]
    step_source: str
    windows: dict[int, dict[int, tuple[int, int]]]
    activities: Mapping[int, RankActivity]  # read when used (the step timeline)
    breakdown: Table
    collectives: Table
    per_rank: dict[int, RankBreakdown]
    has_gpu: bool
    step_ms: float
    hta: dict[int, HtaMetrics]
    utilisation: dict[int, GpuUtilisation]
    telemetry: dict[int, TelemetrySummary | None]
    idle: dict[int, IdleBreakdown | None]
    kernels: list[KernelSummary]
    imbalance: Imbalance
    stragglers: list[Straggler]
    caused_wait_ms: dict[int, float]
    collective_summary: list[CollectiveSummary]
    findings: list[Finding]
    warnings: list[str] = field(default_factory=list)
    per_step: list[StepRank] = field(default_factory=list)  # the diagnosis' per-step evidence
    # every step of every rank, from the light layer (None without a collective log)
    whole_run: wholerun.WholeRun | None = None
    whole_run_stragglers: list[Straggler] = field(default_factory=list)
    hang: HangVerdict | None = None  # a run that hung, desynced or crashed (hang.py)
    live: LiveRun | None = None  # the job still ran when its files were read (hang.py)
    # ranks with step timings (or telemetry) but no trace while other ranks have one:
    # a crash during export or an attach that reached only some ranks
    missing_trace: list[int] = field(default_factory=list)
    # per rank: the sources used, those that could not be and why (evidence.py)
    evidence: list[evidence_mod.RankEvidence] = field(default_factory=list)
    n_comms: dict[int, int] = field(default_factory=dict)  # collectives in each rank's trace
    verdict: verdict_mod.RunVerdict | None = None  # the one verdict from both sources
    nodes: NodesResult | None = None  # the job's nodes and the slow ones (analysis.nodes)
    process_groups: list[GroupSummary] = field(default_factory=list)  # analysis.groups
    pipelines: list[pipeline_mod.Pipeline] = field(default_factory=list)  # analysis.pipeline
    # CPU operators by self time, top 15, in a run with no GPU (utilisation.operator_sums)
    operators: list[KernelSummary] = field(default_factory=list)
    # each rank's peak memory and what stands out (analysis.memory)
    memory: memory_mod.MemoryResult = field(default_factory=memory_mod.MemoryResult)


def _cpu_ms(run: Run, steps: list[int]) -> dict[int, float]:
    """Per rank, its training thread's mean CPU time a step over ``steps`` (step timer),
    where recorded."""
    out = {}
    for r, rd in run.ranks.items():
        marks = rd.step_marks.cols if len(rd.step_marks) else None
        m = wholerun.queue_means(marks, np.asarray(steps))
        if m is not None:
            out[r] = m[1]
    return out


class LazyActivities(Mapping[int, RankActivity]):
    """Each rank's ``RankActivity``, made from its tables on first use."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._done: dict[int, RankActivity] = {}

    def __getitem__(self, rank: int) -> RankActivity:
        if rank not in self._done:
            self._done[rank] = rank_activity(self._run.ranks[rank])
        return self._done[rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self._run.ranks)

    def __len__(self) -> int:
        return len(self._run.ranks)


def parse_step_range(text: str | None) -> tuple[int | None, int | None]:
    """``A:B`` (inclusive), ``A:``, ``:B`` or ``A``; a RankscopeError otherwise."""
    if not text:
        return None, None
    try:
        if ":" not in text:
            n = int(text)
            return n, n
        a, b = text.split(":", 1)
        lo = int(a) if a.strip() else None
        hi = int(b) if b.strip() else None
    except ValueError:
        raise RankscopeError(
            f"--steps {text!r}: expected A:B, A:, :B or A (step numbers)"
        ) from None
    if lo is not None and hi is not None and lo > hi:
        raise RankscopeError(f"--steps {text!r}: the first step is after the last")
    return lo, hi


def _choose_steps(
    windows: dict[int, dict[int, tuple[int, int]]],
    lo: int | None,
    hi: int | None,
    warnings: list[str],
) -> list[int]:
    sets = [set(w) for w in windows.values() if w]
    if not sets:
        return []
    common = set.intersection(*sets)
    if not common:
        common = set.union(*sets)
        warnings.append(
            "the ranks share no step number; each rank's own steps are analysed"
            " (cross-rank comparisons may mix different steps)"
        )
    steps = sorted(s for s in common if (lo is None or s >= lo) and (hi is None or s <= hi))
    return steps


def _mean_step_ms(marks: Table, steps: list[int] | None = None) -> float:
    """Mean step time from the collector's step timer (NaN without one).

    With ``steps``, only those steps count, where the timer has any of them.
    """
    if not len(marks) or "start_ns" not in marks or "end_ns" not in marks:
        return float("nan")
    dur = (marks["end_ns"] - marks["start_ns"]).astype(np.float64)
    keep = dur > 0
    if steps and "step" in marks:
        in_steps = np.isin(marks["step"], np.asarray(steps, dtype=np.int64))
        if (keep & in_steps).any():
            keep &= in_steps
    dur = dur[keep]
    return float(dur.mean()) / 1e6 if len(dur) else float("nan")


def analyse(run: Run, step_range: str | None = None) -> Analysis:
    lo, hi = parse_step_range(step_range)
    warnings = list(run.warnings)
    digests = {rank: digest_of(rd) for rank, rd in run.ranks.items()}
    warnings += _windows_off_their_steps(run, digests)
    windows = {rank: d.windows for rank, d in digests.items()}
    sources = {d.source for d in digests.values()}
    steps = _choose_steps(windows, lo, hi, warnings)
    hang, steps, live, ring_ranks = _hang_of(run, steps, warnings)
    if not steps:
        if step_range:
            available = sorted(set().union(*[set(w) for w in windows.values()]))
            raise RankscopeError(
                f"--steps {step_range}: no step in that range (steps in the run: "
                f"{', '.join(map(str, available)) or 'none'})"
            )
        telemetry_only = any(len(rd.telemetry) or len(rd.step_marks) for rd in run.ranks.values())
        if not telemetry_only and hang is None and live is None:
            raise RankscopeError(f"{run.path}: no events to analyse in any trace")
        # A job that hung or died before its first step still has its verdict: what
        # the ranks' hang records say (who never reached the first collective).
        # A monitor run, or a collector run before its first profiler window:
        # report what was recorded (step times, telemetry, the collective log).
        if not any(len(rd.light_comms) for rd in run.ranks.values()):
            warnings.append(
                "no profiler trace in this run: only step times and telemetry are reported"
                " (capture a window with `rankscope attach RUN --steps N`)"
            )
    step_source = "profiler" if sources == {"profiler"} else "/".join(sorted(sources))
    oversized = oversized_profiler_steps(n for d in digests.values() for n in d.profiler_step_names)
    if oversized:
        warnings.append(wording.oversized_steps(oversized))
    malformed = malformed_profiler_steps(n for d in digests.values() for n in d.profiler_step_names)
    if malformed:
        warnings.append(wording.malformed_steps(malformed))
    if steps == [-1]:
        warnings.append(
            "no ProfilerStep ranges or step marks: the whole trace is analysed as one window"
        )

    has_gpu = any(d.has_gpu for d in digests.values())
    matched = comms_mod.match_collectives({r: d.comms for r, d in digests.items()}, windows, steps)
    waits = comms_mod.wait_intervals(matched)
    breakdown = _step_breakdown(digests, steps, waits)

    # A rank without a trace beside traced ranks: its step timer is all it says.
    missing = sorted(r for r, w in windows.items() if not w) if steps else []
    traced = [r for r in sorted(run.ranks) if r not in missing]
    if steps:
        per_rank = rank_means(breakdown, list(run.ranks))
        for r in missing:
            per_rank[r] = RankBreakdown.from_columns(
                r, {"step_ms": _mean_step_ms(run.ranks[r].step_marks, steps)}
            )
    else:
        # No trace window: only the collector's step timer measured anything.
        per_rank = {
            rank: RankBreakdown.from_columns(rank, {"step_ms": _mean_step_ms(rd.step_marks)})
            for rank, rd in run.ranks.items()
        }
    n_steps = len(steps)
    finite_steps = [v.step_ms for v in per_rank.values() if not np.isnan(v.step_ms)]
    step_ms = float(np.mean(finite_steps)) if finite_steps else 0.0

    multi = hta_compat.has_multiple_profiler_steps(
        {n for d in digests.values() for n in d.profiler_step_names}
    )
    hta = {r: d.hta[multi] for r, d in digests.items()}
    util = {r: utilisation.utilisation_of(d.util, steps) for r, d in digests.items()}
    tel = {
        r: utilisation.telemetry_of(telemetry_sums_of(run.ranks[r], d.windows), steps)
        for r, d in digests.items()
    }
    idle = {r: utilisation.idle_of(d.idle, steps) for r, d in digests.items()}
    memory = memory_mod.memory_result(
        {r: d.memory for r, d in digests.items()},
        {r: rd.meta for r, rd in run.ranks.items()},
        tel,
        steps,
    )
    kernels = utilisation.top_kernels_of({r: d.kernels for r, d in digests.items()}, steps)
    op_sums = {r: d.ops for r, d in digests.items() if d.ops is not None}
    operators = utilisation.top_kernels_of(op_sums, steps) if op_sums and not has_gpu else []
    coverage = {r: coverage_of(run.ranks[r], digests[r], has_gpu) for r in traced}
    stragglers, caused, diag = imbalance.find_stragglers(
        matched, traced, coverage, windows, n_steps, has_gpu
    )
    lights = wholerun.light_ranks(run.ranks)
    shifts = wholerun.seq_shifts(lights)
    whole = wholerun.whole_run(lights, has_gpu, shifts)
    shown = shifts[:MAX_SHIFT_WARNINGS]
    warnings += [
        wording.seq_shift(s.pg, s.rank, s.reference, s.offset, s.steps, s.compared) for s in shown
    ]
    if len(shifts) > len(shown):
        warnings.append(
            f"{len(shifts) - len(shown)} more (rank, process group) with sequence numbers"
            " that do not line up"
        )
    if whole is not None and whole.unmatched_collectives:
        warnings.append(
            wording.unmatched_collectives(
                whole.unmatched_collectives,
                whole.matched_collectives + whole.unmatched_collectives,
            )
        )
    mismatched, n_mismatched = wholerun.name_mismatches(run.ranks, frozenset(s.pg for s in shifts))
    warnings += [wording.collective_mismatch(m.pg, m.seq, m.names) for m in mismatched]
    if n_mismatched > len(mismatched):
        warnings.append(
            f"{n_mismatched - len(mismatched)} more collective(s) the ranks logged under"
            " different names"
        )
    if hang is not None:
        # The hang verdict pairs ranks by (group, seq): shifted numbers pair different ones.
        warnings += [wording.hang_seq_shift(s.pg, s.rank, s.offset) for s in shown]
    whole_stragglers = imbalance.whole_run_stragglers(whole) if whole else []
    evidence = evidence_mod.run_evidence(run)
    warnings += [wording.evidence_warning(e) for e in evidence if not e.complete]
    # The sends and receives the collector timed (gloo) over the run: the pipeline where
    # there is no trace window (and no "no whole-run verdict" warning where there is one)
    light_pipes = pipeline_mod.light_pipelines(
        {r: rd.light_comms for r, rd in run.ranks.items()},
        {r: rd.step_marks for r, rd in run.ranks.items()},
        None if has_gpu else lambda light_steps: _cpu_ms(run, light_steps),
    )
    if whole is None and not light_pipes and any(rd.steps_file for rd in run.ranks.values()):
        # A collector run without a whole-run section says why (issue 26: never silently),
        # naming each file that could not be used.
        why = wholerun.absent_reason(run.ranks, ring_ranks)
        if why:
            unused = evidence_mod.unused_sources(evidence)
            warnings.append(wording.no_whole_run(why, unused))
    stragglers = verdict_mod.temper(
        verdict_mod.with_contention(stragglers, whole, steps), whole, steps
    )
    rotating = diag.rotating
    if not steps and whole is not None:
        # No trace window: the light layer's whole-run verdict is the verdict.
        stragglers, rotating = whole_stragglers, whole.diagnosis.rotating
        warnings.append(
            f"stragglers from the light layer over steps {whole.first_step}-{whole.last_step}"
            " (step timer, DataLoader wait, flight recorder); capture a trace window to see"
            " what the late rank was doing"
        )
    traced_means = {r: per_rank[r] for r in traced}
    imb = imbalance.imbalance(
        traced_means,
        imbalance.last_arrival_summary(matched, caused, step_ms),
        joint_saving_ms_per_step=diag.joint_saving_ms_per_step if diag.n_steps else None,
        rotating=rotating,
        noise_ms=diag.noise_ms if diag.n_steps else None,
    )
    summary = comms_mod.collective_summary(matched, n_steps, len(run.ranks))
    pipes = pipeline_mod.pipelines_of(
        {r: d.comms for r, d in digests.items()},
        windows,
        steps,
        _clock_offsets(run),
        {r: d.p2p for r, d in digests.items()},
        {} if has_gpu else _cpu_ms(run, steps),
    )
    if not pipes and not steps:
        pipes = light_pipes
    if len(run.ranks) > 1 and steps and not len(matched):
        warnings.append("no collectives found in the analysed steps: stragglers cannot be measured")

    if missing:
        warnings.append(
            f"rank(s) {', '.join(map(str, missing))}: step timings but no trace file;"
            " stragglers are measured among the traced ranks only"
        )
    facts = findings_mod.RunFacts(
        per_rank=traced_means,
        stragglers=stragglers,
        utilisation=util,
        has_gpu=has_gpu,
        step_ms=step_ms if step_ms > 0 or whole is None else _whole_step_ms(whole),
        rotating=rotating,
        missing_trace={r: per_rank[r].step_ms for r in missing},
        whole_run_ranks=[] if whole is None else [lr.rank for lr in lights],
        collectives=summary,
        n_steps=n_steps,
        queued_ms=verdict_mod.queued_ms_at(whole, steps),
        pipelines=pipes,
        memory=memory,
    )
    job = nodes_result(
        {r: rd.meta.get("manifest") or {} for r, rd in run.ranks.items()},
        stragglers if steps else [],
        whole_stragglers,
    )
    return Analysis(
        run=run,
        steps=steps,
        step_source=step_source,
        windows=windows,
        activities=LazyActivities(run),
        breakdown=breakdown,
        collectives=matched,
        per_rank=per_rank,
        has_gpu=has_gpu,
        step_ms=step_ms,
        hta=hta,
        utilisation=util,
        telemetry=tel,
        idle=idle,
        kernels=kernels,
        operators=operators,
        imbalance=imb,
        stragglers=stragglers,
        caused_wait_ms=caused,
        collective_summary=summary,
        findings=findings_mod.findings(facts),
        verdict=verdict_mod.with_pipeline(
            _one_verdict(
                steps,
                stragglers,
                diag.rotating,
                facts,
                whole,
                whole_stragglers,
                comms_mod.p2p_wait_share(matched),
            ),
            pipes,
            has_gpu,
        ),
        warnings=warnings,
        per_step=diag.per_step,
        whole_run=whole,
        whole_run_stragglers=whole_stragglers,
        missing_trace=missing,
        evidence=evidence,
        n_comms={r: len(d.comms) for r, d in digests.items()},
        hang=hang,
        live=live,
        nodes=job,
        process_groups=group_summaries(run.ranks, {s.pg for s in shifts})
        if whole is not None
        else [],
        pipelines=pipes,
        memory=memory,
    )


WINDOW_CLOCK_SLACK_S = 10.0  # a window's steps this far from the step log's: another run


def _windows_off_their_steps(run: Run, digests: dict[int, RankDigest]) -> list[str]:
    """A rank's trace window whose ``ProfilerStep`` ranges lie far from the same steps in
    its own step log (a window from another run, or another rank's, under its name):
    named, since its numbers would be read as this run's. Both are CLOCK_REALTIME on
    the rank's host and agree within milliseconds in a run the collector wrote."""
    out = []
    for r, d in sorted(digests.items()):
        marks = run.ranks[r].step_marks
        if not d.windows or not len(marks) or "start_ns" not in marks:
            continue
        logged = dict(zip(marks["step"].tolist(), marks["start_ns"].tolist(), strict=True))
        gaps = [abs(start - logged[s]) / 1e9 for s, (start, _) in d.windows.items() if s in logged]
        # statistics, not np.median: that imports numpy.ma (~25 ms of every report)
        gap = statistics.median(gaps) if gaps else 0.0
        if gap > WINDOW_CLOCK_SLACK_S:
            files = ", ".join(Path(f).name for f in run.ranks[r].files[:2]) or f"rank {r}'s trace"
            out.append(
                f"{files}: its steps lie {gap:,.0f} s from the same steps in"
                f" rank {r}'s step log: a window from another run (or another rank)? Its"
                " numbers are read as this run's"
            )
    return out


def _hang_of(
    run: Run, steps: list[int], warnings: list[str]
) -> tuple[HangVerdict | None, list[int], LiveRun | None, frozenset[int]]:
    """The hang verdict, the analysed steps without those the hang cut short, whether
    the job still runs (``hang.live_run``), and the ranks whose hang evidence holds
    flight-recorder entries."""
    from rankscope.dashboard.analysis import hang as hang_mod

    path = Path(run.path)
    if not path.is_dir():
        return None, steps, None, frozenset()
    records = hang_mod.read_hang_records(path)
    ring_ranks = frozenset(
        r for r, rec in records.ranks.items() if any(e.ring for e in rec.evidence)
    )
    verdict = hang_mod.hang_verdict(records)
    live = hang_mod.live_run(records)
    # A hang record that could not be used is said, not dropped (the verdict does without).
    warnings += [f"{p} (hang evidence)" for p in records.problems]
    for folder in run.earlier_attempts[-3:]:
        # Why torchrun restarted the job: each recent earlier attempt's own verdict.
        try:
            before = hang_mod.hang_verdict(hang_mod.read_hang_records(Path(folder)))
        except (OSError, ValueError) as e:
            warnings.append(f"{Path(folder).name}: its records could not be read ({e})")
            continue
        said = before.headline if before is not None else "no hang or crash on record"
        warnings.append(f"{Path(folder).name} ended: {said}")
    cut = verdict.unfinished_step if verdict is not None else None
    if cut is not None and any(s >= cut for s in steps):
        steps = [s for s in steps if s < cut]
        warnings.append(
            f"the run stopped in step {cut}: performance findings come from the steps before it"
        )
    return verdict, steps, live, ring_ranks


def _step_breakdown(
    digests: dict[int, RankDigest], steps: list[int], waits: dict[int, iv.Intervals]
) -> Table:
    """``breakdown.step_breakdown`` over the analysed steps, from the ranks' digests:
    one row per (rank, step), ``comm_wait_ms`` from the matched collectives."""
    parts: list[dict[str, np.ndarray]] = []
    for rank, d in sorted(digests.items()):
        pos = {s: i for i, s in enumerate(d.windows)}
        rows = np.array([pos[s] for s in steps if s in pos], dtype=np.int64)
        if not len(rows):
            continue
        part = {c: d.breakdown[c][rows] for c in ("rank", "step", *BREAKDOWN_COLUMNS)}
        w = waits.get(rank)
        if w is not None and len(w[0]):
            bounds = np.array(list(d.windows.values()), dtype=np.int64)[rows]
            ns = coverage_upto(w, bounds[:, 1]) - coverage_upto(w, bounds[:, 0])
            part["comm_wait_ms"] = np.clip(ns, 0, None) / NS_PER_MS
        else:
            part["comm_wait_ms"] = np.zeros(len(rows))
        parts.append(part)
    names = ("rank", "step", *BREAKDOWN_COLUMNS)
    if not parts:
        cols = {c: np.zeros(0) for c in names}
    else:
        cols = {c: np.concatenate([p[c] for p in parts]).astype(np.float64) for c in names}
    cols["rank"] = cols["rank"].astype(np.int64)
    cols["step"] = cols["step"].astype(np.int64)
    return Table(cols)


def _clock_offsets(run: Run) -> dict[int, int]:
    """Per rank, the clock offset its collector measured at start (rank's clock - rank 0's)."""
    out = {}
    for r, rd in run.ranks.items():
        v = (rd.meta.get("manifest") or {}).get("clock_offset_ns")
        if isinstance(v, int) and not isinstance(v, bool):
            out[r] = v
    return out


def _whole_step_ms(whole: wholerun.WholeRun) -> float:
    """The mean step time over the light layer's steps (for findings without a trace)."""
    return float(np.mean([s.step_ms for s in whole.steps])) if whole.steps else 0.0


def _one_verdict(
    steps: list[int],
    stragglers: list[Straggler],
    rotating: RotatingLateness | None,
    facts: findings_mod.RunFacts,
    whole: wholerun.WholeRun | None,
    whole_stragglers: list[Straggler],
    p2p_share: float | None = None,
) -> verdict_mod.RunVerdict | None:
    """``verdict.reconcile`` over the window (if any) and the whole run (if any)."""
    window = None
    if steps and facts.per_rank:
        wait = facts.mean_over_ranks("comm_wait_ms")
        window = verdict_mod.Evidence(
            stragglers,
            rotating,
            steps[0],
            steps[-1],
            wait / facts.step_ms if facts.step_ms > 0 and wait == wait else None,
            p2p_share,
        )
    whole_ev = None
    if whole is not None:
        whole_ev = verdict_mod.Evidence(
            whole_stragglers,
            whole.diagnosis.rotating,
            whole.first_step,
            whole.last_step,
            whole.wait_share,
        )
    if window is None and whole_ev is None:
        return None
    return verdict_mod.reconcile(window, whole, whole_ev)
