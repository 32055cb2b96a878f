"""The verdict: sentences about the stragglers, the Overview's figures, the straggler
and findings tables, all read from the typed ``Report``.

``stragglers_frame`` -> one row per straggler (``STRAGGLER_COLUMNS``);
``findings_frame`` -> severity, finding, saving ms/step, ranks; ``headline_numbers``
-> the Overview's four figures as text. Sentences come from ``wording``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.results import Straggler
from rankscope.dashboard.app.model.basics import finite_mean, num

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import Report


def _stalls(straggler: Straggler) -> list[tuple[int, float]]:
    """An intermittent straggler's (step, lag_ms) stalls, as ``wording`` takes them."""
    return [(int(s.step), float(s.lag_ms)) for s in straggler.steps]


def straggler_sentence(report: Report) -> str | None:
    """ "Rank 1 is the straggler: data loading. Its work ... takes 43.1 ms/step more ..." or None.

    Its figures are the straggler table's ``excess ms/step`` and ``others wait ms/step``.

    An intermittent straggler reads "Rank 2 stalled ~302 ms at step 11: ...", never a mean.
    """
    if not report.stragglers:
        return None
    s = report.stragglers[0]
    return wording.straggler_headline(
        s.rank,
        s.cause,
        s.excess_ms_per_step,
        s.caused_wait_ms_per_step,
        report.run.step_ms or 0.0,
        s.pattern,
        _stalls(s),
        s.cause_detail,
    )


def straggler_next(report: Report) -> str | None:
    """Where to look next about the worst straggler (untraced host time), or None."""
    hint = report.stragglers[0].hint if report.stragglers else None
    return wording.straggler_next(hint) if hint else None


def joint_saving_sentence(report: Report) -> str | None:
    """With two stragglers or more: what fixing them all together saves (one what-if)."""
    joint = report.imbalance.joint_saving_ms_per_step
    n = len(report.stragglers)
    return wording.joint_saving_text(n, joint) if n > 1 and joint is not None else None


def rotating_sentence(report: Report) -> str | None:
    """With no straggler but stalls that move between ranks: the sentence that says so."""
    rotating = report.imbalance.rotating
    if report.stragglers or not rotating:
        return None
    return wording.no_straggler_sentence(len(report.run.ranks), True, None, sorted(rotating.counts))


def straggler_ranks(report: Report) -> list[int]:
    """The stragglers' ranks, worst first: the lines the per-step chart highlights."""
    return [int(s.rank) for s in report.stragglers]


STRAGGLER_COLUMNS = [
    "rank",
    "pattern",
    "cause",
    "confidence",
    "severity",
    "saving ms/step",
    "excess ms/step",
    "others wait ms/step",
    "stalls",
]


def stragglers_frame(report: Report) -> pd.DataFrame:
    """One row per straggler, worst first: how it is late, why, how sure, what fixing it saves.

    ``excess ms/step`` (a mean) stays empty for an intermittent straggler, whose
    ``stalls`` say where and how late instead; ``saving ms/step`` is its share of the
    joint what-if.
    """
    rows = []
    for s in report.stragglers:
        intermittent = s.pattern == "intermittent"
        rows.append(
            {
                "rank": s.rank,
                "pattern": s.pattern,
                "cause": wording.cause_name(s.cause, s.cause_detail),
                "confidence": s.confidence,
                "severity": s.severity,
                "saving ms/step": num(s.est_saving_ms_per_step),
                "excess ms/step": np.nan if intermittent else num(s.excess_ms_per_step),
                "others wait ms/step": num(s.caused_wait_ms_per_step),
                "stalls": wording.stalls_text(_stalls(s)) if intermittent else None,
            }
        )
    return pd.DataFrame(rows, columns=STRAGGLER_COLUMNS)


def findings_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "severity": f.severity,
                "finding": f.title,
                "saving ms/step": f.est_saving_ms_per_step,
                "ranks": ", ".join(map(str, f.ranks)),
            }
            for f in report.findings
        ],
        columns=["severity", "finding", "saving ms/step", "ranks"],
    )


def _ranks_text(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def headline_numbers(report: Report) -> dict[str, str | None]:
    """The Overview's four figures, as text: step time, straggler, waiting, GPU busy.

    Waiting (``wording.WAIT_TILE``) and GPU busy are the mean over the rank rows that
    measured them, the straggler included: not the callout's "the other ranks wait",
    which is what the ranks other than the straggler wait for it.
    """
    run = report.run
    stragglers = report.stragglers
    waits = [r.comm_wait_ms for r in report.ranks if r.comm_wait_ms is not None]
    busy = [r.gpu_busy_pct for r in report.ranks if r.gpu_busy_pct is not None]
    return {
        "step": f"{wording.ms(run.step_ms)} ms" if run.step_ms is not None else "–",
        "straggler": _ranks_text([s.rank for s in stragglers]) if stragglers else "none",
        "straggler_cause": (
            wording.cause_name(stragglers[0].cause, stragglers[0].cause_detail)
            if stragglers
            else None
        ),
        "wait": f"{wording.ms(finite_mean(waits))} ms/step" if waits else "–",
        "busy": f"{finite_mean(busy):.0f}%" if busy else "no GPU",
    }
