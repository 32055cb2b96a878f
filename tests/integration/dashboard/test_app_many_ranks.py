"""The dashboard at many ranks under Streamlit's AppTest: readable, and the straggler still named.

A 96-rank run from ``benchmarks/make_runs.py`` (copies of the real H200 traces,
rank 49 planted with the reference straggler's data loading; ~4 s to write, ~17 s
to ingest once on 2 cores; every page after that renders in about a second). At
96 ranks no chart draws a line, bar or heatmap row per rank: per-rank lines are a
median and a band plus the straggler by name, bars the top ranks plus one for the
rest, heatmaps and tables at most 64 rows with the straggler on top, and each says
"Showing N of 96 ranks". The 4-rank reference run keeps one line and row per rank.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, REPO
from streamlit.testing.v1 import AppTest

MAIN = REPO / "dashboard" / "app" / "main.py"
REF_RUN = DATA / "reference_runs" / "h200_ddp4_straggler"
N_RANKS = 96
STRAGGLER = 49
MAX_ROWS = 64  # model.MAX_TABLE_RANKS
MAX_BARS = 32  # model.MAX_BAR_RANKS


def _make_run(out: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_runs", REPO / "benchmarks" / "make_runs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make_run(out, N_RANKS, STRAGGLER)


def _start(run: Path, cache: Path) -> Iterator[AppTest]:
    saved = {k: os.environ.get(k) for k in ("RANKSCOPE_DASHBOARD_PATH", "RANKSCOPE_CACHE_DIR")}
    os.environ["RANKSCOPE_DASHBOARD_PATH"] = str(run)
    os.environ["RANKSCOPE_CACHE_DIR"] = str(cache)
    at = AppTest.from_file(str(MAIN), default_timeout=300)
    at.run()
    # The app reads its run from the environment on every rerun: a test that drives
    # this app after another fixture started sets these again.
    at.rs_env = {"RANKSCOPE_DASHBOARD_PATH": str(run), "RANKSCOPE_CACHE_DIR": str(cache)}  # type: ignore[attr-defined]
    yield at
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppTest]:
    if not REF_RUN.exists():
        pytest.skip(f"not available: {REF_RUN}")
    run = tmp_path_factory.mktemp("ranks96")
    _make_run(run)
    yield from _start(run, tmp_path_factory.getbasetemp() / "rankscope-cache")


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppTest]:
    if not REF_RUN.exists():
        pytest.skip(f"not available: {REF_RUN}")
    yield from _start(REF_RUN, tmp_path_factory.getbasetemp() / "rankscope-cache")


def _page(at: AppTest, page: str) -> list[dict[str, Any]]:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def _of(figures: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The figures whose first trace is a ``kind`` (heatmap, bar, scatter), in page order.

    (``charts.show`` moves each title above its chart, out of the figure.)"""
    return [f for f in figures if f["data"] and f["data"][0]["type"] == kind]


def _heatmaps(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _of(figures, "heatmap")


def _legend(fig: dict[str, Any]) -> list[str]:
    return [t["name"] for t in fig["data"] if t.get("name") and t.get("showlegend") is not False]


def _bar_ranks(fig: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(x for t in fig["data"] for x in t["x"]))


def test_overview_many_ranks(many: AppTest) -> None:
    figures = _page(many, "overview")
    assert f"Rank {STRAGGLER} is the straggler" in " ".join(w.value for w in many.warning)
    (per_step,) = _of(figures, "scatter")
    names = _legend(per_step)
    assert len(per_step["data"]) <= 8, names  # not one line per rank
    assert f"median of {N_RANKS} ranks" in names and f"p10–p90 of {N_RANKS} ranks" in names
    assert f"rank {STRAGGLER}" in names
    for fig in _of(figures, "bar"):  # step time per rank, where each rank's step goes
        bars = _bar_ranks(fig)
        assert len(bars) == MAX_BARS + 1 and bars[0] == f"rank {STRAGGLER}"
        assert bars[-1] == f"other {N_RANKS - MAX_BARS} ranks (median)"
    assert f"Showing {MAX_BARS} of {N_RANKS} ranks" in _captions(many)
    # The raw traces: a rank to pick, not a button per file of every rank.
    assert len(many.get("download_button")) <= 4
    assert many.selectbox(key="rs_overview_download_rank").value == STRAGGLER


def test_imbalance_heatmaps_straggler_first(many: AppTest) -> None:
    heatmaps = _heatmaps(_page(many, "imbalance"))
    assert len(heatmaps) == 5  # excess, compute, data, wait, last arrivals
    for fig in heatmaps:
        ticks = fig["layout"]["yaxis"]["ticktext"]
        assert len(ticks) == MAX_ROWS and ticks[0] == f"rank {STRAGGLER}"
        assert "texttemplate" not in fig["data"][0]  # no numbers in 64 rows of cells
    outlined = [s for s in _heatmaps(_page(many, "imbalance"))[0]["layout"].get("shapes", [])]
    assert outlined and outlined[0]["y0"] == -0.5  # the straggler's row, on top
    assert f"Showing {MAX_ROWS} of {N_RANKS} ranks" in _captions(many)


def test_communication_and_gpu_bounded(many: AppTest) -> None:
    figures = _page(many, "communication")
    (lag,) = _heatmaps(figures)
    assert lag["layout"]["yaxis"]["ticktext"][0] == f"rank {STRAGGLER}"
    last = _bar_ranks(_of(figures, "bar")[1])  # how often each rank arrived last
    assert last[0] == f"rank {STRAGGLER}" and last[-1].endswith("ranks (total)")

    figures = _page(many, "gpu")
    telemetry = _of(figures, "scatter")
    assert telemetry
    for fig in telemetry:
        assert len(_legend(fig)) <= 10, _legend(fig)
        assert any(n.startswith(f"rank {STRAGGLER}") for n in _legend(fig))
    (table,) = many.dataframe
    assert len(table.value) == MAX_ROWS
    many.toggle(key="rs_gpu_all_ranks").set_value(True).run()
    assert len(many.dataframe[0].value) == N_RANKS


def test_timeline_and_compare_bounded(many: AppTest) -> None:
    (fig,) = _page(many, "timeline")
    rows = fig["layout"]["yaxis"]["categoryarray"]
    assert len(rows) == MAX_BARS and rows[-1] == f"rank {STRAGGLER}"  # drawn on top
    assert len(many.dataframe[0].value) == MAX_ROWS
    (heat,) = _heatmaps(_page(many, "compare"))
    assert len(heat["layout"]["yaxis"]["ticktext"]) == MAX_ROWS


def test_four_ranks_draw_every_rank_as_before(few: AppTest) -> None:
    figures = _page(few, "overview")
    (per_step,) = _of(figures, "scatter")
    assert [t["name"] for t in per_step["data"]] == [f"rank {r}" for r in range(4)]
    for fig in _of(figures, "bar"):
        assert _bar_ranks(fig) == [f"rank {r}" for r in range(4)]
    assert len(few.get("download_button")) == 2 + 4  # both reports, each rank's trace
    assert "Showing" not in _captions(few)
    for page in ("imbalance", "communication", "compare"):
        for fig in _heatmaps(_page(few, page)):
            assert list(fig["layout"]["yaxis"]["tickvals"]) == [0, 1, 2, 3]
            assert list(fig["layout"]["yaxis"]["ticktext"]) == [f"rank {r}" for r in range(4)]
        assert "Showing" not in _captions(few)
    gpu = _of(_page(few, "gpu"), "scatter")
    assert gpu and all(len({t["name"].split(",")[0] for t in f["data"]}) == 4 for f in gpu)
    assert not few.toggle


def test_the_rank_picker_starts_empty_at_many_ranks_and_narrows_the_overview(
    many: AppTest, few: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """96 chips would be most of the page: the picker starts empty (all ranks) and
    picking one rank narrows the Overview to it; 4 ranks start with every chip."""
    from rankscope.dashboard.app.data import SELECTION_KEY

    for k, v in many.rs_env.items():  # type: ignore[attr-defined]
        monkeypatch.setenv(k, v)
    many.switch_page("views/overview.py").run()
    picker = many.multiselect[0]
    assert picker.label == "Ranks" and picker.value == []
    assert many.session_state[SELECTION_KEY].ranks is None  # all ranks analysed
    picker.set_value([STRAGGLER]).run()
    assert many.session_state[SELECTION_KEY].ranks == (STRAGGLER,)
    shown = [m.value for m in many.markdown]
    assert any(f"1 rank(s) of {N_RANKS}" in t for t in shown), shown
    many.multiselect[0].set_value([]).run()  # the tree of this render, not the first one
    assert many.session_state[SELECTION_KEY].ranks is None

    for k, v in few.rs_env.items():  # type: ignore[attr-defined]
        monkeypatch.setenv(k, v)
    few.switch_page("views/overview.py").run()
    assert few.multiselect[0].value == [0, 1, 2, 3]
