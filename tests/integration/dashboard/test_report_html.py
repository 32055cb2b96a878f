"""``rankscope report --format html`` on the bundled sample, opened in a real headless Chromium
with the network off: nothing is fetched, the charts draw, the verdict is the text report's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rankscope.dashboard.cli import main

pytestmark = pytest.mark.browser
SAMPLE = Path(__file__).resolve().parents[3] / "sample_traces" / "ddp3_dataloader_straggler"


def test_sample_html_opens_offline_with_its_charts_and_the_text_verdict(
    browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(SAMPLE), "--format", "html", "-o", str(out)]) == 0
    assert main(["report", str(SAMPLE)]) == 0
    text = capsys.readouterr().out.splitlines()
    verdict = text[2]  # "rankscope report: PATH", a blank line, then the verdict
    assert "straggler" in verdict

    context = browser.new_context(offline=True)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    try:
        page.goto(out.as_uri())
        page.wait_for_selector("#rs-per-step svg.main-svg", timeout=30_000)
        page.wait_for_selector("#rs-imbalance svg.main-svg", timeout=30_000)
        assert page.inner_text("#verdict") == verdict
        assert page.locator(".js-plotly-plot").count() >= 2
        assert "rank 1" in page.inner_text("#rs-per-step")
        left = [u for u in requests if not u.startswith(("file:", "data:", "blob:", "about:"))]
        assert left == []
    finally:
        context.close()
