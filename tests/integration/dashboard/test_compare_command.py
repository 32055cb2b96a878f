"""``rankscope compare`` on the bundled real H200 traces: what the runs share, the gate's
exit code, the JSON against its schema, and bad input as one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA
from jobs.collector_jobs import job_env

BALANCED2 = DATA / "reference_runs" / "h200_ddp2_balanced"
STRAGGLER4 = DATA / "reference_runs" / "h200_ddp4_straggler"  # rank 1: +40 ms data a step
SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "compare.schema.json"


def compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankscope", "compare", *args],
        capture_output=True,
        text=True,
        env=job_env(),
        timeout=120,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_a_two_rank_run_against_a_four_rank_straggler_run(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    proc = compare(
        str(BALANCED2), str(STRAGGLER4), "--format", "json", "-o", str(out),
        "--fail-if", "step_ms>+5%", "--fail-if", "compute_ms>+100%", "--fail-if", "new-straggler",
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    c = json.loads(out.read_text(encoding="utf-8"))
    assert c["verdict"] == "slower" and c["basis"] == "trace"
    assert (c["origin"]["rank"], c["origin"]["component"]) == (1, "data_loading")
    assert c["scope"]["shared_ranks"] == [0, 1] and c["scope"]["new_only_ranks"] == [2, 3]
    assert any("World sizes differ: 2 in BASE, 4 in NEW" in n for n in c["scope"]["notes"])
    assert [(s["rank"], s["kind"], s["new_cause"]) for s in c["stragglers"]] == [
        (1, "appeared", "data_loading")
    ]
    held = {k["text"]: k["holds"] for k in c["conditions"]}
    assert held == {"step_ms>+5%": True, "compute_ms>+100%": False, "new-straggler": True}
    assert c["regressed"]
    assert "FAIL step_ms>+5%" in proc.stderr and "compute_ms" not in proc.stderr
    all_reduce = [k for k in c["collectives"] if k["name"] == "all_reduce"]
    assert all_reduce and all_reduce[0]["kind"] == "matched"


def test_a_run_against_itself_is_no_change_and_the_json_validates() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    proc = compare(str(STRAGGLER4), str(STRAGGLER4), "--format", "json", "--fail-if", "step_ms>+1%")
    assert proc.returncode == 0, proc.stderr
    c = as_json(proc)
    assert c["verdict"] == "no_significant_change" and c["step"]["delta_ms"] == 0
    assert c["origin"] is None and not c["regressed"]
    assert c["stragglers"] and {s["kind"] for s in c["stragglers"]} == {"same"}
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    validator.validate(c)


def test_text_and_markdown_lead_with_the_verdict() -> None:
    for fmt, first in (("text", "NEW is slower"), ("markdown", "# rankscope compare")):
        proc = compare(str(BALANCED2), str(STRAGGLER4), "--ranks", "0-1", "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(first)
        assert "It starts on rank 1: data loading" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-if", "step>5%"], "expected METRIC>+N% or METRIC>+Nms"),
        (["--ranks", "3"], "rank"),
        (["--steps", "x"], "--steps"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = compare(str(BALANCED2), str(STRAGGLER4), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_run_is_exit_2(tmp_path: Path) -> None:
    proc = compare(str(BALANCED2), str(tmp_path / "nope"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # said before either run is read: one line
    assert (
        proc.stderr.strip() == f"rankscope compare: {tmp_path / 'nope'}: no such file or directory"
    )
