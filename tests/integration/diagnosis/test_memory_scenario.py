"""The memory view on a real job: a rank that holds far more memory is named.

A 2-rank DDP job on CPU (gloo) under ``rankscope run --profile-memory``; rank 1
holds a 512 MiB tensor for the whole run (``scenario_job.py --scenario memory_hog``).
The trace's ``[memory]`` events count it in torch's CPU allocator's total.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import needs_torch
from jobs.scenarios import scenario

pytestmark = [pytest.mark.slow, needs_torch]

MiB = 1 << 20


def test_a_rank_holding_more_memory_is_named(tmp_path: Path) -> None:
    r = scenario(
        tmp_path,
        2,
        "memory_hog",
        "--rank",
        "1",
        "--mb",
        "512",
        profile="4-9",
        steps=12,
        run_args=("--profile-memory",),
    )
    memory = r["memory"]
    cpu = {d["rank"]: d for d in memory["devices"] if d["device"] == "cpu"}
    assert set(cpu) == {0, 1} and cpu[0]["events"] > 0 and cpu[1]["events"] > 0
    assert cpu[1]["peak_allocated_b"] - cpu[0]["peak_allocated_b"] >= 512 * MiB
    (imbalance,) = memory["imbalance"]
    assert (imbalance["rank"], imbalance["device"], imbalance["source"]) == (1, "cpu", "trace")
    found = [f for f in r["findings"] if f["kind"] == "memory_imbalance"]
    assert [f["ranks"] for f in found] == [[1]]
    assert found[0]["title"].startswith("Rank 1 peaks at ")
    assert "others' median" in found[0]["title"]
    # a balanced job's memory is not a finding (rank 0 alone holds the usual)
    assert not memory["near_limit"] and not memory["growth"]
