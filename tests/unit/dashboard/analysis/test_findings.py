"""Each findings rule (``analysis.findings``) on small hand-made facts of a 100 ms step."""

from __future__ import annotations

import itertools
from dataclasses import replace

from rankscope.dashboard.analysis import findings as fd
from rankscope.dashboard.analysis.results import (
    BREAKDOWN_COLUMNS,
    CollectiveSummary,
    GpuUtilisation,
    RankBreakdown,
    RotatingLateness,
    StepStall,
    Straggler,
)

STEP_MS = 100.0


def breakdown(rank: int, **values: float) -> RankBreakdown:
    return RankBreakdown.from_columns(
        rank, {c: 0.0 for c in BREAKDOWN_COLUMNS} | {"step_ms": STEP_MS} | values
    )


def straggler(
    rank: int, saving_ms: float, severity: str = "high", pattern: str = "persistent"
) -> Straggler:
    return Straggler(
        rank=rank,
        cause="data_loading",
        severity=severity,
        excess_ms_per_step=saving_ms,
        caused_wait_ms_per_step=saving_ms + 5,
        cause_excess_ms_per_step=saving_ms,
        last_arrivals=6,
        evidence="data loading 70.0 ms/step vs 40.0 ms",
        pattern=pattern,
        steps=[StepStall(7, 300.0)] if pattern == "intermittent" else [],
        est_saving_ms_per_step=saving_ms,
    )


def facts(
    per_rank: list[RankBreakdown],
    stragglers: tuple[Straggler, ...] = (),
    busy_pct: tuple[float | None, ...] | None = None,
    has_gpu: bool = True,
) -> fd.RunFacts:
    busy = busy_pct or tuple(90.0 for _ in per_rank)
    return fd.RunFacts(
        per_rank={b.rank: b for b in per_rank},
        stragglers=list(stragglers),
        utilisation={
            b.rank: GpuUtilisation(gpu_busy_pct=p) for b, p in zip(per_rank, busy, strict=True)
        },
        has_gpu=has_gpu,
        step_ms=STEP_MS,
    )


def test_straggler_rule_takes_the_stragglers_saving_and_severity() -> None:
    f = facts([breakdown(r) for r in range(3)], (straggler(2, 30.0),))
    (found,) = fd.straggler_rule(f)
    assert (found.kind, found.ranks, found.severity) == ("straggler", [2], "high")
    assert found.est_saving_ms_per_step == 30.0  # its what-if share, not the 35 ms waited
    assert found.title == "Rank 2 holds the others back: data loading"
    assert found.detail.startswith("Rank 2 arrives last at collectives; the other 2 rank(s) wait")
    # Severity is the straggler's own, even where the mean step would grade it otherwise.
    (found,) = fd.straggler_rule(
        facts([breakdown(r) for r in range(3)], (straggler(2, 30, "low"),))
    )
    assert found.severity == "low"


def test_an_intermittent_straggler_is_worded_as_stalls() -> None:
    f = facts([breakdown(r) for r in range(3)], (straggler(1, 20.0, pattern="intermittent"),))
    (found,) = fd.straggler_rule(f)
    assert found.title == "Rank 1 stalls the others at a few steps: data loading"


def test_rotating_rule_names_every_rank_and_step() -> None:
    rot = RotatingLateness(
        counts={0: 1, 1: 1, 2: 1},
        steps=[StepStall(4, 60.0), StepStall(5, 61.0), StepStall(6, 59.0)],
        ranks_by_step=[2, 0, 1],
        wait_fraction=0.4,
        est_saving_ms_per_step=25.0,
    )
    f = fd.RunFacts(
        per_rank={r: breakdown(r) for r in range(3)},
        stragglers=[],
        utilisation={r: GpuUtilisation() for r in range(3)},
        has_gpu=False,
        step_ms=STEP_MS,
        rotating=rot,
    )
    (found,) = fd.rotating_rule(f)
    assert (found.kind, found.ranks, found.severity) == ("rotating", [0, 1, 2], "high")
    assert found.est_saving_ms_per_step == 25.0
    assert "wait 40% of the step" in found.detail
    assert "step 4: rank 2 ~60 ms, step 5: rank 0 ~61 ms, step 6: rank 1 ~59 ms" in found.detail
    assert fd.rotating_rule(facts([breakdown(r) for r in range(3)])) == []


def all_reduce(mb_per_step: float, n_steps: int = 10) -> dict[str, object]:
    """RunFacts fields for one all-reduce per step of ``mb_per_step`` MB."""
    summary = CollectiveSummary(
        name="allreduce",
        pg="0",
        count=n_steps,
        bytes=int(mb_per_step * 1e6),
        transfer_ms=0.0,
        wait_ms=0.0,
        last_arrival_counts={},
        effective_gbps=None,
    )
    return {"collectives": [summary], "n_steps": n_steps}


def test_exposed_communication_rule_counts_transfer_not_waiting() -> None:
    # 20 ms exposed of which 5 ms waiting: 15 ms of transfer nothing hides; 30 MB a step
    # between 2 ranks (each sends and receives 2(n-1)/n = 1x the message) need 30 ms at 1 GB/s
    ranks = [breakdown(r, comm_ms=30, comm_exposed_ms=20, comm_wait_ms=5) for r in range(2)]
    (found,) = fd.exposed_communication_rule(replace(facts(ranks), **all_reduce(30)))
    assert (found.est_saving_ms_per_step, found.severity) == (15.0, "medium")
    assert found.ranks == [0, 1]
    assert "20.0 ms/step of communication is exposed (of 30.0 ms)" in found.detail
    # mostly waiting: a straggler's finding, not this one (8 - 5 = 3 ms < 5% of the step)
    waiting = [breakdown(r, comm_ms=30, comm_exposed_ms=8, comm_wait_ms=5) for r in range(2)]
    assert fd.exposed_communication_rule(replace(facts(waiting), **all_reduce(30))) == []


def test_exposed_communication_needs_bytes_that_take_that_long() -> None:
    ranks = [breakdown(r, comm_ms=30, comm_exposed_ms=20, comm_wait_ms=5) for r in range(2)]
    # 0.15 MB a step needs 0.15 ms at 1 GB/s: the 15 ms are not transfer (a rank not
    # running, a busy host), so no finding; nor without sizes to tell
    assert fd.exposed_communication_rule(replace(facts(ranks), **all_reduce(0.15))) == []
    assert fd.exposed_communication_rule(facts(ranks)) == []
    # 8 MB a step: 8 ms of the 15 can be transfer; the saving is capped there (low)
    (found,) = fd.exposed_communication_rule(replace(facts(ranks), **all_reduce(8)))
    assert (found.est_saving_ms_per_step, found.severity) == (8.0, "low")


def test_data_loading_rule_leaves_the_straggler_out() -> None:
    ranks = [breakdown(0, data_exposed_ms=6), breakdown(1, data_exposed_ms=8)]
    ranks.append(breakdown(2, data_exposed_ms=70))
    (found,) = fd.data_loading_rule(facts(ranks, (straggler(2, 30.0),)))
    assert found.ranks == [0, 1]
    assert (found.est_saving_ms_per_step, found.severity) == (7.0, "low")
    assert fd.data_loading_rule(facts([breakdown(0, data_exposed_ms=4)])) == []


def test_one_rank_s_data_wait_is_not_every_rank_s() -> None:
    # The window named no straggler (too few steps) but rank 1 waits 60 ms a step for
    # data: a mean of 21 ms over the three used to be "Data loading stalls the step on
    # every rank"; the typical rank (median 2.4 ms) pays under 5% of the step.
    ranks = [breakdown(0, data_exposed_ms=2.4), breakdown(1, data_exposed_ms=60.8)]
    ranks.append(breakdown(2, data_exposed_ms=0.4))
    assert fd.data_loading_rule(facts(ranks)) == []


def test_host_bound_rule_needs_a_gpu_to_starve() -> None:
    ranks = [breakdown(0, host_ms=10), breakdown(1, host_ms=14)]
    (found,) = fd.host_bound_rule(facts(ranks))
    assert (found.est_saving_ms_per_step, found.severity, found.ranks) == (12.0, "medium", [0, 1])
    assert found.title == "The GPU waits on the host"
    assert fd.host_bound_rule(facts(ranks, has_gpu=False)) == []


def test_compute_imbalance_rule_names_the_slowest_rank() -> None:
    ranks = [breakdown(0, compute_ms=40), breakdown(1, compute_ms=40)]
    ranks.append(breakdown(2, compute_ms=60))
    (found,) = fd.compute_imbalance_rule(facts(ranks))
    assert found.title == "Rank 2 computes 1.5x the median"
    assert (found.ranks, found.est_saving_ms_per_step, found.severity) == ([2], 20.0, "high")
    # 10% more compute is not worth a line (ratio under 1.2)
    even = [breakdown(0, compute_ms=40), breakdown(1, compute_ms=44)]
    assert fd.compute_imbalance_rule(facts(even)) == []


def test_compute_stretched_while_waiting_for_a_cpu_is_no_imbalance() -> None:
    ranks = [breakdown(0, compute_ms=40), breakdown(1, compute_ms=40)]
    ranks.append(breakdown(2, compute_ms=60))
    # rank 2 queued 17 ms/step more than the others: 3 ms of its 20 ms extra is left
    queued = {0: 2.0, 1: 3.0, 2: 19.5}
    assert fd.compute_imbalance_rule(replace(facts(ranks), queued_ms=queued)) == []
    # queued 8 ms more: 12 ms of its extra compute is its own
    (found,) = fd.compute_imbalance_rule(replace(facts(ranks), queued_ms={0: 2, 1: 3, 2: 10.5}))
    assert (found.est_saving_ms_per_step, found.severity) == (12.0, "medium")
    # under the 5 ms floor: scheduling noise on a busy host, whatever the share of a short step
    tiny = [
        breakdown(0, compute_ms=1.0),
        breakdown(1, compute_ms=1.0),
        breakdown(2, compute_ms=4.0),
    ]
    assert fd.compute_imbalance_rule(facts(tiny)) == []


def test_low_gpu_utilisation_rule_saves_nothing_itself() -> None:
    ranks = [breakdown(0), breakdown(1), breakdown(2)]
    (found,) = fd.low_gpu_utilisation_rule(facts(ranks, busy_pct=(30.0, 40.0, None)))
    assert found.title == "GPUs are busy only 35% of the step"
    assert (found.severity, found.est_saving_ms_per_step) == ("medium", 0.0)
    assert "65.0 ms/step the GPU does nothing" in found.detail
    (idle,) = fd.low_gpu_utilisation_rule(facts(ranks, busy_pct=(10.0, 10.0, 10.0)))
    assert idle.severity == "high"
    assert fd.low_gpu_utilisation_rule(facts(ranks, busy_pct=(60.0, 60.0, 60.0))) == []


def test_findings_are_sorted_by_saving() -> None:
    ranks = [
        breakdown(0, compute_ms=40, host_ms=12),
        breakdown(1, compute_ms=40, host_ms=12),
        breakdown(2, compute_ms=60, host_ms=12),
    ]
    found = fd.findings(facts(ranks))
    assert [(f.kind, f.est_saving_ms_per_step) for f in found] == [
        ("compute_imbalance", 20.0),
        ("host_bound", 12.0),
    ]
    assert fd.findings(facts(ranks), rules=(fd.host_bound_rule,))[0].kind == "host_bound"
    no_steps = fd.RunFacts({}, [], {}, has_gpu=True, step_ms=0.0)
    assert fd.findings(no_steps) == []


def test_severity_orders_findings_before_saving() -> None:
    """A [high] never follows a [low]: a low-confidence straggler with a large saving comes
    after a high finding with a smaller one, and the heading names that order."""
    from rankscope.dashboard.analysis import wording

    ranks = [breakdown(r, compute_ms=40) for r in range(3)]
    found = fd.findings(facts(ranks, (straggler(1, 30.0, "low"),), busy_pct=(10.0, 10.0, 10.0)))
    assert [(f.kind, f.severity) for f in found] == [
        ("low_gpu_utilisation", "high"),  # saves nothing by itself, yet high
        ("straggler", "low"),
    ]
    order = ["high", "medium", "low"]
    for a, b in itertools.pairwise(found):
        assert order.index(a.severity) <= order.index(b.severity)
    assert wording.FINDINGS_ORDER.startswith("most severe first")
