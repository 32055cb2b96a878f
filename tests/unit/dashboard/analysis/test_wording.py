"""The sentences of ``analysis.wording``: what the report and the dashboard both say."""

from __future__ import annotations

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.results import LastArrival


def test_no_straggler_sentence() -> None:
    close = LastArrival(rank=1, count=5, of=6, excess_ms_per_step=2.0, excess_pct_of_step=1.3)
    assert wording.no_straggler_sentence(3, True, close) == (
        "No straggler: rank 1 arrives last most often (5 of 6 collectives), but the others"
        " wait only 2.0 ms/step more for it than for any other rank (1.3% of the step): not"
        " consistently or not by enough to stand out from the spread between ranks."
    )
    assert wording.no_straggler_sentence(3, True, close, rotating_ranks=[0, 1, 2]) == (
        "No single straggler: the lateness rotates between ranks 0, 1, 2 (see the rotating"
        " finding)."
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
        "Rank 1 is the straggler: communication (its other collectives are what it was"
        " doing). The other ranks wait 41.3 ms/step for it (28% of the 150.0 ms step)."
    )
    # the figures the straggler table and the finding print: one rounding rule (0.1 ms)
    headline = wording.straggler_headline(1, "data_loading", 39.94, 44.26, 90.0)
    assert "takes 39.9 ms/step more than the other ranks' median" in headline
    assert "the other ranks wait 44.3 ms/step for it (49% of the 90.0 ms step)" in headline
    title, _ = wording.straggler_finding(1, "gpu_compute", 3, 41.26, "evidence")
    assert title == "Rank 1 holds the others back: more GPU compute"


def test_a_stall_is_said_at_its_step_never_as_a_mean() -> None:
    verdict = wording.straggler_verdict(
        2, "host", "high", 17.0, "intermittent", [(19, 302.4)], "untraced"
    )
    assert verdict == (
        "Rank 2 stalled ~302 ms at step 19 (host-side work outside any traced op, high):"
        " the other ranks waited for it there."
    )
    headline = wording.straggler_headline(
        2, "data_loading", 1.0, 17.0, 30.0, "intermittent", [(19, 302.4), (40, 280.0)]
    )
    assert headline.startswith("Rank 2 stalled ~302 ms at step 19, ~280 ms at step 40: data")


def test_the_breakdown_names_the_top_components_with_numbers() -> None:
    text = wording.evidence_breakdown(
        {"data_loading": 43.31, "host": 7.96, "gpu_compute": 0.67, "cpu_compute": 0.01}, None
    )
    assert text == (
        "of which data loading 43.3 ms/step, host-side work 8.0 ms/step,"
        " more GPU compute 0.7 ms/step"
    )
    assert wording.evidence_breakdown({"host": 60.1}, "untraced") == (
        "of which host-side work outside any traced op 60.1 ms/step"
    )


def test_the_step_bars_caption_is_true_for_its_bars() -> None:
    """ "Equal bars are normal" only above equal bars; bars apart are called apart."""
    equal = wording.step_bars_caption(99.0, 101.5)
    assert "within 3% of each other" in equal
    apart = wording.step_bars_caption(81.0, 102.0)
    assert apart.startswith("The bars range from 81.0 to 102.0 ms (26% apart).")
    assert "equal" not in apart.lower()


def test_a_trace_without_steps_is_one_window_not_a_step() -> None:
    """hta/alexnet has no ProfilerStep: its 43 s are the trace, not "43425.4 ms/step"."""
    scope = wording.run_scope(1, 1, [], "43425.4")
    assert scope.startswith("1 rank(s) of 1, no steps marked (no ProfilerStep)")
    assert "one window of 43425.4 ms" in scope and "ms/step on average" not in scope
