"""The comparison's rules on hand-built steps: the decomposition adds up, the noise
rule keeps noise out, the origin names the rank's own work, the gate parses and holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rankscope.dashboard.analysis import compare as cmp
from rankscope.dashboard.analysis import compare_wording as words
from rankscope.dashboard.analysis.compare import (
    LIGHT_COMPONENTS,
    TRACE_COMPONENTS,
    decompose,
    is_significant,
    light_samples,
    overall_samples,
    parse_condition,
    trace_samples,
)
from rankscope.dashboard.analysis.wholerun import job_queue_ms, queue_means

REPO = Path(__file__).resolve().parents[4]


def steps_of(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, dtype=float)


def test_component_changes_add_up_to_the_step_change() -> None:
    # two components (data, rest): BASE 10+30 = 40 ms, NEW 25+31 = 56 ms on average
    base = steps_of((10, 30), (11, 29), (9, 31), (10, 30))
    new = steps_of((25, 31), (24, 32), (26, 30), (25, 31))
    d = decompose(base, new, LIGHT_COMPONENTS)
    assert d.step.base_ms == 40 and d.step.new_ms == 56 and d.step.delta_ms == 16
    assert [c.delta_ms for c in d.components] == [15, 1]
    assert d.step.delta_pct == 40
    assert d.step.significant  # every NEW step is 14-18 ms slower
    assert d.step.low_ms > 14 and d.step.high_ms < 18


def test_a_change_inside_the_steps_spread_is_no_significant_change() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(100, 10, (20, 1))
    new = rng.normal(100, 10, (20, 1)) + 2  # 2 ms on 10 ms of noise
    d = decompose(base, new, ("untraced",))
    assert d.step.low_ms < 0 < d.step.high_ms
    assert not d.step.significant


def test_a_steady_but_small_change_is_below_the_floor() -> None:
    # 1% slower every step: beyond the interval, under 5% of the step
    assert not is_significant(100.0, 1.0, 0.9, 1.1)
    assert is_significant(100.0, 6.0, 5.5, 6.5)
    assert not is_significant(10.0, 0.8, 0.7, 0.9)  # under 1 ms
    assert is_significant(100.0, -6.0, -6.5, -5.5)  # faster counts too


def test_trace_samples_split_waiting_from_communication_and_close_with_idle() -> None:
    # one rank, one step: 100 ms = 40 compute + 30 exposed comm (20 of it waiting)
    # + 10 data + 5 host + 2 memcpy, so 13 idle
    bd = {
        "rank": np.array([3]),
        "step": np.array([7]),
        "step_ms": np.array([100.0]),
        "compute_ms": np.array([40.0]),
        "comm_exposed_ms": np.array([30.0]),
        "comm_wait_ms": np.array([20.0]),
        "memcpy_ms": np.array([2.0]),
        "data_exposed_ms": np.array([10.0]),
        "host_ms": np.array([5.0]),
    }
    (s,) = trace_samples(bd).values()
    assert s.rank == 3 and s.components == TRACE_COMPONENTS
    assert dict(zip(s.components, s.values[0].tolist(), strict=True)) == {
        "compute": 40,
        "communication": 10,
        "waiting": 20,
        "memcpy": 2,
        "data_loading": 10,
        "host": 5,
        "idle": 13,
    }


def test_light_samples_leave_out_warmup_capture_and_steps_outside_the_range() -> None:
    n = 12
    marks = {
        0: {
            "step": np.arange(n),
            "start_ns": np.arange(n) * 100_000_000,
            "end_ns": np.arange(n) * 100_000_000 + 50_000_000,  # 50 ms steps
            "data_ns": np.full(n, 5_000_000),  # 5 ms of DataLoader wait
            "capture": np.array([0] * 5 + [1] + [0] * 6),
        }
    }
    (s,) = light_samples(marks).values()
    assert s.steps.tolist() == [2, 3, 4, 6, 7, 8, 9, 10, 11]  # no 0, 1 (warm-up), 5 (capture)
    assert s.values[0].tolist() == [5.0, 45.0]
    (s,) = light_samples(marks, 7, 9).values()
    assert s.steps.tolist() == [7, 8, 9]


def test_overall_samples_average_the_ranks_step_by_step() -> None:
    a = cmp.RankSamples(0, np.array([1, 2]), LIGHT_COMPONENTS, steps_of((1, 9), (2, 8)))
    b = cmp.RankSamples(1, np.array([2, 1]), LIGHT_COMPONENTS, steps_of((4, 6), (3, 7)))
    assert overall_samples([a, b]).tolist() == [[2, 8], [3, 7]]


def rank(r: int, deltas: dict[str, float]) -> cmp.RankComparison:
    step = cmp.Change(
        base_ms=100, new_ms=100, delta_ms=0, delta_pct=0, low_ms=0, high_ms=0, significant=False
    )
    comps = [
        cmp.ComponentChange(component=c, base_ms=0, new_ms=d, delta_ms=d, low_ms=d, high_ms=d)
        for c, d in deltas.items()  # type: ignore[misc]
    ]
    return cmp.RankComparison(rank=r, base_steps=5, new_steps=5, step=step, components=comps)


def test_the_origin_is_own_work_never_the_waiting_it_causes() -> None:
    ranks = [rank(0, {"waiting": 58.0, "compute": 1.0}), rank(1, {"data_loading": 55.0})]
    o = cmp.origin_of(ranks, slower=True, overall_ms=57.0)
    assert o is not None and (o.rank, o.component, o.delta_ms) == (1, "data_loading", 55.0)
    assert cmp.origin_of([rank(0, {"waiting": 5.0, "idle": 3.0})], True, 8.0) is None


def test_no_origin_when_no_own_work_explains_a_quarter_of_the_change() -> None:
    # -8.6 ms overall, all of it untraced; data loading moved 0.1 ms
    ranks = [rank(0, {"data_loading": -0.1, "untraced": -8.5})]
    assert cmp.origin_of(ranks, slower=False, overall_ms=-8.6) is None
    ranks = [rank(0, {"data_loading": -3.0, "untraced": -5.6})]
    o = cmp.origin_of(ranks, slower=False, overall_ms=-8.6)
    assert o is not None and o.delta_ms == -3.0


@pytest.mark.parametrize(
    ("text", "metric", "unit", "threshold"),
    [
        ("step_ms>+5%", "step_ms", "pct", 5.0),
        ("wait_ms > +2ms", "wait_ms", "ms", 2.0),
        ("data_ms>3", "data_ms", "ms", 3.0),
        ("new-straggler", "new-straggler", "flag", 0.0),
    ],
)
def test_fail_if_conditions_parse(text: str, metric: str, unit: str, threshold: float) -> None:
    rule = parse_condition(text)
    assert (rule.metric, rule.unit, rule.threshold) == (metric, unit, threshold)


@pytest.mark.parametrize("text", ["step>5%", "step_ms<+5%", "step_ms>+five%", "step_ms>+nan%"])
def test_a_bad_condition_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected METRIC>"):
        parse_condition(text)


def test_a_condition_holds_only_past_its_threshold_and_beyond_noise() -> None:
    base = steps_of((10, 90), (10, 90), (10, 90), (10, 91))
    slower = base + np.array([0.0, 8.0])  # +8 ms every step: +8%
    d = decompose(base, slower, LIGHT_COMPONENTS)
    rule = parse_condition("step_ms>+5%")
    assert cmp.evaluate(rule, d.step, d.components, []).holds
    assert not cmp.evaluate(parse_condition("step_ms>+10%"), d.step, d.components, []).holds
    assert not cmp.evaluate(parse_condition("data_ms>+1ms"), d.step, d.components, []).holds
    noisy = decompose(
        steps_of((0, 60), (0, 140), (0, 100), (0, 100)),
        steps_of((0, 70), (0, 150), (0, 90), (0, 122)),
        LIGHT_COMPONENTS,
    )
    c = cmp.evaluate(parse_condition("step_ms>+5%"), noisy.step, noisy.components, [])
    assert c.value is not None and c.value > 5 and not c.holds  # +8% inside the noise


def test_a_new_straggler_of_low_severity_does_not_fail_the_gate() -> None:
    # A balanced run on a busy machine: rank 0 named a low "host" straggler (seen beside
    # two busy loops); rank 2 a real one, medium.
    def appeared(rank: int, severity: str) -> cmp.StragglerChange:
        return cmp.StragglerChange(
            rank=rank, kind="appeared", base_cause=None, base_pattern=None,
            new_cause="host", new_pattern="persistent", sentence="", new_severity=severity,
        )  # fmt: skip

    d = decompose(steps_of((0, 10), (0, 10)), steps_of((0, 10), (0, 10)), LIGHT_COMPONENTS)
    rule = parse_condition("new-straggler")
    low = cmp.evaluate(rule, d.step, d.components, [appeared(0, "low")])
    assert not low.holds and low.value == 0.0
    assert low.sentence == (
        "ok   new-straggler: no new straggler (rank 0 named at low severity only: within"
        " a busy machine's noise)."
    )
    both = cmp.evaluate(rule, d.step, d.components, [appeared(0, "low"), appeared(2, "medium")])
    assert (
        both.holds
        and both.value == 1.0
        and both.sentence.startswith(
            "FAIL new-straggler: rank 2 became straggler(s) (rank 0 named at low"
        )
    )


def test_the_committed_schema_is_the_one_the_types_give() -> None:
    """Regenerate with: python -c "from rankscope.dashboard.analysis.compare import
    schema_text; open('docs/compare.schema.json', 'w').write(schema_text())" """
    committed = REPO / "docs" / "compare.schema.json"
    assert committed.read_text(encoding="utf-8") == cmp.schema_text()
    defs = cmp.json_schema()["$defs"]
    assert defs["Comparison"]["properties"]["verdict"]["enum"] == [
        "faster",
        "no_significant_change",
        "slower",
    ]


def test_compute_that_moved_the_same_way_on_every_rank_is_uniform() -> None:
    def ranks_with(compute: list[tuple[float, float]]) -> list[cmp.RankComparison]:
        out = []
        for r, (b, n) in enumerate(compute):
            rc = rank(r, {})
            comp = cmp.ComponentChange(
                component="compute", base_ms=b, new_ms=n, delta_ms=n - b, low_ms=0, high_ms=0
            )
            out.append(cmp.RankComparison(
                rank=r, base_steps=5, new_steps=5, step=rc.step, components=[comp]
            ))  # fmt: skip
        return out

    def overall(b: float, n: float) -> cmp.Decomposed:
        return decompose(steps_of((b,), (b,)), steps_of((n,), (n,)), ("compute",))

    # 1 -> 7.5 ms on rank 0, 2 -> 8 ms on rank 1: x5.17 overall (15.5 / 3)
    assert cmp.uniform_compute_ratio(ranks_with([(1, 7.5), (2, 8)]), overall(1.5, 7.75)) == 5.167
    # one rank's compute grew, the other's did not: not uniform
    assert cmp.uniform_compute_ratio(ranks_with([(1, 7.5), (2, 2.1)]), overall(1.5, 4.8)) is None


def test_no_origin_when_every_rank_moved_alike_or_within_its_noise() -> None:
    # a busier machine: compute +1.6 ms on rank 0 and +1.2 ms on rank 1 of +3.9 ms
    ranks = [rank(0, {"compute": 1.6, "waiting": 2.3}), rank(1, {"compute": 1.2})]
    assert cmp.origin_of(ranks, slower=True, overall_ms=3.9) is None
    # +3 ms on one rank whose interval holds zero (-0.5 .. +6.5): noise
    noisy = rank(0, {"compute": 3.0})
    wide = noisy.components[0].__class__(
        component="compute", base_ms=0, new_ms=3.0, delta_ms=3.0, low_ms=-0.5, high_ms=6.5
    )
    noisy = cmp.RankComparison(
        rank=0, base_steps=5, new_steps=5, step=noisy.step, components=[wide]
    )
    assert cmp.origin_of([noisy, rank(1, {"compute": 0.0})], True, 3.5) is None
    # the same +3 ms, beyond its noise, on one rank only, which rank 1 waits for: it starts there
    waited = rank(1, {"compute": 0.2, "waiting": 2.8})
    o = cmp.origin_of([rank(0, {"compute": 3.0}), waited], True, 3.5)
    assert o is not None and (o.rank, o.component) == (0, "compute")
    # ... but nobody waits for it: not where the change starts (seen on two runs of one
    # balanced job on a loaded machine: "compute +1.9 ms" on rank 0, rank 1 not waiting)
    assert cmp.origin_of([rank(0, {"compute": 3.0}), rank(1, {"compute": 0.2})], True, 3.5) is None


def test_untraced_time_names_the_origin_only_on_a_named_straggler_that_others_wait_for() -> None:
    # rank 1 stalls in Python (idle +22 ms); rank 0 waits for it (+21 ms)
    ranks = [rank(0, {"waiting": 21.0, "idle": 0.5}), rank(1, {"idle": 22.0})]
    o = cmp.origin_of(ranks, slower=True, overall_ms=21.5, named={1})
    assert o is not None and (o.rank, o.component) == (1, "idle")
    # the diagnosis did not name rank 1: a few ms of idle is noise, no origin
    assert cmp.origin_of(ranks, slower=True, overall_ms=21.5) is None
    # named, but nobody waits for it: idle is where something else's slowdown landed
    alone = [rank(0, {"waiting": 0.2}), rank(1, {"idle": 22.0})]
    assert cmp.origin_of(alone, slower=True, overall_ms=11.0, named={1}) is None


def kernel(name: str, kind: str, b_ms: float, n_ms: float, b: float, n: float) -> cmp.KernelChange:
    return cmp.KernelChange(
        name=name, kind=kind, base_ms=b_ms, new_ms=n_ms, delta_ms=n_ms - b_ms,  # type: ignore[arg-type]
        base_calls=b, new_calls=n,
    )  # fmt: skip


def test_the_work_changed_where_the_kernels_calls_changed() -> None:
    # 1,500 tanh a step added (+10 ms) and mm 3 -> 1,503 calls (+34 ms); softmax as often
    ks = [
        kernel("aten::mm", "matched", 0.2, 34.2, 3, 1503),
        kernel("aten::tanh", "added", 0, 10, 0, 1500),
        kernel("aten::softmax", "matched", 1, 2, 4, 4),
    ]
    assert [k.name for k in cmp.work_changes(ks)] == ["aten::mm", "aten::tanh"]
    # the same kernels as often, each slower: the machine (or larger inputs), not new work
    same = [kernel("aten::mm", "matched", 1, 3, 3, 3), kernel("aten::add", "matched", 1, 2, 8, 8.4)]
    assert cmp.work_changes(same) == []
    # calls changed on a kernel that carries under half of the change: not the work
    mixed = [kernel("aten::mm", "matched", 1, 9, 3, 3), kernel("aten::add", "matched", 1, 2, 8, 16)]
    assert cmp.work_changes(mixed) == []


def change(base: float, delta: float, low: float, high: float) -> cmp.Change:
    return cmp.Change(
        base_ms=base, new_ms=base + delta, delta_ms=delta, delta_pct=100 * delta / base,
        low_ms=low, high_ms=high, significant=cmp.is_significant(base, delta, low, high),
    )  # fmt: skip


def test_a_step_change_that_is_the_run_queue_is_the_machine() -> None:
    # +3.0 ms (+1.3 .. +4.4) on a 4.8 ms step; rank 0 waited 2.5 -> 5.2 ms a step for a
    # CPU, rank 1 0.3 -> 1.3; CPU time 1.4 ms a step on both sides: the same work
    step = change(4.8, 3.0, 1.3, 4.4)
    m = cmp.machine_change({0: (2.5, 1.4), 1: (0.3, 1.4)}, {0: (5.2, 1.4), 1: (1.3, 1.45)}, step)
    assert m is not None and (m.rank, m.runq_delta_ms, m.discounted) == (0, 2.7, True)
    assert m.net_delta_ms == 0.3  # 3.0 - 2.7, inside its shifted interval (-1.4 .. +1.7)
    # a wait longer than the change explains all of it, no more
    m = cmp.machine_change({0: (2.0, 1.4)}, {0: (6.1, 1.4)}, change(4.2, 2.0, 0.6, 3.4))
    assert m is not None and m.discounted and m.net_delta_ms == 0.0
    # the same wait, but the threads' CPU time grew 25 ms a step: the work changed
    m = cmp.machine_change({0: (2.5, 1.4)}, {0: (5.2, 26.4)}, step)
    assert m is not None and not m.discounted
    # a change beyond the wait (+30 ms, 2.7 of it the run queue): still a change
    m = cmp.machine_change({0: (2.5, 1.4)}, {0: (5.2, 1.4)}, change(4.8, 30.0, 27.0, 33.0))
    assert m is not None and not m.discounted and m.net_delta_ms == 27.3


def test_ranks_that_queue_at_different_steps_hold_the_job_back_in_turn() -> None:
    # +3.7 ms (+2.4 .. +5.1) on a 5.5 ms step, CPU time the same. Rank 0 waited
    # 0 -> 3 ms for a CPU at steps 1 and 3, rank 1 0 -> 3 ms at steps 2 and 4: each
    # rank's mean moved +1.5 ms (+2.2 left, +0.9 .. +3.6: a change), but at every step
    # one of them held the other back 3 ms longer (+0.7 left, -0.6 .. +2.1: noise)
    base = {1: {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}, 0: {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}}
    new = {0: {1: 3.0, 2: 0.0, 3: 3.0, 4: 0.0}, 1: {1: 0.0, 2: 3.0, 3: 0.0, 4: 3.0}}
    job = job_queue_ms(new)
    assert (job_queue_ms(base), job) == (0.0, 3.0)
    means_b = {0: (0.0, 1.4), 1: (0.0, 1.4)}
    means_n = {0: (1.5, 1.4), 1: (1.5, 1.4)}
    step = change(5.5, 3.7, 2.4, 5.1)
    assert not cmp.machine_change(means_b, means_n, step).discounted  # type: ignore[union-attr]
    m = cmp.machine_change(means_b, means_n, step, job_dq=job)
    assert m is not None and m.discounted and (m.job_runq_delta_ms, m.net_delta_ms) == (3.0, 0.7)
    said = words.machine_sentence("no_significant_change", m.rank, 1.5, 0.0, 3.7, True, 3.0)
    assert said is not None and "the ranks waited 3.0 ms more (the longest wait" in said
    # steps only some ranks recorded are not the job's
    assert job_queue_ms({0: {1: 5.0, 2: 1.0}, 1: {2: 3.0}}) == 3.0
    assert job_queue_ms({0: {1: 5.0}, 1: {2: 3.0}}) is None


def test_queue_means_read_the_step_timer_at_the_compared_steps() -> None:
    marks = {
        "step": np.array([3, 4, 5, 6]),
        "runq_ns": np.array([9e6, 1e6, 3e6, -1.0]),  # -1: not recorded
        "cpu_ns": np.array([9e6, 2e6, 2e6, 2e6]),
    }
    assert queue_means(marks, np.array([4, 5, 6])) == (2.0, 2.0)
    assert queue_means({"step": np.array([4])}, np.array([4])) is None  # older collector
