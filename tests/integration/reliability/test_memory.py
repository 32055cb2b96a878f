"""Inputs built to exhaust memory stay within a 1.5 GB address space.

Each case runs the real CLI in a subprocess whose address space is capped with
``RLIMIT_AS``: a gzip bomb (2 MB that expands to 2 GiB), a run manifest and a
trace claiming a world size of 10^12, and heartbeats claiming one for
``attach --status``. Without the bounds these take gigabytes within seconds;
with them each ends with its documented exit code, one line, no traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import rankscope_cmd
from runs import kineto_trace, make_run, trace_name

AS_LIMIT = 1536 << 20  # 1.5 GiB
TIMEOUT_S = 20


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def run_capped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rankscope_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        preexec_fn=_cap_memory,
        env={**os.environ, **(env or {})},
    )


def gzip_bomb(path: Path, gib: int = 2) -> None:
    """``gib`` GiB of spaces in about 2 MB: one 64 MiB gzip member, repeated."""
    member = gzip.compress(b" " * (64 << 20), compresslevel=9)
    with open(path, "wb") as f:
        for _ in range(gib * 16):
            f.write(member)


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux-specific")


def test_gzip_bomb_stops_at_the_default_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "rank0.pt.trace.json.gz"
    gzip_bomb(bomb)
    assert bomb.stat().st_size < 3 << 20
    t0 = time.monotonic()
    proc = run_capped("report", str(bomb))
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    # One error line (a slow ingest on a pipe also prints "rankscope: ingested 1/1").
    errors = [x for x in proc.stderr.splitlines() if not x.startswith("rankscope: ingested")]
    assert len(errors) == 1, proc.stderr
    assert "RANKSCOPE_MAX_TRACE_BYTES" in proc.stderr
    assert time.monotonic() - t0 < TIMEOUT_S


def test_gzip_bomb_in_a_run_leaves_the_other_ranks(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    gzip_bomb(run / trace_name(1), gib=1)
    proc = run_capped("report", str(run), env={"RANKSCOPE_MAX_TRACE_BYTES": "256M"})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "decompresses to more than" in proc.stderr


def test_huge_world_size_everywhere(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "run.json").write_text(json.dumps({"schema": "rankscope.run/1", "world_size": 10**12}))
    meta = json.loads((run / "rank0.meta.json").read_text())
    (run / "rank0.meta.json").write_text(json.dumps({**meta, "world_size": 10**12}))
    doc = kineto_trace(1, 10**12)
    (run / trace_name(1)).write_bytes(gzip.compress(json.dumps(doc).encode()))
    proc = run_capped("report", str(run), "--format", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run"]["world_size"] == 2


def test_attach_status_with_a_forged_world_size(tmp_path: Path) -> None:
    control = tmp_path / "run" / "control"
    control.mkdir(parents=True)
    now = time.time_ns()
    for rank, world in ((0, 2), (1, 10**12)):
        hb = {
            "schema": "rankscope.heartbeat/1",
            "rank": rank,
            "world_size": world,
            "host": "elsewhere",
            "pid": 1,
            "start_ns": now,
            "ts_ns": now,
            "step": 5,
            "steps_per_s": 1.0,
            "state": "running",
        }
        (control / f"rank{rank}.heartbeat.json").write_text(json.dumps(hb))
    proc = run_capped("attach", str(tmp_path / "run"), "--status")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "rank1.heartbeat.json" in proc.stdout and "world_size" in proc.stdout
