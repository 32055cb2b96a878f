"""The sentences of ``analysis.wording``: what the report and the dashboard both say."""

from __future__ import annotations

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.results import LastArrival


def test_no_straggler_sentence() -> None:
    close = LastArrival(rank=1, count=5, of=6, excess_ms_per_step=2.0, excess_pct_of_step=1.3)
    assert wording.no_straggler_sentence(3, True, close) == (
        "No straggler: rank 1 arrives last most often (5 of 6 collectives), but the others"
        " wait only 2.0 ms/step more for it than for any other rank (1.3% of the step, under"
        " the 5% threshold)."
    )
    spread = LastArrival(rank=1, count=2, of=6, excess_ms_per_step=2.0, excess_pct_of_step=1.3)
    assert wording.no_straggler_sentence(3, True, spread) == (
        "No straggler: the ranks arrive at collectives together."
    )
    assert wording.no_straggler_sentence(1, True, None) is None
    assert wording.no_straggler_sentence(3, False, None) is None


def test_straggler_sentences_name_the_cause_the_same_way() -> None:
    verdict = wording.straggler_verdict(1, "gpu_compute", "high", 41.26)
    assert verdict == (
        "Rank 1 is the straggler (more GPU compute, high): the other ranks wait ~41.3 ms/step"
        " for it."
    )
    headline = wording.straggler_headline(1, "communication", None, 41.26, 150.0)
    assert headline == (
        "Rank 1 is the straggler: communication (its collectives start late or run slowly);"
        " the other ranks wait ~41 ms/step for it (28% of the 150 ms step)."
    )
    title, _ = wording.straggler_finding(1, "gpu_compute", 3, 41.26, "evidence")
    assert title == "Rank 1 holds the others back: more GPU compute"
