"""``rankscope watch``'s frame at 1,024 ranks: one summary line, the stalled and slowest
ranks first, a bounded table (files written as the collector writes them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from rankscope.dashboard.commands.watch import frame, snapshot
from rankscope.profiler import layout


def _fake_run(run: Path, world: int, slow: int, now_ns: int) -> None:
    control = layout.control_dir(run)
    control.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"schema": layout.RUN_SCHEMA, "world_size": world}))
    for rank in range(world):
        step = 100 - (7 if rank == slow else 0)
        hb = {
            "schema": layout.HEARTBEAT_SCHEMA, "rank": rank, "ts_ns": now_ns,
            "world_size": world, "host": f"node{rank // 8}", "step": step,
            "steps_per_s": 10.0, "state": "running",
        }  # fmt: skip
        layout.heartbeat_path(run, rank).write_text(json.dumps(hb))
        data_ns = 40_000_000 if rank == slow else 1_000_000
        lines = [
            json.dumps({"step": s, "start_ns": s * 10**8, "end_ns": s * 10**8 + 9 * 10**7,
                        "data_ns": data_ns})
            for s in range(step - 30, step + 1)
        ]  # fmt: skip
        layout.steps_path(run, rank).write_text("\n".join(lines) + "\n")


def test_a_thousand_ranks_fit_one_screen_with_the_slow_rank_on_top(tmp_path: Path) -> None:
    now = time.time_ns()
    _fake_run(tmp_path, 1024, slow=517, now_ns=now)
    snap = snapshot(tmp_path, now)
    assert len(snap.rows) == 1024 and not snap.ended
    console = Console(width=160, record=True)
    console.print(frame(snap, top=20))
    out = console.export_text()
    assert len(out.splitlines()) < 40
    assert "1024 of 1024 rank(s) on 128 host(s): 1024 running; steps 93–100" in out
    assert "the 20 slowest of 1024 ranks" in out
    first = next(ln for ln in out.splitlines() if ln.split()[:1] == ["517"])
    cells = first.split()
    # rank │ host │ state │ step │ behind │ steps/s │ step ms │ data ms │ late ms
    assert cells[6] == "93" and cells[8] == "7" and cells[14] == "40.0" and cells[16] == "+39.0"
    assert "1004 other ranks not shown" in out
