"""A slow node named as a node: a real 4-rank gloo job run as two torchrun "nodes".

``tests/jobs/two_nodes.py`` starts torchrun twice (``--nnodes 2 --node-rank K``) on
this host, so each rank has the ``GROUP_RANK``/``LOCAL_RANK`` a real node's torchrun
sets; the ranks of node 1 sleep in their Dataset's ``__getitem__``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO, needs_torch
from jobs.collector_jobs import JOBS, rankscope, report_of

pytestmark = [pytest.mark.slow, needs_torch]


def test_the_slow_node_is_named_with_its_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "off",
        "--nvml-period-ms",
        "200",
        "--",
        sys.executable,
        str(JOBS / "two_nodes.py"),
        "2",
        str(JOBS / "scenario_job.py"),
        "--steps",
        "40",
        "--scenario",
        "slow_node",
        "--slow-node",
        "1",
        "--ms",
        "60",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((run / "run.json").read_text())
    assert [(n["node"], n["ranks"]) for n in manifest["nodes"]] == [(0, [0, 1]), (1, [2, 3])]
    meta = json.loads((run / "rank3.meta.json").read_text())
    assert (meta["node_rank"], meta["local_rank"], meta["placement_source"]) == (1, 1, "torchrun")

    r = json.loads(report_of(run, "json"))
    (slow,) = r["nodes"]["slow"]
    assert (slow["node"], slow["slow_ranks"], slow["scope"]) == (1, [2, 3], "whole_run")
    assert slow["cause"] == "data_loading" and 45 < slow["excess_ms_per_step"] < 90
    host = meta["host"]
    assert f"Node 1 (host {host}, ranks 2, 3) is slow over the whole run" in report_of(run, "text")

    # The Overview's callout says the same.
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RANKSCOPE_DASHBOARD_PATH", str(run))
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(str(REPO / "dashboard" / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/overview.py").run()
    assert not at.exception, [e.value for e in at.exception]
    callouts = " ".join(w.value for w in at.warning)
    assert f"Node 1 (host {host}, ranks 2, 3) is slow over the whole run" in callouts
