"""The Communication page on a real 2-stage pipeline job whose stage 1 computes 3x.

The page shows the pipeline: the line naming its bottleneck stage, each stage's
busy and blocked time, and one step of it over time (blocked in send and recv).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, dashboard_env, needs_torch
from jobs.collector_jobs import JOBS, launcher, rankscope
from streamlit.testing.v1 import AppTest

pytestmark = needs_torch

MAIN = REPO / "dashboard" / "app" / "main.py"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppTest]:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    job = [*launcher("module", 2), str(JOBS / "pipeline_job.py"), "--steps", "10"]
    proc = rankscope(
        "run", "--out", str(out), "--nvml-period-ms", "0", "--", *job, "--slow-stage", "1",
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with dashboard_env(out, out.parent / "cache"):
        at = AppTest.from_file(str(MAIN), default_timeout=120)
        at.run()
        at.switch_page("views/communication.py").run()
        yield at


def test_the_page_names_the_bottleneck_stage_and_draws_the_stages(page: AppTest) -> None:
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]
    assert "Pipeline" in [h.value for h in page.subheader]
    line = " ".join(w.value for w in page.warning)
    assert "Pipeline ranks 0 -> 1 (2 stages, 4 micro-batches)" in line
    assert "the bottleneck is stage 1 (rank 1)" in line
    captions = " ".join(c.value for c in page.caption)
    assert "Busy: the stage's own work" in captions and "Where each stage waited" in captions
    # the stages, one step, time in collectives per rank; no last arrivals or arrival lag,
    # which point-to-point alone does not have (the page says so)
    charts = page.get("plotly_chart")
    assert len(charts) == 3 and "pipeline-step-0" in [c.key for c in charts]
    assert any("Point-to-point only" in i.value for i in page.info)


def test_one_step_of_the_pipeline_holds_both_stages_blocks(page: AppTest) -> None:
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.analysis.report import build_report
    from rankscope.dashboard.app import model
    from rankscope.dashboard.ingest.run import load_run

    a = analyse(load_run(Path(os.environ["RANKSCOPE_DASHBOARD_PATH"])))
    (p,) = build_report(a).pipelines
    blocks = model.pipeline_step_blocks(a.collectives, a.windows, p, a.steps[0])
    assert set(blocks["stage"]) == {"stage 0 (rank 0)", "stage 1 (rank 1)"}
    assert set(blocks["kind"]) == {"send", "recv"}
    # per stage, 4 micro-batches: 4 sends and 4 receives, inside its own step
    assert blocks.groupby("stage").size().tolist() == [8, 8]
    assert (blocks["start_ms"] >= 0).all() and (blocks["ms"] >= 0).all()


def test_a_pipeline_run_without_a_trace_window_shows_its_stages(tmp_path: Path) -> None:
    # --profile off: the stages come from the collector's own timing of gloo's sends and
    # receives over the whole run; no step over time (that needs a trace window)
    out = tmp_path / "run"
    job = [*launcher("module", 2), str(JOBS / "pipeline_job.py"), "--steps", "10"]
    proc = rankscope(
        "run", "--out", str(out), "--profile", "off", "--nvml-period-ms", "0", "--", *job,
        "--slow-stage", "1", timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with dashboard_env(out, tmp_path / "cache"):
        at = AppTest.from_file(str(MAIN), default_timeout=120)
        at.run()
        at.switch_page("views/communication.py").run()
        whole = AppTest.from_file(str(MAIN), default_timeout=120)
        whole.run()
        whole.switch_page("views/wholerun.py").run()
    assert not at.exception, [e.value for e in at.exception]
    line = " ".join(w.value for w in at.warning)
    assert "the bottleneck is stage 1 (rank 1)" in line, line
    captions = " ".join(c.value for c in at.caption)
    assert "From the collector's own timing of gloo's sends and receives over steps 1-" in captions
    assert "pipeline-step-0" not in [c.key for c in at.get("plotly_chart")]
    # the Whole run page points to the pipeline rather than saying there is no light layer
    said = " ".join(i.value for i in whole.info)
    assert "holds sends and receives but no collective" in said, said
