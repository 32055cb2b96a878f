"""The HTML report (``render_html``): one self-contained page, every name from a run escaped."""

from __future__ import annotations

import re

import pytest

from rankscope.dashboard.analysis.results import KernelSummary
from rankscope.dashboard.cli import main
from tests.report_factory import make_report, rank_row

pytest.importorskip("plotly")

EVIL = "<script>alert('rankscope')</script>"


def _html() -> str:
    from rankscope.dashboard.render_html import render_html

    kernel = KernelSummary(EVIL, 1.5, 50.0, 1.0, 1.0, 2.0, 1, 0.1)
    report = make_report(
        ranks=[rank_row(0, step_ms=90.0), rank_row(1, step_ms=91.0)],
        top_kernels=[kernel],
        path=f"runs/{EVIL}",
        warnings=[f"cannot read {EVIL}.json"],
    )
    return render_html(report)


def test_a_kernel_name_with_a_script_tag_is_text_not_markup() -> None:
    page = _html()
    # the page's one script element is plotly's bundle (no chart: no per-step rows)
    assert page.count("<script") == 1
    assert "&lt;script&gt;alert(&#x27;rankscope&#x27;)&lt;/script&gt;" in page
    assert EVIL not in page


def test_the_page_fetches_nothing() -> None:
    page = _html()
    assert not re.search(r"""<(link|img|iframe)\b|src=["']https?:|@import|url\(https?:""", page)
    assert page.startswith("<!DOCTYPE html>")


def test_without_plotly_html_exits_3_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a)
    )
    assert main(["report", "no-such-run", "--format", "html"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == 'rankscope report: --format html needs plotly: pip install "rankscope[dashboard]"'
