"""profile_steps specs -> windows (collector step numbers, inclusive)."""

from __future__ import annotations

import pytest

from rankscope.profiler.errors import RankscopeError
from rankscope.profiler.schedule import ProfileSchedule, Window, parse_profile_steps


def spans(spec: object, limit: int = 10) -> list[tuple[int, int, int]]:
    plan = parse_profile_steps(spec)
    out = []
    for w in plan.windows():
        out.append((w.begin, w.first, w.last))
        if len(out) >= limit:
            break
    return out


@pytest.mark.parametrize("spec", [None, "off", "", "none", False])
def test_off_means_no_windows(spec: object) -> None:
    assert parse_profile_steps(spec).empty


def test_text_ranges_are_inclusive_with_one_warmup_step() -> None:
    assert spans("5-7") == [(4, 5, 7)]
    assert spans("5") == [(4, 5, 5)]
    assert spans("0-2") == [(0, 0, 2)]
    assert spans(" 20-22, 5-7 ") == [(4, 5, 7), (19, 20, 22)]


def test_python_range_int_and_lists() -> None:
    assert spans(range(5, 8)) == [(4, 5, 7)]
    assert spans(9) == [(8, 9, 9)]
    assert spans([range(3, 5), "10-11"]) == [(2, 3, 4), (9, 10, 11)]


def test_schedule_object_and_text() -> None:
    s = ProfileSchedule(wait=1, warmup=1, active=2, repeat=2, skip_first=3)
    # cycle of 4 steps after skipping 3: wait 3, warm 4, record 5-6; wait 7, warm 8, record 9-10
    assert spans(s) == [(4, 5, 6), (8, 9, 10)]
    assert spans("wait=1,warmup=1,active=2,repeat=2,skip_first=3") == spans(s)
    forever = parse_profile_steps(ProfileSchedule(wait=0, warmup=0, active=1, repeat=0))
    assert forever.window_at(1000) == Window(1000, 1000, 0)


def test_window_at_covers_warmup_and_recording() -> None:
    plan = parse_profile_steps("5-7,20-21")
    assert plan.window_at(3) is None
    assert plan.window_at(4) == Window(5, 7, 1)
    assert plan.window_at(7) == Window(5, 7, 1)
    assert plan.window_at(8) is None
    assert plan.window_at(19) == Window(20, 21, 1)
    assert plan.next_window(8) == Window(20, 21, 1)


@pytest.mark.parametrize(
    "spec", ["7-5", "a-b", "5-7,7-9", "-1", "5..7", "wait=x", "bogus=1", True, 1.5, range(5, 5)]
)
def test_bad_specs_are_one_line_errors(spec: object) -> None:
    with pytest.raises(RankscopeError) as e:
        parse_profile_steps(spec)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2
