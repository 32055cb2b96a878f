"""Collectives the ranks logged under different names at one (process group, seq): a
desync the whole run names (``wholerun.name_mismatches``), on a hand-written run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rankscope.dashboard.analysis.wholerun import name_mismatches
from rankscope.dashboard.ingest.run import load_run
from rankscope.profiler import rundir

T0 = 1_700_000_000_000_000_000


def _write(run: Path, rank: int, colls: list[dict[str, Any]]) -> None:
    (run / rundir.RUN_MANIFEST).write_text(json.dumps({"schema": rundir.RUN_SCHEMA}))
    meta = {"schema": rundir.RANK_SCHEMA, "rank": rank}
    (run / f"rank{rank}.meta.json").write_text(json.dumps(meta))
    steps = [{"step": s, "start_ns": T0 + s * 10**7, "end_ns": T0 + (s + 1) * 10**7 - 1}
             for s in range(4)]  # fmt: skip
    (run / f"rank{rank}.steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    rows = [
        {"pg": "0", "pg_desc": "default_pg", "p2p": False, "bytes": 4, "enqueue_ns": T0 + 1,
         "start_ns": None, "end_ns": None, "duration_ms": None, "state": "completed", **c}
        for c in colls
    ]  # fmt: skip
    (run / f"rank{rank}.collectives.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_collective_logged_under_another_name_is_named_with_each_rank(tmp_path: Path) -> None:
    same = [{"seq": s, "name": "all_reduce"} for s in (1, 2, 4)]
    _write(tmp_path, 0, [*same, {"seq": 3, "name": "all_reduce"}])
    _write(tmp_path, 1, [*same, {"seq": 3, "name": "broadcast"}])
    _write(tmp_path, 2, [*same, {"seq": 3, "name": "all_reduce"}])
    found, count = name_mismatches(load_run(tmp_path).ranks)
    assert count == 1 and [(m.pg, m.seq, m.names) for m in found] == [
        ("0", 3, {0: "all_reduce", 1: "broadcast", 2: "all_reduce"})
    ]
    # a group whose numbers do not line up (said elsewhere) is not checked by number
    assert name_mismatches(load_run(tmp_path).ranks, frozenset({"0"})) == ([], 0)


def test_sends_and_receives_and_unshared_instances_are_not_mismatches(tmp_path: Path) -> None:
    # a pipeline: rank 0's send #1 is rank 1's recv #1; seq 9 only rank 0 logged
    _write(tmp_path, 0, [{"seq": 1, "name": "send", "p2p": True}, {"seq": 9, "name": "barrier"}])
    _write(tmp_path, 1, [{"seq": 1, "name": "recv", "p2p": True}])
    assert name_mismatches(load_run(tmp_path).ranks) == ([], 0)
