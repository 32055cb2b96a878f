"""``rankscope.load``: the example of docs/notebook.md runs as written, and the API's
tables and charts hold what the report says, without streamlit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rankscope
from rankscope.profiler.errors import RankscopeError

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample_traces" / "ddp3_dataloader_straggler"
REFERENCE = REPO / "tests" / "data" / "reference_runs" / "h200_ddp4_straggler"


def test_the_docs_example_runs_as_a_script(tmp_path: Path) -> None:
    text = (REPO / "docs" / "notebook.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    script = tmp_path / "example.py"
    # The example must not need streamlit: fail if anything imports it.
    guard = "import sys\nsys.modules['streamlit'] = None  # importing it raises\n"
    script.write_text(guard + "\n".join(blocks), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank" in done.stdout
    for name in ("steps.html", "excess.html", "cpu.html"):
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.fixture(scope="module")
def reference() -> rankscope.dashboard.notebook.RunResults:
    return rankscope.load(REFERENCE)


def test_tables_hold_what_the_report_says(reference) -> None:
    run = reference
    assert run.report.stragglers[0].rank == 1
    steps = run.steps
    assert sorted(steps["rank"].unique()) == [0, 1, 2, 3]
    assert sorted(steps["step"].unique()) == run.report.run.steps
    # per rank, the mean of the per-step rows is the report's per-rank number
    for row in run.report.ranks:
        mine = steps[steps["rank"] == row.rank]
        assert mine["step_ms"].mean() == pytest.approx(row.step_ms, abs=0.01)
        assert mine["data_ms"].mean() == pytest.approx(row.data_ms, abs=0.01)
    # the ground truth of this run (tests/data/reference_runs/README.md): rank 1's data
    # loading ~74 ms/step, ranks 0 and 2 wait longest in all_reduce
    assert steps.groupby("rank")["data_ms"].mean()[1] == pytest.approx(74, abs=8)
    waits = run.collectives.groupby("rank")["wait_ms"].sum()
    assert set(waits.nlargest(2).index) == {0, 2}
    assert set(run.collectives["name"]) == {"all_reduce"}
    assert run.kernels["ms_per_step"].iloc[0] > 0
    tel = run.telemetry
    assert {"rank", "t_s", "ts_ns", "gpu_util_pct", "power_mw"} <= set(tel.columns)
    assert sorted(tel["rank"].unique()) == [0, 1, 2, 3]


def test_charts_are_the_dashboards(reference) -> None:
    fig = reference.step_chart("step_ms")
    assert {t.name for t in fig.data} >= {"rank 0", "rank 1", "rank 2", "rank 3"}
    heat = reference.excess_heatmap()
    assert heat.data[0].z.shape == (4, len(reference.report.run.steps))
    tel = reference.telemetry_chart(("power_mw",), scale=1e-3, unit="W")
    assert len(tel.data) == 4
    with pytest.raises(ValueError, match="no telemetry field nvlink_tx_kbs"):
        reference.telemetry_chart(("nvlink_tx_kbs",))
    with pytest.raises(ValueError, match="one of"):
        reference.step_chart("nonsense")


def test_narrowing_and_bad_input() -> None:
    run = rankscope.load(REFERENCE, ranks=[1, 3], steps="4:5")
    assert run.report.run.ranks == [1, 3] and run.report.run.steps == [4, 5]
    with pytest.raises(RankscopeError, match=r"no run|no such|not found|does not exist"):
        rankscope.load(REPO / "no-such-run")
