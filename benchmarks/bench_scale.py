"""Scaling: whole-process ``rankscope report`` on N-rank runs, N = 8 ... 1,024.

Each run is made by ``make_runs.py`` from the real H200 traces (about 18 MB of
JSON per rank, one planted data-loading straggler). For each N it prints:

- cold: ``rankscope report RUN --format json`` with an empty cache (parse + analyse)
- warm: the same command again, reading the Parquet cache (median of ``--repeat``)
- CPU: user + system seconds of the warm report (and its workers); on a shared
  machine this moves less than wall time
- peak RSS: the largest resident set of the report or any of its workers
- whether the planted straggler is the rank the report names
- HTA: ``TraceAnalysis(trace_dir=RUN)`` in its own venv (``--hta-python``), up to
  ``--hta-timeout`` seconds, skipped for larger N once it has timed out

Every measurement runs in a child process that reports ``getrusage(RUSAGE_CHILDREN)``,
so peak RSS and CPU belong to that one command. Runs are written under
``--runs-dir`` (default ``benchmarks/results/runs``, ignored by git) and reused.

    .venv/bin/python benchmarks/bench_scale.py --ranks 8 32 128 512 1024 \\
        [--hta-python .venv-hta/bin/python] [--json benchmarks/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import HTA_CODE, precompile, rankscope_cmd
from make_runs import default_straggler, make_run

REPO = Path(__file__).resolve().parents[1]

# Runs the command given as argv, then prints its wall time and rusage as JSON.
MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "wb"), stderr=subprocess.PIPE)
wall = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "wall_s": wall, "cpu_s": u.ru_utime + u.ru_stime,
                  "rss_mb": u.ru_maxrss / 1024, "stderr": p.stderr.decode()[-400:]}))
"""


def measure(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Wall, CPU and peak RSS of one command; its stdout is kept in ``out``."""
    with tempfile.NamedTemporaryFile(suffix=".out") as out:
        proc = subprocess.run(
            [sys.executable, "-c", MEASURE, out.name, *cmd],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-500:])
        res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        res["out"] = Path(out.name).read_bytes()
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res['rc']}): {res['stderr']}")
    return res


def named_stragglers(report_json: bytes) -> list[int]:
    return [int(s["rank"]) for s in json.loads(report_json).get("stragglers", [])]


def ensure_run(runs_dir: Path, n: int) -> tuple[Path, int]:
    path = runs_dir / f"ranks{n}"
    planted = default_straggler(n)
    marker = path / "planted.txt"
    if not marker.exists() or json.loads(marker.read_text())["world_size"] != n:
        make_run(path, n, planted)
    return path, int(json.loads(marker.read_text())["planted_straggler"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128, 512, 1024])
    parser.add_argument("--repeat", type=int, default=3, help="warm repetitions (median)")
    parser.add_argument("--cold", type=int, default=1, help="cold repetitions (median)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "benchmarks" / "results" / "runs")
    parser.add_argument(
        "--hta-python",
        default=os.environ.get("RANKSCOPE_HTA_PYTHON"),
        help="python of a venv with HTA",
    )
    parser.add_argument("--hta-timeout", type=float, default=300.0, help="seconds per HTA load")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    hta = args.hta_python
    if hta and not Path(hta).exists():
        print(f"--hta-python {hta}: not found; timing rankscope only", file=sys.stderr)
        hta = None
    precompile()
    results = []
    print(
        f"{'ranks':>6} {'cold s':>8} {'warm s':>8} {'warm CPU s':>10} {'peak RSS MB':>11}"
        f" {'straggler':>10} {'HTA s':>8}",
        flush=True,
    )
    for n in args.ranks:
        run, planted = ensure_run(args.runs_dir, n)
        cold, warm, warm_cpu, rss, named = [], [], [], [], []
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "RANKSCOPE_CACHE_DIR": cache}
            for i in range(max(args.cold, 1)):
                if i:  # every cold run starts from an empty cache
                    for p in Path(cache).iterdir():
                        subprocess.run(["rm", "-rf", str(p)], check=True)
                r = measure(rankscope_cmd(run), env)
                cold.append(float(r["wall_s"]))
                rss.append(float(r["rss_mb"]))
            for _ in range(args.repeat):
                r = measure(rankscope_cmd(run), env)
                warm.append(float(r["wall_s"]))
                warm_cpu.append(float(r["cpu_s"]))
                rss.append(float(r["rss_mb"]))
                named = named_stragglers(r["out"])
        hta_s: float | str | None = None
        hta_rss: int | None = None
        if hta:
            try:
                r = measure([hta, "-c", HTA_CODE, str(run)], timeout=args.hta_timeout)
                if r["rc"] == 0:
                    hta_s = round(float(r["wall_s"]), 2)
                    hta_rss = round(float(r["rss_mb"]))
                else:  # a failed load is no time: say how it ended
                    last = (r["stderr"].strip().splitlines() or [""])[-1][:80]
                    hta_s = f"failed after {float(r['wall_s']):.0f} s (rc {r['rc']}: {last})"
                    hta = None
            except subprocess.TimeoutExpired:
                hta_s = f">{args.hta_timeout:.0f}"
                hta = None  # larger runs take longer still
        row = {
            "ranks": n,
            "planted_straggler": planted,
            "named_stragglers": named,
            "found": named == [planted],
            "cold_s": round(statistics.median(cold), 2),
            "warm_s": round(statistics.median(warm), 2),
            "warm_cpu_s": round(statistics.median(warm_cpu), 2),
            "peak_rss_mb": round(max(rss)),
            "hta_s": hta_s,
            "hta_peak_rss_mb": hta_rss,
        }
        results.append(row)
        print(
            f"{n:>6} {row['cold_s']:>8.2f} {row['warm_s']:>8.2f} {row['warm_cpu_s']:>10.2f}"
            f" {row['peak_rss_mb']:>11} {'yes' if row['found'] else f'NO {named}':>10}"
            f" {'' if hta_s is None else hta_s:>8}",
            flush=True,
        )
    if args.json:
        figures = {"repeat": args.repeat, "results": results}
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0 if all(r["found"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
