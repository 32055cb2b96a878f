"""The Whole run page under Streamlit's AppTest, on a real light-layer run and on one without.

The run: 3 gloo ranks for 140 steps, rank 2 stalling 300 ms at steps 60 and 120
(untraced Python), trace windows at steps 58-62 and 118-122. The page must draw one
heatmap row per rank with the stall cells the latest at their steps, mark both
windows, and move the other pages' step range to the window over a picked stall.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO, dashboard_env, needs_torch
from streamlit.testing.v1 import AppTest

MAIN = REPO / "dashboard" / "app" / "main.py"
REF_RUN = DATA / "reference_runs" / "h200_ddp4_straggler"
PAGE = "views/wholerun.py"
STALLS = (60, 120)
WINDOWS = ((58, 62), (118, 122))


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _heatmap(at: AppTest) -> dict:
    (fig,) = [f for f in _figures(at) if f["data"] and f["data"][0]["type"] == "heatmap"]
    return fig


def _z(trace: dict) -> np.ndarray:
    """A heatmap's cells as numbers (plotly may send a typed array)."""
    import base64

    z = trace["z"]
    if isinstance(z, dict):
        values = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"])
        return values.reshape([int(n) for n in str(z["shape"]).split(",")])
    return np.array(z, dtype=float)


def _app(run: Path, cache: Path) -> AppTest:
    os.environ["RANKSCOPE_DASHBOARD_PATH"] = str(run)
    os.environ["RANKSCOPE_CACHE_DIR"] = str(cache)
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    at.switch_page(PAGE).run()
    _clean(at)
    return at


@pytest.fixture(scope="module")
def stall_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from jobs.collector_jobs import JOBS, launcher, rankscope

    run = tmp_path_factory.mktemp("wholerun") / "run"
    profile = ",".join(f"{a}-{b}" for a, b in WINDOWS)
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        profile,
        "--",
        *launcher("module", 3),
        str(JOBS / "scenario_job.py"),
        "--steps",
        "140",
        "--scenario",
        "single_stall",
        "--rank",
        "2",
        "--ms",
        "300",
        "--at-step",
        ",".join(map(str, STALLS)),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = {k: os.environ.get(k) for k in ("RANKSCOPE_DASHBOARD_PATH", "RANKSCOPE_CACHE_DIR")}
    yield run
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.slow
@needs_torch
def test_heatmap_has_a_row_per_rank_and_the_stalls_are_the_latest_cells(
    stall_run: Path, tmp_path: Path
) -> None:
    at = _app(stall_run, tmp_path / "cache")
    fig = _heatmap(at)
    cells = fig["data"][0]
    assert cells["y"] == ["rank 0", "rank 1", "rank 2"]  # one row per rank
    x = [round(v) for v in cells["x"]]
    assert x == sorted(x) and x[0] == 0 and len(x) >= 130  # every step: no pooling needed
    z = _z(cells)
    assert z.shape == (3, len(x))
    for step in STALLS:
        column = z[:, x.index(step)]
        assert column.argmax() == 2 and column[2] > 200  # rank 2, ~300 ms late
    assert np.nanmax(z) == max(z[2, x.index(s)] for s in STALLS)  # nothing later elsewhere
    # Each window's start and stop steps are rankscope's own capture: no lateness, shaded.
    for a, b in WINDOWS:
        assert np.isnan(z[:, x.index(a - 1)]).all() and np.isnan(z[:, x.index(b + 1)]).all()
    # Both windows are marked on the heatmap (named bands, labelled) and on the other charts.
    labels = [f"trace steps {a}–{b}" for a, b in WINDOWS]
    shapes = [s.get("name") for s in fig["layout"]["shapes"]]
    assert [n for n in shapes if n != "capture"] == labels
    assert shapes.count("capture") >= len(WINDOWS)
    assert [a["text"] for a in fig["layout"]["annotations"] if a["text"] != "capture"] == labels
    others = [f for f in _figures(at) if f is not fig and f["data"][0]["type"] == "scatter"]
    assert len(others) >= 3  # step time, DataLoader wait, host CPU (no GPU here)
    assert all(
        [n for n in (s.get("name") for s in f["layout"]["shapes"]) if n != "capture"] == labels
        for f in others
    )
    assert at.caption[0].value.startswith("Every step of every rank from the light layer")


@pytest.mark.slow
@needs_torch
def test_picking_a_stall_sets_the_step_range_to_its_window(stall_run: Path, tmp_path: Path) -> None:
    from rankscope.dashboard.app.data import SELECTION_KEY

    at = _app(stall_run, tmp_path / "cache")
    assert at.session_state[SELECTION_KEY].steps is None
    (pick,) = at.selectbox
    # The options are the stalls the diagnosis found (on a busy host, maybe a rotating
    # blip besides): each names its late rank and the window over it.
    labels = list(pick.options)
    for (a, b), step in zip(WINDOWS, STALLS, strict=True):
        (label,) = [lab for lab in labels if lab.startswith(f"step {step}: ")]
        assert label.startswith(f"step {step}: rank 2 ~")
        assert label.endswith(f"(in trace steps {a}–{b})")
    at.selectbox[0].set_value(labels.index(next(lab for lab in labels if "step 120:" in lab)))
    at.run()
    _clean(at)
    assert at.session_state[SELECTION_KEY].steps == "118:122"
    assert at.select_slider[0].value == (118, 122)
    success = [s.value for s in at.success]
    assert success and success[0].startswith("The other pages now show steps 118–122")
    at.switch_page("views/overview.py").run()  # the other pages follow
    _clean(at)
    assert at.session_state[SELECTION_KEY].steps == "118:122"
    at.switch_page(PAGE).run()
    at.selectbox[0].set_value(labels.index(next(lab for lab in labels if "step 60:" in lab)))
    at.run()  # now the stall at step 60
    _clean(at)
    assert at.session_state[SELECTION_KEY].steps == "58:62"


def test_a_run_without_a_light_log_says_so_in_one_sentence(tmp_path: Path) -> None:
    from rankscope.dashboard.analysis.wording import NO_LIGHT_LOG

    if not REF_RUN.exists():
        pytest.skip(f"not available: {REF_RUN}")
    with dashboard_env(REF_RUN, tmp_path / "cache"):
        at = _app(REF_RUN, tmp_path / "cache")
    assert [i.value for i in at.info] == [NO_LIGHT_LOG]
    assert NO_LIGHT_LOG.count(". ") == 0 and NO_LIGHT_LOG.endswith(".")
    assert not at.get("plotly_chart")
