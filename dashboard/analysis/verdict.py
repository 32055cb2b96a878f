"""One verdict from both sources of evidence: the trace window and the light layer.

``reconcile(window, whole)`` takes what the trace window found over the steps
it covers (``Evidence``) and what the light layer found over the whole run
(``Evidence``, or None without a collective log) and returns a ``RunVerdict``:
one headline, the rank and cause it names, when the pattern holds, and, when
the two disagree, why. ``with_contention(stragglers, whole, steps)`` re-reads a
window's stragglers with the light layer's run-queue wait at the window's steps.

The rule: the whole run says **whether and when** a rank holds the others back
(it sees every step); a window says **why** at the steps it covers (it sees
every op). So the headline is the whole run's, with the window's cause when
both name the same rank. When they differ the whole run leads and the
disagreement is explained, never printed as a second headline:

- the whole run's pattern does not apply at the window's steps (it starts
  after them, ends before them, or none of its late steps is in the window);
- the window's rank is, over the whole run at those same steps, within the
  run's noise (its mean excess there is below the persistent threshold);
- the whole run finds lateness that rotates between ranks, which explains a
  window's single rank.

Without a light layer (or without a window) the one source there is decides.

``with_pipeline(verdict, pipelines, has_gpu)``: in a pipeline, a stage waits on its
neighbours by design, so no rank "arrives last" at a receive; a stage that
computes more than the others (``analysis.pipeline``'s bottleneck) holds them
back all the same. When the verdict names nobody, or names that stage, the
headline names the stage, its rank and what rebalancing would save.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.diagnosis import (
    CAUSE_MIN_SHARE,
    MIN_FRACTION,
    MIN_MS,
    SHARED_CONTENTION,
    _median_rows,
)
from rankscope.dashboard.analysis.imbalance import median
from rankscope.dashboard.analysis.pipeline import BUSY_RATIO, Pipeline, PipelineStage
from rankscope.dashboard.analysis.results import Cause, Pattern, RotatingLateness, Straggler
from rankscope.dashboard.analysis.wholerun import WholeRun

LARGE_WAIT_SHARE = 0.20  # a "no straggler" next to this much waiting must say why


@dataclass(frozen=True)
class Evidence:
    """What one source found: its stragglers (worst first) over steps first..last."""

    stragglers: list[Straggler]
    rotating: RotatingLateness | None
    first_step: int
    last_step: int
    wait_share: float | None = None  # the ranks' mean collective wait / step
    p2p_share: float | None = None  # of that wait, the share in point-to-point receives


# A straggler's pattern, or a run-level one: the lateness rotates, or nobody is late.
VerdictPattern = Pattern | Literal["rotating", "none"]
Source = Literal["whole_run", "window", "both"]
# How the window and the whole run relate (``single``: only one of them exists).
Agreement = Literal["agree", "differ", "window_only", "whole_run_only", "single"]


@dataclass(frozen=True)
class RunVerdict:
    """The report's first line and what it rests on."""

    headline: str
    rank: int | None  # the rank that holds the others back (None: none)
    cause: Cause | None
    pattern: VerdictPattern
    source: Source  # the evidence the headline rests on
    agreement: Agreement
    explanation: str | None = None  # why the window and the whole run differ
    onset_step: int | None = None
    end_step: int | None = None
    period_steps: int | None = None
    window_steps: list[int] = field(default_factory=list)  # [first, last], [] without a window


def _late_at(s: Straggler, first: int, last: int) -> bool:
    """Whether straggler ``s``'s pattern applies anywhere in steps first..last."""
    if s.onset_step is not None and s.onset_step > last:
        return False
    if s.end_step is not None and s.end_step < first:
        return False
    if s.pattern == "intermittent" and s.steps:
        return any(first <= st.step <= last for st in s.steps)
    return True


def _whole_excess_at(whole: WholeRun, rank: int, first: int, last: int) -> float | None:
    """The whole run's mean excess of ``rank`` at steps first..last (None: not covered)."""
    ex, idx = whole.diagnosis.excess_ms, whole.steps_index
    if ex is None or idx is None or rank not in whole.ranks:
        return None
    at = (idx >= first) & (idx <= last)
    if not at.any():
        return None
    return float(ex[whole.ranks.index(rank)][at].mean())


def _threshold(whole: WholeRun) -> float:
    steps = [s.step_ms for s in whole.steps]
    return max(MIN_FRACTION * median(steps) if steps else 0.0, MIN_MS)


def with_contention(
    stragglers: list[Straggler], whole: WholeRun | None, steps: list[int]
) -> list[Straggler]:
    """A window's stragglers, the cause of each re-read from the run-queue wait at its steps.

    A window straggler whose extra time is mostly run-queue wait (its wait beyond
    the others' median, per step, at least half its excess) is ``host_contention``;
    when the others queue half as much or more, it is the host's load
    (``shared_contention``) and no alarm (severity low).
    """
    q = None if whole is None else whole.queued_ms
    if q is None or whole is None or whole.steps_index is None or not steps or not stragglers:
        return stragglers
    at = (whole.steps_index >= steps[0]) & (whole.steps_index <= steps[-1])
    if not at.any():
        return stragglers
    out = []
    for s in stragglers:
        if s.rank not in whole.ranks or s.excess_ms_per_step <= 0:
            out.append(s)
            continue
        k = whole.ranks.index(s.rank)
        own = q[k][at]
        others = _median_rows(np.delete(q, k, axis=0)[:, at])
        extra = float((own - others).mean())
        if extra < CAUSE_MIN_SHARE * s.excess_ms_per_step:
            out.append(s)
            continue
        shared = float(others.mean()) >= SHARED_CONTENTION * float(own.mean())
        out.append(
            replace(
                s,
                cause="host_contention",
                cause_detail=None,
                cause_breakdown={**s.cause_breakdown, "host_contention": round(extra, 3)},
                cause_excess_ms_per_step=round(extra, 3),
                severity="low" if shared else s.severity,
                shared_contention=shared,
                hint=wording.CONTENTION_HINT,
            )
        )
    return out


def queued_ms_at(whole: WholeRun | None, steps: list[int]) -> dict[int, float]:
    """Per rank, its run-queue wait in ms per step over steps[0]..steps[-1] (light layer)."""
    if whole is None or whole.queued_ms is None or whole.steps_index is None or not steps:
        return {}
    at = (whole.steps_index >= steps[0]) & (whole.steps_index <= steps[-1])
    if not at.any():
        return {}
    return {r: float(whole.queued_ms[k][at].mean()) for k, r in enumerate(whole.ranks)}


def temper(
    stragglers: list[Straggler], whole: WholeRun | None, steps: list[int]
) -> list[Straggler]:
    """A window's stragglers, severity low where the whole run at the same steps sees the
    rank within its noise (mean excess under the persistent threshold): a few steps'
    difference that every step of the run does not bear out is no alarm."""
    if whole is None or not steps:
        return stragglers
    out = []
    for s in stragglers:
        excess = _whole_excess_at(whole, s.rank, steps[0], steps[-1])
        low = excess is not None and excess < _threshold(whole) and s.pattern == "persistent"
        out.append(replace(s, severity="low") if low else s)
    return out


def _single(ev: Evidence, source: Source) -> RunVerdict:
    """The verdict of one source alone (a rank late only under shared load is not named)."""
    ev = replace(ev, stragglers=[s for s in ev.stragglers if not s.shared_contention])
    if ev.rotating is not None:
        return RunVerdict(
            wording.verdict_rotating(sorted(ev.rotating.counts)), None, None, "rotating", source,
            "single",
        )  # fmt: skip
    if ev.stragglers:
        s = ev.stragglers[0]
        return RunVerdict(
            wording.verdict_straggler(s),
            s.rank,
            s.cause,
            s.pattern,
            source,
            "single",
            onset_step=s.onset_step,
            end_step=s.end_step,
            period_steps=s.period_steps,
        )
    headline = wording.verdict_none(ev.wait_share, _p2p(ev), _n_steps(ev))
    return RunVerdict(headline, None, None, "none", source, "single")


def _n_steps(ev: Evidence) -> int:
    return ev.last_step - ev.first_step + 1


def reconcile(
    window: Evidence | None, whole: WholeRun | None, whole_ev: Evidence | None
) -> RunVerdict:
    """The one verdict (see the module docstring); ``whole_ev`` is ``whole`` as ``Evidence``."""
    if whole is None or whole_ev is None:
        assert window is not None, "reconcile needs at least one source"
        return _single(window, "window")
    # A rank late only while every rank queued for a CPU is the host's load: said, not named.
    whole_ev = replace(
        whole_ev, stragglers=[s for s in whole_ev.stragglers if not s.shared_contention]
    )
    if window is not None:
        window = replace(
            window, stragglers=[s for s in window.stragglers if not s.shared_contention]
        )
    if window is None:
        return _single(whole_ev, "whole_run")
    first, last = window.first_step, window.last_step
    span = [first, last]
    w_top = window.stragglers[0] if window.stragglers else None
    base = _single(whole_ev, "whole_run")
    if whole_ev.rotating is not None:
        why = (
            wording.window_explained_by_rotation(w_top.rank, first, last)
            if w_top is not None
            else None
        )
        return replace(
            base, agreement="differ" if why else "agree", explanation=why, window_steps=span
        )
    if whole_ev.stragglers:
        top = whole_ev.stragglers[0]
        if w_top is not None and w_top.rank == top.rank and _late_at(top, first, last):
            # Same rank: the whole run says when, the window says why at its steps.
            cause = top.cause
            if (
                top.cause not in ("host_contention", "data_loading", "hardware")
                and w_top.cause != "unknown"
            ):
                cause = w_top.cause
            # The size is the window's (what its table and findings print at those
            # steps: one number for one quantity on the page); the when is the run's.
            named = replace(
                top,
                cause=cause,
                cause_detail=w_top.cause_detail if cause == w_top.cause else top.cause_detail,
                caused_wait_ms_per_step=w_top.caused_wait_ms_per_step,
                severity=w_top.severity,
            )
            return replace(
                base,
                headline=wording.verdict_straggler(named),
                cause=cause,
                source="both",
                agreement="agree",
                window_steps=span,
            )
        if not _late_at(top, first, last):
            why = wording.window_outside_pattern(
                top.rank, first, last, w_top.rank if w_top else None
            )
        elif w_top is not None:
            why = _window_rank_explained(window, whole, w_top, first, last)
        else:
            why = wording.window_within_noise(top.rank, first, last)
        return replace(base, agreement="differ", explanation=why, window_steps=span)
    # The whole run names nobody.
    if w_top is not None:
        why = _window_rank_explained(window, whole, w_top, first, last)
        return replace(
            base,
            headline=wording.verdict_none(
                whole_ev.wait_share or window.wait_share,
                not whole_ev.wait_share and _p2p(window),
                max(_n_steps(whole_ev), _n_steps(window)),
            ),
            agreement="differ",
            explanation=why,
            window_steps=span,
        )
    wait = whole_ev.wait_share if whole_ev.wait_share is not None else window.wait_share
    p2p = whole_ev.wait_share is None and _p2p(window)
    headline = wording.verdict_none(wait, p2p, max(_n_steps(whole_ev), _n_steps(window)))
    return replace(base, headline=headline, agreement="agree", window_steps=span)


def _p2p(ev: Evidence) -> bool:
    """Most of the wait is in point-to-point receives (a pipeline), not collectives."""
    return ev.p2p_share is not None and ev.p2p_share >= 0.5


def _window_rank_explained(
    window: Evidence, whole: WholeRun, s: Straggler, first: int, last: int
) -> str:
    """Why the window's rank is not the whole run's verdict."""
    excess = _whole_excess_at(whole, s.rank, first, last)
    if s.cause == "host_contention":
        return wording.window_contention(s.rank, first, last, s.shared_contention)
    if excess is not None and excess < _threshold(whole):
        return wording.window_within_noise(s.rank, first, last, excess)
    return wording.window_only(s.rank, first, last)


def _stage_of(p: Pipeline, rank: int | None) -> PipelineStage:
    return next(s for s in p.stages if s.rank == rank)


def with_pipeline(
    verdict: RunVerdict | None, pipelines: list[Pipeline], has_gpu: bool
) -> RunVerdict | None:
    """The verdict, naming a pipeline's bottleneck stage (module docstring)."""
    slow = [
        p for p in pipelines if p.bottleneck_rank is not None and p.bottleneck_stage is not None
    ]
    if verdict is None and pipelines and all(p.source == "light" for p in pipelines):
        # No window and no collectives: the light layer's sends and receives are the evidence.
        verdict = RunVerdict(
            headline="", rank=None, cause=None, pattern="none", source="whole_run",
            agreement="single",
        )  # fmt: skip
    if verdict is not None and not slow and pipelines and verdict.pattern == "none":
        # No rank is late and no stage is slow: the waiting is the pipeline's bubble.
        p = max(pipelines, key=lambda q: len(q.stages))
        return replace(
            verdict,
            headline=wording.verdict_balanced_pipeline(
                len(p.stages),
                p.busy_ratio,
                p.bubble,
                p.ideal_bubble,
                p.cpu_ratio,
                wall_only=p.busy_ratio >= BUSY_RATIO
                and p.cpu_ratio is not None
                and p.cpu_ratio < BUSY_RATIO,
            ),
        )
    if verdict is None or not slow:
        return verdict
    # A stage named late (at its data-parallel collectives, say) that itself waits on its
    # pipeline's bottleneck more than the bottleneck waits: it is late because of it.
    held = next(
        (
            q
            for q in slow
            if verdict.rank in q.ranks
            and verdict.rank != q.bottleneck_rank
            and _stage_of(q, verdict.rank).bubble > _stage_of(q, q.bottleneck_rank).bubble
        ),
        None,
    )
    if (
        verdict.pattern != "none"
        and verdict.rank not in {p.bottleneck_rank for p in slow}
        and held is None
    ):
        return verdict  # another rank holds the job back over the whole run: that leads
    p = held or max(slow, key=lambda q: q.saving_ms_per_step)
    assert p.bottleneck_rank is not None and p.bottleneck_stage is not None
    others = [s.bubble for s in p.stages if s.stage != p.bottleneck_stage]
    cause: Cause = "gpu_compute" if has_gpu else "cpu_compute"
    headline = wording.verdict_pipeline(
        p.bottleneck_stage,
        p.bottleneck_rank,
        cause,
        p.busy_ratio,
        float(np.mean(others)) if others else 0.0,
        p.saving_ms_per_step,
    )
    why = verdict.explanation
    if held is not None and verdict.rank is not None:
        why = wording.late_behind_stage(verdict.rank, p.bottleneck_rank)
    return replace(
        verdict,
        headline=headline,
        explanation=why,
        rank=p.bottleneck_rank,
        cause=cause,
        pattern="persistent",
        source="whole_run"
        if p.source == "light"
        else "window"
        if verdict.source == "whole_run" and verdict.pattern == "none"
        else verdict.source,
    )
