"""Every bundled run's JSON report validates against the published schema.

The schema (``docs/report.schema.json``) is generated from the report's types;
these runs are the sample and the test data's real traces (H200 DDP runs, HTA's
public traces), so a type that no longer says what the encoder writes fails here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, data_path, rankscope_cmd

from rankscope.dashboard.analysis.analyse import analyse
from rankscope.dashboard.analysis.report import build_report
from rankscope.dashboard.ingest.run import load_run
from rankscope.dashboard.render import render_json

jsonschema = pytest.importorskip("jsonschema")

RUNS = {
    "sample": REPO / "sample_traces" / "ddp3_dataloader_straggler",
    "h200_ddp4_straggler": data_path("reference_runs", "h200_ddp4_straggler"),
    "h200_ddp2_balanced": data_path("reference_runs", "h200_ddp2_balanced"),
    "hta_nccl_data": data_path("public_traces", "hta", "nccl_data"),
    "hta_trace_filter": data_path("public_traces", "hta", "trace_filter"),
    "hta_cpu_only": data_path("public_traces", "hta", "cpu_only"),
}


@pytest.fixture(scope="module")
def validator() -> object:
    schema = json.loads((REPO / "docs" / "report.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", list(RUNS.values()), ids=list(RUNS))
def test_the_report_validates_against_the_schema(path: Path, validator: object) -> None:
    doc = json.loads(render_json(build_report(analyse(load_run(path)))))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]  # type: ignore[attr-defined]
    assert not errors, errors[:5]
    assert doc["schema"] == "rankscope.report/1"


def test_a_wrong_cause_fails_validation(validator: object) -> None:
    doc = json.loads(render_json(build_report(analyse(load_run(RUNS["sample"])))))
    assert doc["stragglers"], "the sample has a straggler"
    doc["stragglers"][0]["cause"] = "dataloading"
    assert not validator.is_valid(doc)  # type: ignore[attr-defined]


def test_the_dashboard_download_is_the_command_s_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Overview's JSON download is ``render_json(build_report(...))``, as is the command's."""
    rel = "sample_traces/ddp3_dataloader_straggler"
    proc = subprocess.run(
        [*rankscope_cmd(), "report", rel, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(REPO)
    in_process = render_json(build_report(analyse(load_run(rel))))
    assert proc.stdout == in_process
