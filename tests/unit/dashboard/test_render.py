"""``render`` on small hand-built typed reports: every number in a table is checkable by hand.

Two ranks over steps 3-5 at 100 ms/step. Rank 0: 60 ms compute, 30 ms in
collectives of which 20 exposed, waits 5, 10 of data loading, 10 idle, GPU busy
80%, NVML utilisation 75.4% inside the steps (50% over the run), 300 W over the run.
Rank 1: 50 compute, 30 exposed of 30, waits 25, 15 data, 5 host-only. One
all-reduce of 4 MiB, 12 times, 1.234 ms transfer; rank 0 last 9 times, rank 1 3.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from report_factory import make_report, rank_row, rotating, straggler

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.report import RankTelemetry, Report, WholeRunReport
from rankscope.dashboard.analysis.results import (
    CollectiveSummary,
    FieldStats,
    Finding,
    KernelSummary,
    LastArrival,
    TemporalBreakdown,
)
from rankscope.dashboard.analysis.verdict import RunVerdict
from rankscope.dashboard.render import (
    incomplete_sentence,
    no_straggler_sentence,
    render_json,
    render_markdown,
    render_text,
)

TELEMETRY = RankTelemetry(
    20,
    5,
    {"gpu_util_pct": FieldStats(50.0, 90.0, 75.4), "power_mw": FieldStats(300000.0, 400000.0)},
)
ROWS = [
    rank_row(
        0,
        step_ms=100.0,
        compute_ms=60.0,
        comm_ms=30.0,
        comm_exposed_ms=20.0,
        comm_wait_ms=5.0,
        data_ms=10.0,
        host_ms=0.0,
        idle_ms=10.0,
        gpu_busy_pct=80.0,
        temporal_breakdown=TemporalBreakdown(10.0, 70.0, 20.0),
        comm_overlap_pct=33.3333,
        telemetry=TELEMETRY,
    ),
    rank_row(
        1,
        step_ms=100.0,
        compute_ms=50.0,
        comm_ms=30.0,
        comm_exposed_ms=30.0,
        comm_wait_ms=25.0,
        data_ms=15.0,
        host_ms=5.0,
        idle_ms=0.0,
    ),
]
ALLREDUCE = CollectiveSummary(
    "allreduce", "0", 12, 4 * 1024 * 1024, 1.234, 20.0, {1: 3, 0: 9}, None
)
FINDING = Finding("straggler", "high", "Rank 0 holds the others back", "Its data ...", [0], 18.5)
KERNEL = KernelSummary("gemm_kernel", 12.3456, 61.7, 4.0, 12.0, 12.7, 1, 0.021)


@pytest.fixture
def report() -> Report:
    return make_report(
        steps=[3, 4, 5],
        step_ms=100.0,
        has_gpu=True,
        ranks=ROWS,
        stragglers=[straggler(0, cause="data_loading", caused_wait_ms_per_step=20.0)],
        findings=[FINDING],
        collectives=[ALLREDUCE],
        top_kernels=[KERNEL],
    )


def _section(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_text_opens_with_the_scope_and_the_straggler(report: Report) -> None:
    lines = render_text(report).splitlines()
    assert lines[0] == "rankscope report: runs/handmade"
    assert lines[2] == (
        "2 rank(s) of 2, steps 3-5, 100.0 ms/step on average. Rank 0 is the straggler"
        " (data loading, high): the other ranks wait ~20.0 ms/step for it."
    )
    assert _section(
        render_text(report),
        "Findings (most severe first, then the largest saving; estimated saving per step):",
    ) == [
        "  1. [high] Rank 0 holds the others back  (~18.5 ms/step)",
        "     Its data ...",
    ]


def test_text_rank_table_formats_each_number_and_dashes_the_unmeasured(report: Report) -> None:
    table = _section(render_text(report), "Per rank (ms per step):")
    assert table[0].split() == [
        "rank", "step", "ms", "compute", "comm", "exposed", "wait", "data", "host-only",
        "idle", "GPU", "busy", "HTA", "idle/compute/non-compute", "%", "HTA", "comm",
        "overlap", "%",
    ]  # fmt: skip
    assert table[2].split() == [
        "0", "100.0", "60.0", "30.0", "20.0", "5.0", "10.0", "0.0", "10.0", "80.0%",
        "10.00", "/", "70.00", "/", "20.00", "33.3%",
    ]  # fmt: skip
    assert table[3].split() == [
        "1", "100.0", "50.0", "30.0", "30.0", "25.0", "15.0", "5.0", "0.0", "-", "-", "-",
    ]  # fmt: skip
    assert len({len(line) for line in table}) == 1  # right-aligned columns


def test_collectives_say_bytes_in_mb_and_who_arrived_last_most_often(report: Report) -> None:
    (row,) = _section(render_text(report), "Collectives:")[2:]
    # 4 MiB; transfer and wait to 2 decimals; rank 0 last 9 times before rank 1's 3
    assert row.split() == [
        "allreduce", "(pg", "0)", "12", "4.0", "MB", "1.23", "20.00", "r0:", "9,", "r1:", "3",
    ]  # fmt: skip


def test_gpu_table_reads_telemetry_in_the_steps_else_over_the_run(report: Report) -> None:
    rows = _section(render_text(report), "GPU utilisation:")[2:]
    # NVML util: 75.4 in the steps -> "75%"; power: 300,000 mW over the run -> "300" W
    assert rows[0].split() == ["0", "80.0%", "-", "-", "75%", "-", "300"]
    assert rows[1].split()[1:] == ["-"] * 6


def test_markdown_has_the_same_numbers_and_the_top_kernels(report: Report) -> None:
    md = render_markdown(report)
    assert md.splitlines()[0] == "# rankscope report: `runs/handmade`"
    assert "| 0 | 100.0 | 60.0 | 30.0 | 20.0 | 5.0 | 10.0 | 0.0 | 10.0 | 80.0% |" in md
    assert "| allreduce (pg 0) | 12 | 4.0 MB | 1.23 | 20.00 | r0: 9, r1: 3 |" in md
    assert "| gemm_kernel | 12.346 | 61.7% | r1 | 0.02 |" in md
    assert "- **[high] Rank 0 holds the others back** *(~18.5 ms/step)*" in md


def test_without_gpu_or_collectives_those_sections_are_left_out() -> None:
    plain = make_report(ranks=[rank_row(0, step_ms=50.0), rank_row(1, step_ms=50.0)])
    text = render_text(plain)
    assert "Collectives:" not in text and "GPU utilisation:" not in text
    assert wording.NO_FINDINGS in text


def test_no_findings_under_a_whole_run_straggler_does_not_read_as_all_clear() -> None:
    # The window named nothing (its steps were dropped, or too few), the whole run named
    # rank 1: "No findings worth a line" under that headline read as a clean bill.
    plain = make_report(ranks=[rank_row(0, step_ms=50.0), rank_row(1, step_ms=50.0)])
    verdict = RunVerdict(
        headline="Rank 1 is the straggler (data loading, high).", rank=1,
        cause="data_loading", pattern="persistent", source="whole_run",
        agreement="whole_run_only",
    )  # fmt: skip
    named = msgspec.structs.replace(plain, verdict=verdict)
    for text in (render_text(named), render_markdown(named)):
        assert wording.NO_FINDINGS not in text
        assert "No further findings: the verdict above (rank 1) is the one to act on" in text


def test_no_straggler_names_the_rotating_ranks() -> None:
    rot = rotating({0: 2, 2: 1}, [(3, 0, 60.0), (4, 2, 61.0), (5, 0, 62.0)])
    report = make_report(ranks=ROWS, collectives=[ALLREDUCE], rotating=rot)
    sentence = no_straggler_sentence(report)
    assert sentence is not None and "ranks 0, 2" in sentence
    close = make_report(
        ranks=ROWS, collectives=[ALLREDUCE], last_arrival=LastArrival(1, 3, 12, 0.5, 0.5)
    )
    assert no_straggler_sentence(close) is not None
    assert no_straggler_sentence(make_report(ranks=ROWS)) is None  # no collectives: cannot tell


def test_missing_traces_open_the_verdict() -> None:
    report = make_report(ranks=ROWS, run_ranks=[0, 1, 2], missing_trace=[2])
    assert incomplete_sentence(report) is not None
    assert render_text(report).splitlines()[2].startswith(incomplete_sentence(report) or "-")
    assert incomplete_sentence(make_report(ranks=ROWS)) is None


def test_a_light_run_with_no_whole_run_verdict_says_so_in_its_first_line() -> None:
    why = wording.no_whole_run("the ranks' collective logs hold no collective inside a step", [])
    light = make_report(step_source="none", steps=[], step_ms=None, warnings=[why])
    assert render_text(light).splitlines()[2] == (
        "3 rank(s) of 3: the light layer only (step timer, no profiler trace window),"
        " and no whole-run verdict from it (see the warnings for why)."
    )
    bare = make_report(step_source="none", steps=[], step_ms=None)
    assert render_text(bare).splitlines()[2] == "3 rank(s) of 3: " + wording.TELEMETRY_ONLY_TEXT


def test_whole_run_lines_follow_the_verdict() -> None:
    whole = WholeRunReport(
        first_step=0,
        last_step=99,
        n_steps=100,
        stragglers=[straggler(1, "intermittent", steps=[{"step": 60, "lag_ms": 300.0}])],
        rotating=None,
        joint_saving_ms_per_step=3.0,
        noise_ms=1.0,
        matched_collectives=100,
        unmatched_collectives=0,
        steps=[],
    )
    lines = render_text(make_report(ranks=ROWS, whole_run=whole)).splitlines()
    assert "0" in lines[4] and "99" in lines[4]  # the heading names the steps it covers
    assert lines[5].startswith("  - ") and "300" in lines[5] and "60" in lines[5]


def test_json_is_the_typed_report_with_rank_keys_as_text(report: Report) -> None:
    doc = json.loads(render_json(report))
    assert doc["schema"] == "rankscope.report/1"
    assert list(doc) == [
        "schema", "run", "ranks", "imbalance", "stragglers", "collectives", "findings",
        "top_kernels", "per_step", "whole_run", "hang", "verdict", "nodes",
        "process_groups", "pipelines", "top_operators", "memory",
    ]  # fmt: skip
    assert doc["collectives"][0]["last_arrival_counts"] == {"1": 3, "0": 9}
    assert doc["ranks"][0]["telemetry"] == {
        "samples": 20,
        "samples_in_steps": 5,
        "gpu_util_pct": {"mean": 50.0, "max": 90.0, "mean_in_steps": 75.4},
        "power_mw": {"mean": 300000.0, "max": 400000.0},
    }
    assert doc["imbalance"] == {
        "ranks": 2,
        "last_arrival": None,
        "joint_saving_ms_per_step": None,
        "noise_ms": None,
        "rotating": None,
    }


def test_json_of_a_non_ascii_path_is_escaped_ascii() -> None:
    text = render_json(make_report(ranks=ROWS, path="runs/été"))
    assert text.isascii() and json.loads(text)["run"]["path"] == "runs/été"


def _many_ranks(n: int) -> Report:
    """``n`` ranks at 100 ms/step waiting 20 + rank/100 ms; rank 7 the straggler (waits 0),
    rank 500 the one unusual other rank (compute 95 ms against ~50)."""
    rows = [
        rank_row(
            r,
            step_ms=100.0,
            compute_ms=95.0 if r == 500 else 50.0 + (r % 10) / 10,
            comm_wait_ms=0.0 if r == 7 else 20.0 + r / 100,
            gpu_busy_pct=80.0,
        )
        for r in range(n)
    ]
    return make_report(
        steps=[3, 4, 5],
        step_ms=100.0,
        has_gpu=True,
        ranks=rows,
        stragglers=[straggler(7, cause="data_loading", caused_wait_ms_per_step=20.0)],
    )


def test_past_32_ranks_the_text_table_names_ranks_then_percentiles() -> None:
    report = _many_ranks(1024)
    text = render_text(report)
    table = _section(text, "Per rank (ms per step):")
    assert table[0] == (
        "  (1,024 ranks: ranks 7 and 500 (stragglers, then the most unusual ranks), then"
        " percentiles over all ranks; --all-ranks prints every rank)"
    )
    ranks = [line.split()[0] for line in table[3:]]
    assert ranks == ["7", "500", "p10", "p50", "p90", "max"]
    wait = {line.split()[0]: line.split()[5] for line in table[3:]}
    assert (wait["7"], wait["p50"], wait["max"]) == ("0.0", "25.1", "30.2")
    assert len(text.splitlines()) < 60  # not 1,000 lines
    gpu = _section(text, "GPU utilisation:")
    assert [line.split()[0] for line in gpu[2:-1]] == ["7", "500", "p10", "p50", "p90", "max"]
    assert gpu[-2].split()[1] == "80.0%"
    # every rank on request, and in markdown the same summary
    full = render_text(report, all_ranks=True)
    assert len(_section(full, "Per rank (ms per step):")) == 2 + 1024
    markdown = render_markdown(report)
    assert "| p90 |" in markdown and "| 3 |" not in markdown
    assert "| 3 |" in render_markdown(report, all_ranks=True)
    # 32 ranks are still shown one by one
    assert len(_section(render_text(_many_ranks(32)), "Per rank (ms per step):")) == 2 + 32


def test_memory_past_32_ranks_keeps_the_highest_and_adds_percentiles() -> None:
    from rankscope.dashboard.analysis.memory import DeviceMemory, MemoryResult
    from rankscope.dashboard.render import memory_rows

    gib = 1 << 30
    devices = [
        DeviceMemory(
            rank=r,
            device=f"cuda:{r % 8}",
            source="trace",
            peak_allocated_b=(3 if r == 17 else 1) * gib,
            peak_reserved_b=(4 if r == 17 else 2) * gib,
            capacity_b=80 * gib,
            headroom_b=(76 if r == 17 else 78) * gib,
            reserved_pct=5.0 if r == 17 else 2.5,
        )
        for r in range(40)
    ]
    report = msgspec.structs.replace(
        make_report(steps=[1], ranks=[]), memory=MemoryResult(devices=devices)
    )
    _, rows, note = memory_rows(report, all_ranks=False)
    assert [r[:4] for r in rows] == [
        ["17", "cuda:1", "3.0 GiB", "4.0 GiB"],  # the highest peak
        ["p50", "cuda", "1.0 GiB", "2.0 GiB"],
        ["max", "cuda", "3.0 GiB", "4.0 GiB"],
    ]
    assert rows[2][5] == "min 76.0 GiB"
    assert note is not None and note.startswith("1 of 40 ranks")
    assert len(memory_rows(report, all_ranks=True)[1]) == 40
