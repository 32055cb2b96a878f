"""Process groups: a real 4-rank 2x2 mesh (gloo) whose second tensor-parallel pair is slow.

``tests/jobs/groups_job.py``: tp pairs {0, 1}, {2, 3}; dp pairs {0, 2}, {1, 3}. Ranks 2
and 3 sleep before each forward: even within their tp pair, they hold back both dp
pairs, and every rank logs only its own groups.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.collector_jobs import JOBS, launcher, rankscope, report_of

pytestmark = [pytest.mark.slow, needs_torch]


def test_a_slow_tensor_parallel_pair_holds_back_the_data_parallel_groups(tmp_path: Path) -> None:
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
        *launcher("module", 4),
        str(JOBS / "groups_job.py"),
        "--slow-pair",
        "1",
        "--ms",
        "60",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    r = json.loads(report_of(run, "json"))
    # Matched within each group: the whole run sees the pair, not "no straggler".
    assert sorted(s["rank"] for s in r["stragglers"]) == [2, 3]
    groups = {(g["desc"], tuple(g["ranks"])): g for g in r["process_groups"]}
    assert groups[("dp", (0, 2))]["held_back_by"] == 2
    assert groups[("dp", (1, 3))]["held_back_by"] == 3
    dp02 = groups[("dp", (0, 2))]
    assert dp02["held_last_or_tied"] > 0.5 * dp02["instances"]
    # ~30 ms vs ~0 (3 ms seen beside a busy neighbour: still a tenth of the pair's)
    assert dp02["mean_lag_ms"]["2"] > 4 * dp02["mean_lag_ms"]["0"] + 10
    text = report_of(run, "text")
    assert "Rank 2 holds back process group" in text and "(dp), ranks 0 and 2" in text
