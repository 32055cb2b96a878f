"""Small hand-built inputs for the reliability tests: a two-rank collector run directory.

``make_run(folder)`` writes what the collector writes (``run.json``, per-rank
manifests, step and telemetry JSONL, one gzipped Kineto window per rank) with
tiny traces of three steps, so each report over it takes well under a second.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

BASE_NS = 1_700_000_000_000_000_000
STEP_US = 10_000.0


def kineto_trace(rank: int, world_size: int, steps: int = 3) -> dict[str, Any]:
    """A CPU-only (gloo) trace: per step a ProfilerStep range, a matmul and an all_reduce."""
    events: list[dict[str, Any]] = []
    for i in range(steps):
        t0 = 1000.0 + i * STEP_US
        events += [
            {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{i}", "ts": t0,
             "dur": STEP_US * 0.95, "pid": 1, "tid": 1},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": t0 + 10,
             "dur": STEP_US * (0.5 + 0.1 * rank), "pid": 1, "tid": 1},
            {"ph": "X", "cat": "cpu_op", "name": "gloo:all_reduce",
             "ts": t0 + STEP_US * 0.7, "dur": STEP_US * 0.2, "pid": 1, "tid": 1,
             "args": {"Process Group Name": "0", "Seq": i}},
        ]  # fmt: skip
    return {
        "schemaVersion": 1,
        "distributedInfo": {"backend": "gloo", "rank": rank, "world_size": world_size},
        "baseTimeNanoseconds": BASE_NS,
        "traceEvents": events,
    }


def trace_name(rank: int) -> str:
    return f"rank{rank}.step0-2.pt.trace.json.gz"


def make_run(folder: Path, world_size: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(
        json.dumps({"schema": "rankscope.run/1", "world_size": world_size, "start_ns": BASE_NS})
    )
    for r in range(world_size):
        meta = {
            "schema": "rankscope.rank/1",
            "rank": r,
            "world_size": world_size,
            "windows": [{"first_step": 0, "last_step": 2, "file": trace_name(r)}],
        }
        (folder / f"rank{r}.meta.json").write_text(json.dumps(meta))
        (folder / trace_name(r)).write_bytes(
            gzip.compress(json.dumps(kineto_trace(r, world_size)).encode())
        )
        steps = [json.dumps({"schema": "rankscope.steps/1", "rank": r})]
        tel = [json.dumps({"schema": "rankscope.telemetry/1", "rank": r, "source": "host"})]
        for i in range(3):
            start = BASE_NS + int((1000.0 + i * STEP_US) * 1000)
            steps.append(json.dumps({"step": i, "start_ns": start, "end_ns": start + 9_500_000}))
            tel.append(json.dumps({"ts_ns": start, "source": "host", "cpu_util_pct": 50.0}))
        (folder / f"rank{r}.steps.jsonl").write_text("\n".join(steps) + "\n")
        (folder / f"rank{r}.telemetry.jsonl").write_text("\n".join(tel) + "\n")
    return folder
