"""The slowdown trigger on a fake clock: when it fires, what it records, the rate limit."""

from __future__ import annotations

import pytest

from rankscope.profiler.autocapture import Policy, SlowSteps
from rankscope.profiler.control import BadRequest, validate_request


def feed(det: SlowSteps, times_ms: list[float], start: int = 0, t0: float = 0.0) -> list:
    fired = []
    for i, ms in enumerate(times_ms):
        trig = det.observe(start + i, ms, t0 + i * ms / 1000)
        if trig is not None:
            fired.append(trig)
    return fired


def test_three_slow_steps_in_a_row_fire_once_with_the_evidence() -> None:
    det = SlowSteps(Policy())
    fired = feed(det, [10.0] * 30 + [40.0] * 20)
    assert len(fired) == 1
    trig = fired[0]
    assert trig.step == 32  # steps 30, 31, 32 were the three slow ones
    assert trig.median_ms == 10.0 and trig.recent_ms == (40.0, 40.0, 40.0)
    assert trig.threshold_ms == 15.0  # max(10 x 1.5, 10 + 5, 90th percentile 10 + 5)
    assert trig.to_json()["kind"] == "slow_steps"


def test_noise_and_short_blips_never_fire() -> None:
    det = SlowSteps(Policy())
    noisy = [10.0, 12.0, 9.0, 11.0, 14.0] * 10
    blips = [10.0] * 10 + [40.0, 40.0, 10.0] * 5  # two slow steps, never three
    assert feed(det, noisy + blips) == []


def test_start_up_is_not_compared_with_itself() -> None:
    det = SlowSteps(Policy())
    assert feed(det, [200.0, 150.0] + [10.0] * 17 + [40.0, 40.0]) == []


def test_a_noisy_job_needs_a_jump_beyond_its_spread() -> None:
    det = SlowSteps(Policy())
    base = [10.0, 20.0] * 25  # 90th percentile 20 ms: the threshold is 25 ms, not 15
    assert feed(det, base + [24.0] * 5) == []
    det = SlowSteps(Policy())
    assert len(feed(det, base + [40.0] * 5)) == 1


def test_the_rate_limit_holds_on_a_fake_clock() -> None:
    det = SlowSteps(Policy(per_hour=3, min_gap_s=300))
    slowdown = [10.0] * 60 + [40.0] * 5
    t = 0.0
    fired_at = []
    for _ in range(12):  # a slowdown every 150 s for half an hour
        if feed(det, slowdown, t0=t):
            fired_at.append(t)
        t += 150.0
    assert fired_at == [0.0, 300.0, 600.0]  # 5 minutes apart, then 3 an hour used up
    assert det.suppressed == 9
    # The first fired 2.5 s into its slowdown: the hour is up then.
    assert det.next_allowed_s(t) == pytest.approx(3600.0 - t + 62 * 0.040)


def test_a_lasting_slowdown_becomes_the_new_normal_then_a_second_jump_counts() -> None:
    det = SlowSteps(Policy(min_gap_s=0))
    fired = feed(det, [10.0] * 30 + [40.0] * 80 + [100.0] * 5)
    assert [f.step for f in fired] == [32, 112]
    assert fired[1].median_ms == 40.0


def test_policy_from_config() -> None:
    assert Policy.from_json(True) == Policy()
    assert Policy.from_json({"per_hour": 1}).per_hour == 1
    with pytest.raises(ValueError):
        Policy.from_json({"per_day": 1})
    with pytest.raises(ValueError):
        Policy.from_json({"steps": 0})


def test_a_request_carries_its_trigger_and_a_bad_one_is_refused() -> None:
    req = {
        "schema": "rankscope.attach-request/1",
        "id": "auto-1",
        "command": "capture",
        "first_step": 50,
        "steps": 3,
        "created_ns": 1,
        "trigger": {"kind": "slow_steps", "recent_ms": [40.0]},
    }
    assert validate_request(req).trigger == {"kind": "slow_steps", "recent_ms": [40.0]}
    assert validate_request(req).to_json() == req
    with pytest.raises(BadRequest):
        validate_request({**req, "trigger": {"recent_ms": [1]}})
    with pytest.raises(BadRequest):
        validate_request({**req, "trigger": {"kind": "x", "pad": "y" * 2000}})
