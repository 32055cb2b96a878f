"""``--ranks``: the list a user types, read into ranks, or a one-line error."""

from __future__ import annotations

import pytest

from rankscope.dashboard.commands.report import parse_ranks
from rankscope.profiler.errors import RankscopeError
from rankscope.profiler.rundir import MAX_WORLD_SIZE


def test_a_list_of_ranks_and_ranges_is_read_in_order_once_each() -> None:
    assert parse_ranks("5-7, 0,2,6") == [0, 2, 5, 6, 7]
    assert parse_ranks("3-4,1-3,4") == [1, 2, 3, 4]
    assert parse_ranks(None) is None and parse_ranks("") is None


def test_a_span_repeated_thousands_of_times_costs_one_span() -> None:
    # 12,000 copies of the widest span used to build 12,000 x MAX_WORLD_SIZE integers
    text = ",".join([f"0-{MAX_WORLD_SIZE - 1}"] * 12_000)
    assert parse_ranks(text) == list(range(MAX_WORLD_SIZE))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("1-x", "expected a list like 0,2,5-7"),
        ("5-2", "expected a list like 0,2,5-7"),
        (",", "no rank given"),
        (f"0-{MAX_WORLD_SIZE}", "is beyond the largest world size"),
    ],
)
def test_a_bad_list_is_one_line_naming_it(text: str, said: str) -> None:
    with pytest.raises(RankscopeError, match=said):
        parse_ranks(text)
