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


@pytest.mark.parametrize("ranks", ["0-30000000", "0-99999999999", "0,5-2000000000000"])
@pytest.mark.parametrize("command", ["report", "ingest"])
def test_a_huge_rank_range_is_refused_before_any_allocation(
    tmp_path: Path, ranks: str, command: str
) -> None:
    run = make_run(tmp_path / "run")
    proc = run_capped(command, str(run), "--ranks", ranks)
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "beyond the largest world size" in proc.stderr


_MAXRSS = (
    "import resource, sys\n"
    "from rankscope.dashboard.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _report_maxrss_bytes(run: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _MAXRSS, "report", str(run), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_cap_memory,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("maxrss_kb"))
    return int(line.split()[1]) * 1024


def test_a_large_collective_log_costs_less_than_twice_its_size(tmp_path: Path) -> None:
    """A 60 MB flight-recorder log is streamed into columns: the report's peak memory
    grows by less than twice the file (lists of dicts took about 4x)."""
    small, large = make_run(tmp_path / "small"), make_run(tmp_path / "large")
    row = (
        '{{"seq":{},"pg":"0","pg_desc":"default_pg","name":"all_reduce","p2p":false,'
        '"bytes":37408,"enqueue_ns":{},"start_ns":null,"end_ns":null,"duration_ms":null,'
        '"state":"scheduled"}}\n'
    )
    log = large / "rank0.collectives.jsonl"
    with open(log, "w") as f:
        for chunk in range(0, 320_000, 10_000):
            f.write(
                "".join(
                    row.format(i, 1_700_000_000_000_000_000 + i)
                    for i in range(chunk, chunk + 10_000)
                )
            )
    size = log.stat().st_size
    assert size > 55_000_000
    growth = _report_maxrss_bytes(large) - _report_maxrss_bytes(small)
    assert growth < 2 * size, f"peak memory grew {growth >> 20} MiB for a {size >> 20} MiB log"
