"""A rank with step timings but no trace is a finding, and the JSON never holds NaN.

A crash during the trace export or an attach that reached only some ranks leaves
a rank with ``rank{R}.steps.jsonl`` and no trace while the others have one. The
partial runs here are the bundled sample (rank 1 the data-loading straggler) with
some ranks' traces deleted: the report must name those ranks first (a
``missing_trace`` finding and the verdict's opening sentence), use their step
timer, never say "No straggler" flatly nor blame a rank against a NaN median,
and ``--format json`` must parse with NaN and Infinity refused, like every other
run in ``tests/data`` and ``sample_traces`` (the dashboard's JSON download is
``render_json`` of the same typed report).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, REPO, rankscope_cmd

from rankscope.dashboard.analysis.analyse import analyse
from rankscope.dashboard.analysis.report import Report, build_report
from rankscope.dashboard.ingest.run import load_run
from rankscope.dashboard.render import render_json, render_markdown, render_text

SAMPLE = REPO / "sample_traces" / "ddp3_dataloader_straggler"
# which ranks' traces each partial run loses
PARTIAL = {"no_rank1": [1], "no_rank0": [0], "only_rank2": [0, 1]}
DATA_RUNS = [
    DATA / "reference_runs" / "h200_ddp4_straggler",
    DATA / "reference_runs" / "h200_ddp2_balanced",
    *sorted((DATA / "public_traces" / "hta").iterdir()),
]


def _refuse(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json(text: str) -> dict:
    """``json.loads`` that fails on NaN, Infinity and -Infinity."""
    return json.loads(text, parse_constant=_refuse)


def partial_run(tmp: Path, lose: list[int]) -> Path:
    run = tmp / ("lose" + "_".join(map(str, lose)))
    shutil.copytree(SAMPLE, run)
    for r in lose:
        for trace in run.glob(f"rank{r}.*.pt.trace.json*"):
            trace.unlink()
    return run


@pytest.fixture(scope="module")
def partials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("partial")
    return {name: partial_run(tmp, lose) for name, lose in PARTIAL.items()}


def _report(path: Path) -> Report:
    return build_report(analyse(load_run(path)))


@pytest.mark.parametrize("name", sorted(PARTIAL))
def test_missing_trace_is_a_finding(partials: dict[str, Path], name: str) -> None:
    missing = PARTIAL[name]
    typed = _report(partials[name])
    report = strict_json(render_json(typed))
    assert report["run"]["missing_trace"] == missing
    first = report["findings"][0]
    assert first["kind"] == "missing_trace" and first["ranks"] == missing
    # its light-layer evidence: each untraced rank's step time from its step timer
    rows = {r["rank"]: r for r in report["ranks"]}
    for r in missing:
        assert rows[r]["step_ms"] and 70 < rows[r]["step_ms"] < 120
        assert f"rank {r} {rows[r]['step_ms']:.1f} ms/step" in first["detail"]
    text = render_text(typed)
    verdict = text.splitlines()[2]
    assert verdict.startswith("Incomplete picture: rank"), verdict
    assert "nan" not in text.lower()
    assert "No straggler:" not in text  # at most "No straggler among the traced ranks"
    assert render_markdown(typed).splitlines()[2].startswith("**Incomplete picture")


def test_the_straggler_without_a_trace_is_not_cleared(partials: dict[str, Path]) -> None:
    """Rank 1 (the real straggler) untraced: no other rank blamed, no clean bill of health."""
    report = _report(partials["no_rank1"])
    assert not report.stragglers
    kinds = [f.kind for f in report.findings]
    assert "straggler" not in kinds and "compute_imbalance" not in kinds
    exposed = [f for f in report.findings if f.kind == "exposed_communication"]
    assert all("cannot be told from transfer" in f.detail for f in exposed)
    assert "No straggler among the traced ranks (ranks 0 and 2)" in render_text(report)


def test_the_traced_straggler_still_found(partials: dict[str, Path]) -> None:
    """Rank 0 untraced: rank 1 is still measured as the straggler among ranks 1 and 2."""
    report = _report(partials["no_rank0"])
    assert [s.rank for s in report.stragglers] == [1]
    assert report.stragglers[0].cause == "data_loading"


@pytest.mark.parametrize("run", [*DATA_RUNS, SAMPLE], ids=lambda p: p.name)
def test_report_json_has_no_nan(run: Path) -> None:
    """The dashboard's download and `--format json` both are ``render_json`` of this report."""
    out = strict_json(render_json(_report(run)))
    assert out["schema"] == "rankscope.report/1"


@pytest.mark.parametrize("name", [*sorted(PARTIAL), "sample"])
def test_cli_json_has_no_nan(partials: dict[str, Path], name: str) -> None:
    path = SAMPLE if name == "sample" else partials[name]
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    strict_json(proc.stdout)


def test_render_json_turns_nan_into_null() -> None:
    import numpy as np

    out = strict_json(
        render_json({"a": float("nan"), "b": [float("inf"), np.float64("-inf"), np.int64(3)]})
    )
    assert out == {"a": None, "b": [None, None, 3]}
