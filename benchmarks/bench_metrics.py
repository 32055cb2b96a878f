"""What ``rankscope metrics`` costs per scrape, on synthetic runs of N ranks (8 ... 1,024).

For each N a run directory is written with the collector's record Structs: every
rank has ``--steps`` steps of ~100 ms, one all_reduce a step, a telemetry sample a
step and a heartbeat; rank N//2+1 waits 30 ms on its DataLoader every step (the
planted straggler). Then, in a child process of its own (so its peak RSS is the
exporter's alone):

- cold: the first refresh (every file read from its tail) plus the verdict;
- refresh: ``--rounds`` times, each rank appends ``--append`` steps (with their
  collectives and samples; not timed) and the exporter refreshes, the straggler
  verdict cached (what most scrapes cost: ``--verdict-every`` is 5 s) and then
  recomputed (what a scrape costs every 5 s); CPU seconds (``process_time``) and
  wall, median over rounds;
- scrape: the text exposition (``generate_latest``) of a refreshed snapshot, its
  size and time; and whether the verdict names the planted rank;
- peak RSS of the child, and its RSS after imports (the difference is the
  exporter's state).

    .venv/bin/python benchmarks/bench_metrics.py --ranks 8 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # rankscope, uninstalled

MS = 1_000_000
T0 = 1_735_732_800 * 1_000_000_000
STEP_NS = 100 * MS


def straggler_of(n_ranks: int) -> int:
    return n_ranks // 2 + 1 if n_ranks > 2 else n_ranks - 1


def _rows(rank: int, n_ranks: int, first: int, count: int) -> tuple[bytes, bytes, bytes]:
    from rankscope.profiler import records

    slow = rank == straggler_of(n_ranks)
    steps, colls, tel = [], [], []
    for k in range(first, first + count):
        start = T0 + k * STEP_NS
        data = 30 * MS if slow else 1 * MS
        # the straggler issues its all_reduce 30 ms late; everyone ends the step together
        enqueue = start + 60 * MS + (data - 1 * MS) + (rank % 7) * 10_000
        steps.append(records.StepRecord(k, start, start + STEP_NS, data_ns=data))
        colls.append(
            records.CollectiveRecord(
                k, "0", "default_pg", "all_reduce", False, 4 << 20, enqueue,
                None, None, None, "completed",
            )
        )  # fmt: skip
        tel.append(
            records.TelemetrySample(
                start, source="nvml", gpu_util_pct=90, mem_used_b=40 << 30,
                mem_total_b=141 << 30, throttle_reasons=0, power_mw=500_000, temp_c=50,
                sm_clock_mhz=1980,
            )
        )  # fmt: skip
    enc = records.encode_line
    return (
        b"".join(map(enc, steps)),
        b"".join(map(enc, colls)),
        b"".join(map(enc, tel)),
    )


def write_run(run: Path, n_ranks: int, steps: int) -> None:
    from rankscope.profiler import records, rundir

    run.mkdir(parents=True, exist_ok=True)
    rundir.write_json_atomic(
        run / rundir.RUN_MANIFEST, {"schema": rundir.RUN_SCHEMA, "world_size": n_ranks}
    )
    for rank in range(n_ranks):
        meta = records.RankMeta(rank, world_size=n_ranks, host=f"node{rank // 8}")
        rundir.write_json_atomic(
            rundir.rank_meta_path(run, rank),
            {**records.as_dict(meta), "device_name": "NVIDIA H200", "clock_offset_ns": 0},
            fsync=False,
        )
        s, c, t = _rows(rank, n_ranks, 0, steps)
        rundir.steps_path(run, rank).write_bytes(
            records.encode_line(records.Header(rundir.STEPS_SCHEMA, rank)) + s
        )
        rundir.collectives_path(run, rank).write_bytes(c)
        rundir.telemetry_path(run, rank).write_bytes(t)
        beat = records.Heartbeat(rank, time.time_ns(), host=f"node{rank // 8}", state="running")
        rundir.write_json_atomic(rundir.heartbeat_path(run, rank), beat, fsync=False)


def append(run: Path, n_ranks: int, first: int, count: int) -> None:
    from rankscope.profiler import rundir

    for rank in range(n_ranks):
        s, c, t = _rows(rank, n_ranks, first, count)
        for path, data in (
            (rundir.steps_path(run, rank), s),
            (rundir.collectives_path(run, rank), c),
            (rundir.telemetry_path(run, rank), t),
        ):
            with path.open("ab") as f:
                f.write(data)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(run: Path, n_ranks: int, steps: int, rounds: int, count: int) -> dict[str, Any]:
    """In the child: the figures of one N (module docstring)."""
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from rankscope.dashboard.analysis import wholerun  # noqa: F401  (import cost apart)
    from rankscope.dashboard.export import prometheus
    from rankscope.dashboard.export.live import RunTail

    base_rss = _rss_mb()
    tail = RunTail(run, verdict_every_s=3600.0)
    c0, w0 = time.process_time(), time.perf_counter()
    snap = tail.refresh()
    cold = (time.process_time() - c0, time.perf_counter() - w0)
    cached: list[tuple[float, float]] = []
    fresh: list[tuple[float, float]] = []
    first = steps
    for _ in range(rounds):
        append(run, n_ranks, first, count)
        first += count
        c0, w0 = time.process_time(), time.perf_counter()
        tail.refresh()
        cached.append((time.process_time() - c0, time.perf_counter() - w0))
        tail._verdict_at = None  # force the verdict, as every --verdict-every seconds
        c0, w0 = time.process_time(), time.perf_counter()
        snap = tail.refresh()
        fresh.append((time.process_time() - c0, time.perf_counter() - w0))
    collector = prometheus.LiveCollector(tail, "bench", min_refresh_s=3600.0)
    collector._snapshot, collector._at = snap, time.monotonic()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    w0 = time.perf_counter()
    text = generate_latest(registry)
    scrape_s = time.perf_counter() - w0
    named = {r.rank for r in snap.ranks if r.straggler}
    return {
        "ranks": n_ranks,
        "cold_cpu_s": cold[0],
        "cold_wall_s": cold[1],
        "refresh_cpu_s": statistics.median(c for c, _ in cached),
        "refresh_wall_s": statistics.median(w for _, w in cached),
        "refresh_verdict_cpu_s": statistics.median(c for c, _ in fresh),
        "refresh_verdict_wall_s": statistics.median(w for _, w in fresh),
        "scrape_bytes": len(text),
        "scrape_s": scrape_s,
        "rss_after_imports_mb": base_rss,
        "peak_rss_mb": _rss_mb(),
        "straggler_named": named == {straggler_of(n_ranks)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 1024])
    p.add_argument("--steps", type=int, default=600, help="steps per rank before measuring")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--append", type=int, default=10, help="steps each rank adds per round")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--child", nargs=2, metavar=("RUN", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run, n = Path(args.child[0]), int(args.child[1])
        print(json.dumps(measure(run, n, args.steps, args.rounds, args.append)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        for n in args.ranks:
            run = Path(tmp) / f"run{n}"
            t0 = time.perf_counter()
            write_run(run, n, args.steps)
            print(f"N={n}: run written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(run), str(n),
                 "--steps", str(args.steps), "--rounds", str(args.rounds),
                 "--append", str(args.append)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results.append(json.loads(out.stdout))
    print(
        f"{'ranks':>6} {'cold s':>8} {'refresh CPU s':>14} {'+verdict CPU s':>15}"
        f" {'scrape KB':>10} {'scrape s':>9} {'RSS MB':>8} {'peak MB':>8} straggler"
    )
    for r in results:
        print(
            f"{r['ranks']:>6} {r['cold_wall_s']:>8.3f} {r['refresh_cpu_s']:>14.4f}"
            f" {r['refresh_verdict_cpu_s']:>15.4f} {r['scrape_bytes'] / 1024:>10.0f}"
            f" {r['scrape_s']:>9.4f} {r['rss_after_imports_mb']:>8.0f} {r['peak_rss_mb']:>8.0f}"
            f" {'named' if r['straggler_named'] else 'MISSED'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
