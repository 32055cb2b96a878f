"""The report dict (``analysis.report``) serialises the typed results under their JSON names."""

from __future__ import annotations

import subprocess
import sys

from rankscope.dashboard.analysis import report
from rankscope.dashboard.analysis.results import (
    CollectiveSummary,
    FieldStats,
    Imbalance,
    LastArrival,
    MetricSpread,
    TelemetrySummary,
)


def test_collective_counts_are_keyed_by_rank_as_text() -> None:
    c = CollectiveSummary("all_reduce", "0", 2, None, 5.0, 6.0, {0: 1, 2: 1}, None)
    out = report.collective_json(c)
    assert list(out) == [
        "name",
        "pg",
        "count",
        "bytes",
        "transfer_ms",
        "wait_ms",
        "last_arrival_counts",
        "effective_gbps",
    ]
    assert out["last_arrival_counts"] == {"0": 1, "2": 1}


def test_imbalance_puts_metrics_beside_ranks_and_last_arrival() -> None:
    spread = MetricSpread(110.0, 130.0, 100.0, 1.182, 0.129, 2)
    imb = Imbalance(3, {"step_ms": spread}, LastArrival(2, 5, 6, 1.5, 1.36))
    out = report.imbalance_json(imb)
    assert list(out) == [
        "ranks",
        "step_ms",
        "last_arrival",
        "joint_saving_ms_per_step",
        "noise_ms",
        "rotating",
    ]
    assert out["step_ms"]["max_rank"] == 2 and out["last_arrival"]["of"] == 6
    assert out["rotating"] is None


def test_telemetry_names_a_mean_in_steps_only_where_steps_had_samples() -> None:
    t = TelemetrySummary(
        samples=10,
        samples_in_steps=0,
        fields={"power_mw": FieldStats(mean=1.0, max=2.0)},
        throttled_pct=None,
    )
    assert report.telemetry_json(t) == {
        "samples": 10,
        "samples_in_steps": 0,
        "power_mw": {"mean": 1.0, "max": 2.0},
    }
    assert report.telemetry_json(None) is None


def test_findings_and_analyse_do_not_import_each_other() -> None:
    code = (
        "import sys, rankscope.dashboard.analysis.findings, rankscope.dashboard.render\n"
        "print('rankscope.dashboard.analysis.analyse' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
