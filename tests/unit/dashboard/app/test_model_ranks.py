"""``model.ranks`` and ``model.compare`` on a hand-built two-rank report.

Rank 0: 100 ms steps (60 compute, 20 exposed communication, 10 exposed data,
10 idle), GPU busy 80%, NVML 75.4% in the steps (50% over the run), idle 6 ms
waiting for the host, 3 in launch gaps, 1 other. Rank 1: 120 ms steps, no GPU
measure, no idle breakdown. Run B: the same with rank 1 at 100 ms.
"""

from __future__ import annotations

import math

import pandas as pd
from report_factory import make_report, rank_row

from rankscope.dashboard.analysis.report import RankTelemetry, Report
from rankscope.dashboard.analysis.results import FieldStats, IdleBreakdown
from rankscope.dashboard.app import model


def _report(rank1_step_ms: float = 120.0) -> Report:
    return make_report(
        ranks=[
            rank_row(
                0,
                step_ms=100.0,
                compute_ms=60.0,
                comm_exposed_ms=20.0,
                memcpy_ms=0.0,
                data_exposed_ms=10.0,
                host_ms=0.0,
                idle_ms=10.0,
                gpu_busy_pct=80.0,
                idle_breakdown=IdleBreakdown(6.0, 3.0, 1.0),
                telemetry=RankTelemetry(10, 4, {"gpu_util_pct": FieldStats(50.0, 90.0, 75.4)}),
                device="H200",
            ),
            rank_row(1, step_ms=rank1_step_ms, compute_ms=rank1_step_ms),
        ]
    )


def test_breakdown_long_has_the_six_parts_per_rank_and_nan_for_the_unmeasured() -> None:
    long = model.breakdown_long(_report())
    assert len(long) == 2 * len(model.STEP_PARTS)
    r0 = long[long["rank"] == "rank 0"].set_index("component")["ms"]
    assert r0["compute"] == 60.0 and r0["exposed communication"] == 20.0
    assert r0.sum() == 100.0  # the parts add up to the step
    r1 = long[long["rank"] == "rank 1"].set_index("component")["ms"]
    assert r1["compute"] == 120.0 and math.isnan(r1["idle"])


def test_ranks_frame_keeps_scalar_fields_as_columns() -> None:
    df = model.ranks_frame(_report())
    assert list(df["step_ms"]) == [100.0, 120.0]
    assert "telemetry" not in df.columns and "files" not in df.columns
    assert df["device"][0] == "H200" and pd.isna(df["device"][1])
    assert math.isnan(df["gpu_busy_pct"][1])


def test_utilisation_reads_telemetry_inside_the_steps_and_drops_empty_measures() -> None:
    util = model.utilisation_frame(_report())
    assert list(util.columns) == ["rank", "trace: GPU busy %", "NVML: utilisation %"]
    assert util["NVML: utilisation %"][0] == 75.4 and math.isnan(util["trace: GPU busy %"][1])


def test_idle_long_names_each_reason() -> None:
    idle = model.idle_long(_report())
    assert idle.to_dict("records") == [
        {"rank": "rank 0", "why": "waiting for the host to launch", "ms": 6.0},
        {"rank": "rank 0", "why": "launch gaps", "ms": 3.0},
        {"rank": "rank 0", "why": "other (syncs, dependencies)", "ms": 1.0},
    ]


def test_compare_means_over_ranks_and_per_rank_deltas() -> None:
    a, b = _report(120.0), _report(100.0)
    metrics = model.compare_metrics(a, b).set_index("metric")
    step = metrics.loc["step time"]
    # A: (100 + 120) / 2 = 110; B: 100; delta -10 = -9.09%
    assert (step["A"], step["B"], step["delta"]) == (110.0, 100.0, -10.0)
    assert round(step["delta_pct"], 2) == -9.09
    assert "communication" not in metrics.index  # neither run measured it
    assert metrics.loc["GPU busy %", "A"] == 80.0  # rank 1 has none: the mean of what was
    per_rank = model.compare_rank_matrix(model.compare_ranks(a, b))
    assert per_rank.loc[1, "step time"] == -20.0 and per_rank.loc[0, "step time"] == 0.0
