"""The Perfetto export's parts on small hand-built inputs: the verdict's instants
(intermittent stalls, rotating stalls, a hang) and the clock alignment's rules."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import msgspec
from report_factory import make_report, rotating, straggler

from rankscope.dashboard.analysis.hang import GroupVerdict, HangVerdict
from rankscope.dashboard.export.align import clock_alignment
from rankscope.dashboard.export.perfetto import VERDICT_TID, _verdict_events

MS = 1_000_000
WINDOWS = {
    r: {s: (s * 100 * MS + r * MS, (s + 1) * 100 * MS + r * MS) for s in (1, 2, 3)}
    for r in (0, 1, 2)
}


def _events(report: Any) -> list[dict[str, Any]]:
    analysis = SimpleNamespace(windows=WINDOWS, steps=[1, 2, 3])
    alignment = clock_alignment(WINDOWS, [1, 2, 3], {})
    lines = _verdict_events(report, analysis, alignment, origin=0)  # type: ignore[arg-type]
    return [json.loads(line) for line in lines]


def test_stalls_and_rotating_stalls_are_instants_at_their_step() -> None:
    report = make_report(
        steps=[1, 2, 3],
        stragglers=[straggler(2, "intermittent", steps=[{"step": 3, "lag_ms": 302.0}])],
        rotating=rotating({0: 2, 1: 2}, [(2, 0, 120.0)]),
    )
    instants = [e for e in _events(report) if e["ph"] == "i"]
    by_name = {e["name"]: e for e in instants}
    assert by_name["straggler: rank 2"]["args"]["verdict"].startswith("Rank 2 stalled")
    stall = by_name["stall: step 3"]
    # aligned at step start: rank 2's step 3 starts where rank 0's does
    assert (stall["pid"], stall["tid"], stall["ts"]) == (2, VERDICT_TID, 300_000.0)
    assert stall["args"] == {"verdict": "rank 2: ~302 ms", "lag_ms": 302.0}
    assert by_name["rotating stall: step 2"]["pid"] == 0
    names = [e for e in _events(report) if e["ph"] == "M" and e["name"] == "thread_name"]
    assert {e["pid"] for e in names} == {0, 2}


def test_a_hang_is_a_global_instant_when_the_collective_was_entered() -> None:
    group = GroupVerdict(
        kind="missing_rank",
        pg="0",
        pg_desc="default_pg",
        members=(0, 1, 2),
        seq=41,
        op="allreduce",
        bytes=4096,
        ranks=(1,),
        waiting=(0, 2),
        entered_ns=250 * MS,
    )
    hang = HangVerdict(
        kind="missing_rank",
        rank=1,
        headline="Rank 1 never joined allreduce #41; ranks 0 and 2 waited.",
        groups=(group,),
        ranks=(),
        table=(),
        exit_code=None,
    )
    report = msgspec.structs.replace(make_report(steps=[1, 2, 3]), hang=hang)
    (event,) = [e for e in _events(report) if e["name"] == "hang"]
    assert event["s"] == "g" and event["ts"] == 250_000.0 - 1_000.0  # rank 1 shifted 1 ms
    assert event["args"]["verdict"].startswith("Rank 1 never joined")


def test_alignment_rules() -> None:
    windows = {0: {1: (1000, 2000), 2: (2000, 3000)}, 1: {1: (1500, 2500), 2: (2500, 3500)}}
    step = clock_alignment(windows, [1, 2], {0: 0, 1: 7})
    assert step.method == "step_start" and step.offsets_ns == {0: 0, 1: 500}
    measured = clock_alignment(windows, [1, 2], {0: 0, 1: 7}, "clock_offset")
    assert measured.offsets_ns == {0: 0, 1: 7}
    # a rank that shares no step falls back to its measured offset, and says so
    lone = clock_alignment({**windows, 2: {9: (0, 1)}}, [1, 2], {0: 0, 2: 40})
    assert lone.offsets_ns[2] == 40 and "rank 2 shares no step" in lone.notes[0]
    # no step at all (one window of the whole trace): the measured offsets
    whole = clock_alignment({0: {-1: (0, 9)}, 1: {-1: (5, 9)}}, [-1], {0: 0, 1: 3})
    assert whole.method == "clock_offset" and whole.offsets_ns == {0: 0, 1: 3}
    assert clock_alignment(windows, [1, 2], {}, "none").offsets_ns == {0: 0, 1: 0}
