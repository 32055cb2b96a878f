"""Every surface tells the same story: where the Overview's callout, tiles, straggler
table, findings and the text report name the same quantity, they print the same figure.

Runs on the bundled sample and the reference runs, through the view models
(``app.model``) and ``render``, the way a user would cross-check them by eye: no
browser, no Streamlit.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rankscope.dashboard.analysis.analyse import analyse
from rankscope.dashboard.analysis.report import Report, build_report
from rankscope.dashboard.analysis.wording import ms
from rankscope.dashboard.app import model
from rankscope.dashboard.ingest.run import load_run
from rankscope.dashboard.render import render_markdown, render_text

REPO = Path(__file__).resolve().parents[3]
RUNS = {
    "sample": REPO / "sample_traces" / "ddp3_dataloader_straggler",
    **{p.name: p for p in sorted((REPO / "tests/data/reference_runs").glob("h200_*"))},
}
NUMBER = r"(\d+(?:\.\d+)?)"


@pytest.fixture(scope="module", params=sorted(RUNS))
def report(request: pytest.FixtureRequest) -> Report:
    path = RUNS[request.param]
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    return build_report(analyse(load_run(path)))


def _one(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    assert len(found) == 1, (pattern, text)
    return str(found[0])


def test_callout_table_and_finding_print_the_same_straggler_figures(report: Report) -> None:
    if not report.stragglers or report.stragglers[0].pattern == "intermittent":
        pytest.skip("no persistent straggler: the callout names no per-step figure")
    s = report.stragglers[0]
    callout = model.straggler_sentence(report)
    assert callout is not None
    row = model.stragglers_frame(report).iloc[0]
    excess, wait = ms(row["excess ms/step"]), ms(row["others wait ms/step"])
    # the callout
    assert _one(r"takes " + NUMBER + r" ms/step more", callout) == excess
    assert _one(r"the other ranks wait " + NUMBER + r" ms/step", callout) == wait
    # its finding, title and evidence
    (finding,) = [f for f in report.findings if f.kind == "straggler" and f.ranks == [s.rank]]
    assert f"wait {wait} ms/step for it" in finding.detail
    assert f"takes {excess} ms/step more than the other ranks' median" in finding.detail
    # the text and markdown reports' verdict line
    for text in (render_text(report), render_markdown(report)):
        assert f"the other ranks wait ~{wait} ms/step for it" in text
    # the step time the callout measures the wait against is the step tile's
    step = _one(r"of the " + NUMBER + r" ms step", callout)
    assert model.headline_numbers(report)["step"] == f"{step} ms"


def test_tiles_are_the_tables_they_summarise(report: Report) -> None:
    tiles = model.headline_numbers(report)
    text = render_text(report)
    # step time: the tile is the report's "N ms/step on average"
    assert tiles["step"] is not None
    assert f"{tiles['step'].removesuffix(' ms')} ms/step on average" in text
    # waiting: the tile is the mean of the per-rank table's wait column (every rank)
    ranks = model.ranks_frame(report)
    waits = ranks["comm_wait_ms"].dropna()
    if waits.empty:
        assert tiles["wait"] == "–"
        return
    assert tiles["wait"] == f"{ms(float(np.mean(waits)))} ms/step"
    table = text.split("Per rank (ms per step):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    spans = [m.span() for m in re.finditer(r"-+", table[1])]  # the dashes under each header
    (wait_span,) = [(a, b) for a, b in spans if table[0][a:b].strip() == "wait"]
    cells = [line[slice(*wait_span)].strip() for line in table[2:]]
    printed = [float(c) for c in cells if c != "-"]
    # each printed cell is rounded to 0.1 ms, so their mean is within 0.05 of the tile
    assert float(tiles["wait"].split()[0]) == pytest.approx(np.mean(printed), abs=0.05 + 1e-9)


def test_findings_print_their_saving_once_rounded(report: Report) -> None:
    """The saving a finding shows is the one rounding of its number on every surface."""
    text, markdown = render_text(report), render_markdown(report)
    table = model.stragglers_frame(report)
    for f in report.findings:
        if not f.est_saving_ms_per_step:
            continue
        saving = ms(f.est_saving_ms_per_step)
        assert f"[{f.severity}] {f.title}  (~{saving} ms/step)" in text
        assert f"**[{f.severity}] {f.title}** *(~{saving} ms/step)*" in markdown
        if f.kind == "straggler":
            row = table[table["rank"] == f.ranks[0]].iloc[0]
            assert ms(row["saving ms/step"]) == saving
