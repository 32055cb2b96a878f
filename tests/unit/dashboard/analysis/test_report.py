"""The typed report (``analysis.report``) writes its results under their JSON names."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import msgspec
import numpy as np
import pytest
from conftest import REPO
from report_factory import make_report, rank_row, rotating, straggler

from rankscope.dashboard.analysis import report
from rankscope.dashboard.analysis.imbalance import IMBALANCE_METRICS
from rankscope.dashboard.analysis.results import (
    CAUSES,
    FINDING_KINDS,
    CollectiveSummary,
    FieldStats,
    LastArrival,
    MetricSpread,
    RotatingLateness,
    StepRank,
    StepStall,
    TelemetrySummary,
)
from rankscope.dashboard.analysis.wholerun import StepSummary
from rankscope.dashboard.render import render_json


def _json(o: object) -> Any:
    return json.loads(msgspec.json.encode(o, enc_hook=report.enc_hook))


def test_collective_counts_are_keyed_by_rank_as_text() -> None:
    c = CollectiveSummary("all_reduce", "0", 2, None, 5.0, 6.0, {0: 1, 2: 1}, None)
    out = _json(c)
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
    imb = report.ImbalanceReport(
        ranks=3,
        step_ms=spread,
        last_arrival=LastArrival(2, 5, 6, 1.5, 1.36),
        joint_saving_ms_per_step=None,
        noise_ms=None,
        rotating=None,
    )
    out = _json(imb)
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
    assert imb.metric("step_ms") is spread and imb.metric("comm_ms") is None


def test_imbalance_report_has_a_field_for_every_imbalance_metric() -> None:
    assert set(IMBALANCE_METRICS) <= set(report.ImbalanceReport.__struct_fields__)


def test_rotating_keys_ranks_as_text_and_names_each_stall_s_rank() -> None:
    rot = RotatingLateness(
        counts={0: 2, 2: 1},
        steps=[StepStall(3, 60.0), StepStall(5, 70.0), StepStall(8, 80.0)],
        ranks_by_step=[0, 2, 0],
        wait_fraction=0.25,
        est_saving_ms_per_step=12.5,
    )
    typed = report.Rotating.of(rot)
    assert typed is not None and typed.counts == {0: 2, 2: 1}
    assert _json(typed) == {
        "counts": {"0": 2, "2": 1},
        "steps": [
            {"step": 3, "rank": 0, "lag_ms": 60.0},
            {"step": 5, "rank": 2, "lag_ms": 70.0},
            {"step": 8, "rank": 0, "lag_ms": 80.0},
        ],
        "wait_fraction": 0.25,
        "est_saving_ms_per_step": 12.5,
    }


def test_telemetry_names_a_mean_in_steps_only_where_steps_had_samples() -> None:
    t = TelemetrySummary(
        samples=10,
        samples_in_steps=0,
        fields={"power_mw": FieldStats(mean=1.0, max=2.0)},
        throttled_pct=None,
    )
    typed = report.RankTelemetry.of(t)
    assert typed is not None
    assert _json(typed) == {
        "samples": 10,
        "samples_in_steps": 0,
        "power_mw": {"mean": 1.0, "max": 2.0},
    }
    assert typed.in_steps("power_mw") == 1.0 and typed.in_steps("gpu_util_pct") is None
    assert report.RankTelemetry.of(None) is None
    throttled = report.RankTelemetry(4, 2, {"power_mw": FieldStats(1.0, 2.0, 1.5)}, 25.0)
    assert list(_json(throttled)) == ["samples", "samples_in_steps", "power_mw", "throttled_pct"]
    assert throttled.in_steps("power_mw") == 1.5


def test_numpy_scalars_and_nan_encode_as_json_numbers_and_null() -> None:
    row = StepRank(np.int64(1), 4, float("nan"), np.float64(2.5), 0.0, 1.0)  # type: ignore[arg-type]
    assert _json(row) == {
        "rank": 1,
        "step": 4,
        "step_ms": None,
        "excess_ms": 2.5,
        "caused_wait_ms": 0.0,
        "lag_ms": 1.0,
    }


def test_findings_and_analyse_do_not_import_each_other() -> None:
    code = (
        "import sys, rankscope.dashboard.analysis.findings, rankscope.dashboard.render\n"
        "print('rankscope.dashboard.analysis.analyse' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_committed_schema_is_the_one_the_types_give() -> None:
    """Regenerate with: python -c "from rankscope.dashboard.analysis.report import schema_text;
    open('docs/report.schema.json', 'w').write(schema_text())" """
    committed = REPO / "docs" / "report.schema.json"
    assert committed.read_text(encoding="utf-8") == report.schema_text()


def test_the_schema_takes_null_for_every_number_and_names_the_closed_sets() -> None:
    defs = report.json_schema()["$defs"]
    straggler = defs["Straggler"]["properties"]
    assert straggler["cause"]["enum"] == sorted(CAUSES)
    assert straggler["pattern"]["enum"] == ["intermittent", "persistent"]
    assert straggler["severity"]["enum"] == ["high", "low", "medium"]
    assert defs["Finding"]["properties"]["kind"]["enum"] == sorted(FINDING_KINDS)
    assert defs["StepRank"]["properties"]["lag_ms"]["type"] == ["number", "null"]
    assert defs["Report"]["required"][0] == "run"  # schema has its default


def test_a_whole_run_report_with_nan_validates_against_the_schema() -> None:
    """What the bundled runs lack: a whole run, rotating lateness, NaN (written as null)."""
    jsonschema = pytest.importorskip("jsonschema")
    whole = report.WholeRunReport(
        first_step=0,
        last_step=1,
        n_steps=2,
        stragglers=[straggler(2, "intermittent", steps=[{"step": 1, "lag_ms": 300.0}])],
        rotating=rotating({0: 2}, [(0, 0, 60.0), (1, 0, 61.0)]),
        joint_saving_ms_per_step=3.0,
        noise_ms=float("nan"),
        matched_collectives=4,
        unmatched_collectives=0,
        steps=[StepSummary(0, 100.0, 2, 5.0, float("nan")), StepSummary(1, 400.0, 2, 300.0, 1.0)],
    )
    typed = make_report(
        ranks=[rank_row(0, step_ms=100.0, telemetry=report.RankTelemetry(3, 0, throttled_pct=0.0))],
        per_step=[StepRank(0, 0, float("nan"), 0.0, 0.0, float("nan"))],
        whole_run=whole,
    )
    doc = json.loads(render_json(typed))
    assert doc["whole_run"]["steps"][0]["data_ms"] is None
    assert doc["per_step"][0]["step_ms"] is None
    jsonschema.validate(doc, report.json_schema())
    doc["whole_run"]["stragglers"][0]["pattern"] = "rotating"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, report.json_schema())
