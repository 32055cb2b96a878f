"""Dashboard pages under Streamlit's AppTest, on the H200 reference run and the bundled sample.

Each page must render without an exception or error box and draw its charts;
the Overview must name the straggler (rank 1, data loading) as the run's
ground truth says. Also the pieces around the pages: run discovery, live-run
detection, the per-step timeline and the CLI's errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DATA, REPO, needs_torch
from streamlit.testing.v1 import AppTest

REF_RUN = DATA / "reference_runs" / "h200_ddp4_straggler"
SAMPLE_RUN = REPO / "sample_traces" / "ddp3_dataloader_straggler"
MAIN = REPO / "dashboard" / "app" / "main.py"
PAGES = ("imbalance", "communication", "gpu", "timeline", "kernels", "compare")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"not available: {path}")
    return path


RUNS = {
    "reference": lambda: _need(REF_RUN),
    "sample": lambda: _need(SAMPLE_RUN),
}


@pytest.fixture(params=sorted(RUNS), scope="module")
def app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, AppTest]]:
    """An AppTest on one run, the Overview already run once (pages then switch within it)."""
    run = RUNS[request.param]()
    saved = {k: os.environ.get(k) for k in ("RANKSCOPE_DASHBOARD_PATH", "RANKSCOPE_CACHE_DIR")}
    os.environ["RANKSCOPE_DASHBOARD_PATH"] = str(run)
    os.environ["RANKSCOPE_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "rankscope-cache")
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    yield request.param, at
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_overview_names_the_straggler(app: tuple[str, AppTest]) -> None:
    _, at = app
    at.switch_page("views/overview.py").run()
    _clean(at)
    callout = " ".join(w.value for w in at.warning)
    assert "Rank 1 is the straggler" in callout
    assert "data loading" in callout
    findings = " ".join(m.value for m in at.markdown)
    assert "Rank 1 holds the others back: data loading" in findings
    assert len(at.get("plotly_chart")) >= 2  # step time per rank, stacked breakdown


def test_a_finding_opens_the_timeline_at_its_rank_and_step(app: tuple[str, AppTest]) -> None:
    name, at = app
    at.switch_page("views/overview.py").run()
    links = [b for b in at.button if b.key and b.key.startswith("rs_finding_timeline_")]
    straggler = next(b for b in links if b.label.startswith("Timeline: rank 1, step "))
    step = int(straggler.label.rsplit(" ", 1)[1])
    # the step where rank 1's own work stood out most (the report's per_step evidence)
    rows = [p for p in data_report(at).per_step if p.rank == 1]
    assert step == max(rows, key=lambda p: (p.excess_ms, p.lag_ms)).step, name
    straggler.click().run()
    _clean(at)
    assert at.title[0].value == "Timeline of one step"
    assert at.selectbox[0].value == step
    assert any("Drawn first: rank(s) 1" in c.value for c in at.caption)
    at.session_state["rs_timeline_focus"] = []  # leave the shared app as it was


def data_report(at: AppTest) -> Any:
    """The report the app shows (the same analysis, made here)."""
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.analysis.report import build_report
    from rankscope.dashboard.ingest.run import load_run

    return build_report(analyse(load_run(os.environ["RANKSCOPE_DASHBOARD_PATH"])))


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(app: tuple[str, AppTest], page: str) -> None:
    name, at = app
    at.switch_page(f"views/{page}.py").run()
    _clean(at)
    charts = len(at.get("plotly_chart"))
    if page == "kernels" and name == "sample":
        assert any("No GPU kernels" in i.value for i in at.info)  # a CPU-only job
    else:
        assert charts >= 1, f"{page}: no chart"
    assert at.caption, f"{page}: charts need captions"


def test_sidebar_choice_holds_across_pages(app: tuple[str, AppTest]) -> None:
    from rankscope.dashboard.app.data import SELECTION_KEY

    _, at = app
    at.switch_page("views/overview.py").run()
    ranks = at.multiselect[0]
    assert ranks.label == "Ranks"
    ranks.set_value([0, 1]).run()
    _clean(at)
    at.switch_page("views/imbalance.py").run()
    _clean(at)
    assert at.session_state[SELECTION_KEY].ranks == (0, 1)
    assert at.multiselect[0].value == [0, 1]
    at.multiselect[0].set_value([]).run()  # empty means every rank
    assert at.session_state[SELECTION_KEY].ranks is None


def test_step_range_narrows_the_analysis(app: tuple[str, AppTest]) -> None:
    from rankscope.dashboard.app.data import SELECTION_KEY

    _, at = app
    at.switch_page("views/overview.py").run()
    slider = at.select_slider[0]
    first, last = slider.value
    slider.set_value((first, first + 1)).run()
    _clean(at)
    assert at.session_state[SELECTION_KEY].steps == f"{first}:{first + 1}"
    assert f"steps {first}–{first + 1}" in " ".join(m.value for m in at.markdown)
    at.select_slider[0].set_value((first, last)).run()
    assert at.session_state[SELECTION_KEY].steps is None


def test_bad_path_shows_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKSCOPE_DASHBOARD_PATH", str(tmp_path / "missing"))
    at = AppTest.from_file(str(MAIN), default_timeout=60).run()
    assert not at.exception
    assert "no such file or directory" in at.error[0].value


# --- the pieces around the pages -------------------------------------------------


def test_step_timeline_adds_up_to_the_step() -> None:
    from rankscope.dashboard.analysis import comms, timeline
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.ingest.run import load_run

    a = analyse(load_run(_need(REF_RUN)))
    waits = comms.wait_intervals(a.collectives)
    step = a.steps[1]
    seg = timeline.step_timeline(
        a.activities, a.windows, waits, step, resolution_ns=1, max_segments_per_rank=10**6
    )
    cats = seg.strings("category")
    for rank in a.run.ranks:
        m = seg["rank"] == rank
        lo, hi = a.windows[rank][step]
        # Exclusive layers: they tile the step exactly.
        assert (seg["end_ms"][m] - seg["start_ms"][m]).sum() == pytest.approx(
            (hi - lo) / 1e6, rel=1e-6
        )
    # The straggler barely waits; the ranks it holds back wait tens of ms.
    wait_ms = {
        r: float(
            (seg["end_ms"] - seg["start_ms"])[(seg["rank"] == r) & (cats == "comm_wait")].sum()
        )
        for r in a.run.ranks
    }
    assert wait_ms[1] < 5 < 30 < min(wait_ms[0], wait_ms[2])
    # Coarsened for drawing: bounded shapes, same extent.
    coarse = timeline.step_timeline(a.activities, a.windows, waits, step, max_segments_per_rank=200)
    assert len(coarse) <= 200 * len(a.run.ranks)
    assert coarse["end_ms"].max() == pytest.approx(seg["end_ms"].max())


def test_arrival_order_names_rank_1() -> None:
    from rankscope.dashboard.analysis import timeline
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.ingest.run import load_run

    a = analyse(load_run(_need(REF_RUN)))
    lag = timeline.arrival_lag(a.collectives)
    assert (lag["lag_ms"] >= 0).all()
    mean_lag = {r: float(lag["lag_ms"][lag["rank"] == r].mean()) for r in a.run.ranks}
    assert max(mean_lag, key=mean_lag.__getitem__) == 1
    last = timeline.last_arrivals_by_step(a.collectives)
    assert int(last["last_arrivals"][last["rank"] == 1].sum()) == a.stragglers[0].last_arrivals
    per_rank = timeline.collective_time_by_rank(a.collectives, len(a.steps))
    assert np.allclose(per_rank["transfer_ms"], per_rank["transfer_ms"][0])  # shared, skew-free
    assert int(per_rank["rank"][np.argmin(per_rank["wait_ms"])]) == 1


def test_find_runs_newest_first_and_errors(tmp_path: Path) -> None:
    from rankscope.dashboard.app.runs import find_runs, is_live
    from rankscope.profiler.errors import RankscopeError

    for i, name in enumerate(("old", "new")):
        d = tmp_path / name
        d.mkdir()
        (d / "rank0.meta.json").write_text('{"rank": 0}')
        os.utime(d / "rank0.meta.json", (1000 + i, 1000 + i))
    (tmp_path / "notes").mkdir()
    assert [r.label for r in find_runs(tmp_path)] == ["new", "old"]
    assert len(find_runs(tmp_path / "new")) == 1
    with pytest.raises(RankscopeError, match="no such file"):
        find_runs(tmp_path / "nope")
    with pytest.raises(RankscopeError, match="no run found"):
        find_runs(tmp_path / "notes")
    live = tmp_path / "new"
    os.utime(live / "rank0.meta.json")  # just written, no end recorded: live
    assert is_live(live)
    (live / "run.json").write_text('{"end_ns": 1}')
    assert not is_live(live)
    assert not is_live(live, now=time.time() + 3600)


def test_straggler_sentence() -> None:
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.analysis.report import build_report
    from rankscope.dashboard.app.model import compare_metrics, straggler_sentence
    from rankscope.dashboard.ingest.run import load_run

    report = build_report(analyse(load_run(_need(REF_RUN))))
    text = straggler_sentence(report)
    assert text is not None and text.startswith(
        "Rank 1 is the straggler: data loading. Its work before each step's collectives takes"
    )
    same = compare_metrics(report, report)
    assert (same["delta"] == 0).all()


def test_dashboard_command_errors_and_flags(tmp_path: Path) -> None:
    from rankscope.dashboard.commands.dashboard import APP_MAIN, streamlit_command

    cmd = streamlit_command("127.0.0.1", 8765)
    assert str(APP_MAIN) in cmd and APP_MAIN.is_file()
    for flag, value in (
        ("--server.address", "127.0.0.1"),
        ("--server.port", "8765"),
        ("--browser.gatherUsageStats", "false"),
        ("--server.headless", "true"),
    ):
        assert cmd[cmd.index(flag) + 1] == value
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rankscope.dashboard.cli",
            "dashboard",
            str(tmp_path / "missing"),
            "--no-browser",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no such file or directory" in out.stderr


def test_demo_without_sample_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rankscope.dashboard.commands.demo import live_job_command, sample_path
    from rankscope.profiler.errors import RankscopeError

    monkeypatch.setenv("RANKSCOPE_SAMPLE_DIR", str(tmp_path))
    with pytest.raises(RankscopeError, match="demo --live"):
        sample_path()
    cmd = live_job_command(tmp_path / "run", 10)
    assert (
        cmd[2:5] == ["rankscope.dashboard.cli", "run", "--out"] and "torch.distributed.run" in cmd
    )
    if SAMPLE_RUN.exists():
        monkeypatch.delenv("RANKSCOPE_SAMPLE_DIR")
        assert sample_path() == SAMPLE_RUN


def test_every_page_copes_with_a_telemetry_only_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `rankscope monitor` run, or a collector run before its first window: no trace yet."""
    import shutil

    from rankscope.profiler import rundir

    nvml = _need(REF_RUN / "rank0.nvml.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    for rank in (0, 1):
        shutil.copy(nvml, rundir.telemetry_path(run, rank))
        rundir.write_json_atomic(
            rundir.rank_meta_path(run, rank), {"schema": rundir.RANK_SCHEMA, "rank": rank}
        )
    monkeypatch.setenv("RANKSCOPE_DASHBOARD_PATH", str(run))
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    _clean(at)
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        _clean(at)
    at.switch_page("views/gpu.py").run()
    assert len(at.get("plotly_chart")) >= 1  # the NVML timeline is there without a trace


# --- the views' rough edges: whole-number axes, no "None" in tables, an empty page says why ---


def _figures(at: AppTest) -> list[dict]:
    import json

    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


@pytest.mark.parametrize("page", ["communication", "imbalance"])
def test_heatmaps_tick_whole_ranks_and_steps(app: tuple[str, AppTest], page: str) -> None:
    """Rank and step (or collective) axes never show ticks between cells such as -0.5 or 0.5."""
    _, at = app
    at.switch_page(f"views/{page}.py").run()
    _clean(at)
    heatmaps = [f for f in _figures(at) if f["data"] and f["data"][0]["type"] == "heatmap"]
    assert heatmaps, f"{page}: no heatmap"
    for fig in heatmaps:
        x, y = fig["layout"]["xaxis"], fig["layout"]["yaxis"]
        assert x.get("type") == "category"  # one tick per step / collective, as labelled
        assert y["tickmode"] == "array"
        assert all(float(v).is_integer() for v in y["tickvals"])
        assert y["ticktext"] == [f"rank {int(v)}" for v in y["tickvals"]]


def test_tables_show_a_dash_where_a_value_is_missing(app: tuple[str, AppTest]) -> None:
    from rankscope.dashboard.app.charts import MISSING

    name, at = app
    seen = 0
    for page in ("overview", *PAGES):
        at.switch_page(f"views/{page}.py").run()
        _clean(at)
        for table in at.dataframe:
            assert table.proto.placeholder == MISSING, f"{page}: a table would print None"
            seen += 1
    assert seen >= 6
    if name == "sample":
        # gloo on CPU records no message sizes: that cell is missing, drawn as a dash.
        at.switch_page("views/communication.py").run()
        assert at.dataframe[0].value["message MB"].isna().all()


def test_kernels_page_says_why_it_is_empty_on_a_cpu_only_run(app: tuple[str, AppTest]) -> None:
    from rankscope.dashboard.analysis.wording import NO_KERNELS_CPU_ONLY

    name, at = app
    at.switch_page("views/kernels.py").run()
    _clean(at)
    if name == "sample":
        assert [i.value for i in at.info] == [NO_KERNELS_CPU_ONLY]
        assert "CPU-only" in NO_KERNELS_CPU_ONLY and NO_KERNELS_CPU_ONLY.count(". ") == 0
    else:
        assert not at.info and len(at.dataframe) == 1


# --- the diagnosis on the Overview and the heatmaps: pattern, per-step evidence, stall marks ---

# Ground truth of each run (its README): every rank, the analysed steps, the persistent
# stragglers worst first.
GROUND_TRUTH = {
    "reference": ([0, 1, 2, 3], [2, 3, 4, 5, 6, 7], [1, 3]),
    "sample": ([0, 1, 2], [4, 5, 6], [1]),
}


def _decoded(spec: Any) -> Any:
    """A chart spec with plotly's typed arrays (``{"dtype", "bdata"[, "shape"]}``) as lists."""
    import base64

    if isinstance(spec, dict):
        if "bdata" in spec and "dtype" in spec:
            values = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=spec["dtype"])
            if "shape" in spec:
                values = values.reshape([int(n) for n in str(spec["shape"]).split(",")])
            return values.tolist()
        return {k: _decoded(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_decoded(v) for v in spec]
    return spec


def _plotly(at: AppTest) -> list[Any]:
    """The page's charts as plotly figures, their arrays readable as numbers."""
    import json

    import plotly.graph_objects as go

    return [go.Figure(_decoded(json.loads(c.proto.spec))) for c in at.get("plotly_chart")]


def _per_step_chart(at: AppTest) -> Any:
    """The Overview's per-step chart: the one whose every trace is a rank's line."""
    (fig,) = [
        f
        for f in _plotly(at)
        if f.data and all(t.type == "scatter" and t.name.startswith("rank ") for t in f.data)
    ]
    return fig


def _marked(fig: Any) -> list[str]:
    return [s.name for s in fig.layout.shapes if s.name]


def test_overview_shows_each_stragglers_pattern_and_its_per_step_line(
    app: tuple[str, AppTest],
) -> None:
    from rankscope.dashboard.app.charts import STRAGGLER_COLOURS

    name, at = app
    ranks, steps, stragglers = GROUND_TRUTH[name]
    at.switch_page("views/overview.py").run()
    _clean(at)
    (table,) = [t.value for t in at.dataframe if "pattern" in t.value.columns]
    assert list(table["rank"]) == stragglers
    assert set(table["pattern"]) == {"persistent"}
    assert set(table["confidence"]) <= {"high", "medium", "low"}
    assert (table["saving ms/step"] > 0).all() and table["stalls"].isna().all()
    assert any(c.value.startswith("persistent: late at most steps") for c in at.caption)

    fig = _per_step_chart(at)
    assert [t.name for t in fig.data] == [f"rank {r}" for r in ranks]  # one line per rank
    assert all(list(t.x) == steps for t in fig.data)  # one point per analysed step
    thick = [int(t.name.split()[1]) for t in fig.data if t.line.width == 4]
    assert thick == sorted(stragglers)  # the stragglers stand out
    # The verdict names rank 1; its line is above the others' median at every step.
    assert "Rank 1 is the straggler" in " ".join(w.value for w in at.warning)
    (rank1,) = [t for t in fig.data if t.name == "rank 1"]
    assert rank1.line.color == STRAGGLER_COLOURS[0] and min(rank1.y) > 0
    assert not fig.layout.annotations  # persistent: no single stall to label


def test_imbalance_outlines_the_stragglers_and_draws_the_per_step_excess(
    app: tuple[str, AppTest],
) -> None:
    name, at = app
    ranks, steps, stragglers = GROUND_TRUTH[name]
    at.switch_page("views/imbalance.py").run()
    _clean(at)
    heatmaps = [f for f in _plotly(at) if f.data and f.data[0].type == "heatmap"]
    (excess,) = [f for f in heatmaps if f.layout.coloraxis.cmid == 0]
    rows = [f"persistent: rank {r}" for r in stragglers]
    assert all(_marked(f) == rows for f in heatmaps)  # every rank x step heatmap marks them
    cells = excess.data[0]
    assert list(cells.y) == ranks and [int(x) for x in cells.x] == steps
    # A straggler's row is later than the others' median at every step; rank 1's the most.
    assert all(min(cells.z[ranks.index(r)]) > 0 for r in stragglers)
    means = [sum(row) / len(row) for row in cells.z]
    assert ranks[means.index(max(means))] == 1


@pytest.mark.slow
@needs_torch
def test_an_intermittent_stall_is_a_spike_at_its_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 3-rank gloo job whose rank 2 stalls 300 ms once, at step 9 (untraced Python).

    The callout says where it stalled (never a mean) and where to look next; the
    table says intermittent; the per-step chart has one line per rank, rank 2's with
    a labelled spike at step 9; the heatmaps outline that one cell.
    """
    from jobs.collector_jobs import JOBS, launcher, rankscope

    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "4-13",
        "--",
        *launcher("module", 3),
        str(JOBS / "scenario_job.py"),
        "--steps",
        "16",
        "--scenario",
        "single_stall",
        "--rank",
        "2",
        "--ms",
        "300",
        "--at-step",
        "9",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setenv("RANKSCOPE_DASHBOARD_PATH", str(run))
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    at.switch_page("views/overview.py").run()
    _clean(at)
    (callout,) = [w.value for w in at.warning]
    assert callout.startswith("**Rank 2 stalled ~") and "at step 9:" in callout
    assert "outside any traced op" in callout and "ms/step" not in callout
    assert any(c.value.startswith("Where to look next:") for c in at.caption)
    (table,) = [t.value for t in at.dataframe if "pattern" in t.value.columns]
    row = table.iloc[0]
    assert (row["rank"], row["pattern"]) == (2, "intermittent")
    assert row["stalls"].endswith("at step 9") and np.isnan(row["excess ms/step"])

    fig = _per_step_chart(at)
    assert [t.name for t in fig.data] == ["rank 0", "rank 1", "rank 2"]
    rank2 = fig.data[2]
    assert rank2.line.width == 4
    spike = list(rank2.x).index(9)
    assert rank2.y[spike] == max(max(t.y) for t in fig.data) > 200  # the spike is the stall
    assert [s for s, m in zip(rank2.x, rank2.marker.symbol, strict=True) if m == "diamond"] == [9]
    (note,) = fig.layout.annotations
    assert note.x == 9 and note.text.startswith("rank 2: ~")
    assert note.text.split("~")[1] in callout  # the same lag in the verdict and on the chart

    at.switch_page("views/imbalance.py").run()
    _clean(at)
    heatmaps = [f for f in _plotly(at) if f.data and f.data[0].type == "heatmap"]
    assert heatmaps and all(_marked(f) == ["intermittent: rank 2, step 9"] for f in heatmaps)


def test_gpu_page_on_a_cpu_run_says_what_it_needs(app: tuple[str, AppTest]) -> None:
    """No blank table of rank numbers: the page says what it needs to draw anything."""
    from rankscope.dashboard.analysis.wording import NO_GPU_CPU_ONLY

    name, at = app
    at.switch_page("views/gpu.py").run()
    _clean(at)
    assert all(list(t.value.columns) != ["rank"] for t in at.dataframe)
    if name == "sample":
        assert NO_GPU_CPU_ONLY in [i.value for i in at.info]


def test_compare_page_leads_with_the_verdict_and_its_waterfall(app: tuple[str, AppTest]) -> None:
    """One run: A and B are its two halves; the page says the verdict before any table."""
    _, at = app
    at.switch_page("views/compare.py").run()
    _clean(at)
    headline = at.markdown[0].value
    assert headline.startswith("**") and "step time" in headline
    assert any(v in headline for v in ("No significant change", "NEW is slower", "NEW is faster"))
    first_chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    (bars,) = first_chart["data"]
    assert bars["type"] == "waterfall"
    assert bars["measure"][-1] == "total" and bars["x"][-1] == "step time"
    # the components add up to the step-time change, the last bar
    assert abs(sum(bars["y"][:-1]) - bars["y"][-1]) < 0.05


def test_gpu_page_shows_memory_or_says_how_to_record_it(app: tuple[str, AppTest]) -> None:
    """Peak allocated and reserved per rank where a trace or the light layer has them;
    else the one command that records them."""
    from rankscope.dashboard.analysis.wording import NO_MEMORY_DATA

    name, at = app
    at.switch_page("views/gpu.py").run()
    _clean(at)
    charts = [f for f in _figures(at) if any(t.get("name") == "peak allocated" for t in f["data"])]
    if name == "reference":  # the H200 run was recorded with memory profiling
        (chart,) = charts
        assert {t["name"] for t in chart["data"]} == {"peak allocated", "peak reserved"}
        assert all(len(t["x"]) == 4 for t in chart["data"])
    else:  # the sample has each process's RSS (drawn), no allocator figures
        assert NO_MEMORY_DATA in [i.value for i in at.info]
