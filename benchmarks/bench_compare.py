"""Scaling of ``rankscope compare BASE NEW`` on N-rank runs, N = 8 ... 1,024.

Two bases, each a BASE and a NEW run of N ranks:

- trace: ``make_runs.py`` runs of the real H200 traces (about 15 MB of JSON per
  rank); BASE has its planted data-loading straggler at ``default_straggler(N)``
  (N/2+1), NEW at rank 1. The comparison should say BASE's straggler is gone and
  rank 1's appeared.
- light: runs with only the always-on step timer (``rank{R}.steps.jsonl`` in the
  collector's format, with ``run.json`` and ``rank{R}.meta.json``), ``--steps``
  steps per rank of a synchronous job (each step as long as its slowest rank's
  data + compute, plus an all-reduce), the same seeded step times on both sides;
  NEW's rank 7 waits 20 ms more for data every step, and so every rank's step is
  longer. The verdict should be "slower", its origin rank 7's data_loading.

For each it measures ``python -m rankscope compare BASE NEW --format json`` in a
child process (wall, CPU, peak RSS of the command and its workers, like
``bench_scale.py``): cold (an empty ``RANKSCOPE_CACHE_DIR``: both runs parsed)
and warm (the same cache again, median of ``--repeat``), and prints what the
comparison said. Runs are written under ``--runs-dir`` (default
``benchmarks/results/compare-runs``, ignored by git) and reused.

    .venv/bin/python benchmarks/bench_compare.py --ranks 8 128 1024 --repeat 3 \\
        [--basis trace light] [--json benchmarks/results/compare.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import precompile
from bench_scale import measure
from make_runs import default_straggler, make_run

REPO = Path(__file__).resolve().parents[1]
NEW_STRAGGLER = 1  # NEW's planted straggler on the trace basis
SLOW_RANK = 7  # NEW's slow data loader on the light basis
SLOW_DATA_NS = 20_000_000
START_NS = 1_800_000_000_000_000_000
RANKS_PER_NODE = 8


def compare_cmd(base: Path, new: Path) -> list[str]:
    return [sys.executable, "-m", "rankscope", "compare", str(base), str(new), "--format", "json"]


def ensure_trace_run(path: Path, n: int, straggler: int) -> Path:
    """A make_runs run of N ranks with its straggler at ``straggler`` (reused when there)."""
    marker = path / "planted.txt"
    if marker.exists():
        made = json.loads(marker.read_text())
        if (made["world_size"], made["planted_straggler"]) == (n, straggler):
            return path
    make_run(path, n, straggler)
    return path


def light_step_arrays(n: int, steps: int, seed: int, slow: bool) -> dict[str, np.ndarray]:
    """Per rank and step (ns, int64): step durations, data waits, CPU and run-queue times.

    A synchronous data-parallel job: a rank's step is its data wait and compute, then
    an all-reduce every rank leaves together, so every step lasts as long as its
    slowest rank's data + compute, plus the all-reduce. ``slow`` adds 20 ms of data
    wait to rank 7 every step; the random draws are the same either way.
    """
    rng = np.random.default_rng(seed)
    data = rng.gamma(4.0, 0.5e6, (n, steps))  # ~2 ms of DataLoader wait
    compute = 30e6 * rng.lognormal(0.0, 0.04, (n, steps))  # ~30 ms forward/backward
    allreduce = 5e6 * rng.lognormal(0.0, 0.1, steps)
    runq = rng.exponential(0.05e6, (n, steps))  # a little wait for a CPU
    if slow:
        data[SLOW_RANK] += SLOW_DATA_NS  # a sleep: no CPU time
    step = (data + compute).max(axis=0) + allreduce
    cpu = 0.1 * data + 0.8 * compute  # the data wait blocks; compute mostly launches
    return {
        "step": step.astype(np.int64),
        "data": data.astype(np.int64),
        "cpu": cpu.astype(np.int64),
        "runq": runq.astype(np.int64),
    }


def write_light_run(path: Path, n: int, steps: int, slow: bool, seed: int = 21) -> Path:
    """A run directory with only the step timer's files, as ``rankscope run --profile off``
    leaves them (less telemetry and the collective log), reused when already there."""
    marker = path.with_name(path.name + ".made.json")  # a .json in the run is read as a trace
    made = {"world_size": n, "steps": steps, "slow": slow, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == made:
        return path
    path.mkdir(parents=True, exist_ok=True)
    run_id = f"bench-compare-{n}-{'new' if slow else 'base'}"
    a = light_step_arrays(n, steps, seed, slow)
    ends = START_NS + np.cumsum(a["step"])  # every rank's steps begin and end together
    starts = ends - a["step"]
    end_ns = int(ends[-1])
    run = {
        "schema": "rankscope.run/1",
        "run_id": run_id,
        "attempt": 0,
        "world_size": n,
        "start_ns": START_NS,
        "command": ["python", "train.py"],
        "config": {"profile": {"spec": "off"}, "steps_source": "optimizer", "data_timing": True},
        "exit_code": 0,
        "end_ns": end_ns,
    }
    (path / "run.json").write_text(json.dumps(run, indent=1))
    for r in range(n):
        meta = {
            "schema": "rankscope.rank/1",
            "rank": r,
            "run_id": run_id,
            "attempt": 0,
            "local_rank": r % RANKS_PER_NODE,
            "world_size": n,
            "host": f"node{r // RANKS_PER_NODE}",
            "node_rank": r // RANKS_PER_NODE,
            "placement_source": "torchrun",
            "device_name": "cpu",
            "start_ns": START_NS,
            "clock_offset_ns": 0,
            "steps_source": "optimizer",
            "profile": {"spec": "off"},
            "windows": [],
            "end_ns": end_ns,
            "steps_recorded": steps,
        }
        (path / f"rank{r}.meta.json").write_text(json.dumps(meta, indent=1))
        head = json.dumps({"schema": "rankscope.steps/1", "rank": r, "run_id": run_id})
        rows = zip(
            starts.tolist(),
            ends.tolist(),
            a["data"][r].tolist(),
            a["cpu"][r].tolist(),
            a["runq"][r].tolist(),
            strict=True,
        )
        lines = [
            f'{{"step":{i},"start_ns":{s},"end_ns":{e},"data_ns":{d},"cpu_ns":{c},"runq_ns":{q}}}'
            for i, (s, e, d, c, q) in enumerate(rows)
        ]
        (path / f"rank{r}.steps.jsonl").write_text(head + "\n" + "\n".join(lines) + "\n")
    marker.write_text(json.dumps(made))
    return path


def said(out: bytes) -> dict[str, Any]:
    """What the comparison said: verdict, headline, origin, straggler changes."""
    c = json.loads(out)
    return {
        "basis": c["basis"],
        "verdict": c["verdict"],
        "headline": c["headline"],
        "origin": c["origin"],
        "stragglers": [
            {"rank": s["rank"], "kind": s["kind"], "sentence": s["sentence"]}
            for s in c["stragglers"]
        ],
    }


def as_expected(basis: str, n: int, answer: dict[str, Any]) -> bool:
    if basis == "trace":
        kinds = {s["rank"]: s["kind"] for s in answer["stragglers"]}
        return kinds == {default_straggler(n): "gone", NEW_STRAGGLER: "appeared"}
    origin = answer["origin"] or {}
    return (
        answer["verdict"] == "slower"
        and origin.get("rank") == SLOW_RANK
        and origin.get("component") == "data_loading"
    )


def bench(base: Path, new: Path, cold: int, repeat: int) -> dict[str, Any]:
    """Cold (empty cache, median of ``cold``) and warm (median of ``repeat``) compare."""
    cold_s, cold_cpu, warm_s, warm_cpu, rss = [], [], [], [], []
    out = b""
    for _ in range(max(cold, 1)):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "RANKSCOPE_CACHE_DIR": cache}
            r = measure(compare_cmd(base, new), env)
            cold_s.append(float(r["wall_s"]))
            cold_cpu.append(float(r["cpu_s"]))
            rss.append(float(r["rss_mb"]))
            out = r["out"]
            for _ in range(repeat):  # the last cold run's cache
                r = measure(compare_cmd(base, new), env)
                warm_s.append(float(r["wall_s"]))
                warm_cpu.append(float(r["cpu_s"]))
                rss.append(float(r["rss_mb"]))
                if r["out"] != out:
                    print(f"  note: a warm answer differs from the cold one ({base.name})")
    return {
        "cold_s": round(statistics.median(cold_s), 2),
        "cold_cpu_s": round(statistics.median(cold_cpu), 2),
        "warm_s": round(statistics.median(warm_s), 2) if warm_s else None,
        "warm_cpu_s": round(statistics.median(warm_cpu), 2) if warm_cpu else None,
        "peak_rss_mb": round(max(rss)),
        "answer": said(out),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 128, 1024])
    parser.add_argument(
        "--basis", nargs="+", choices=["trace", "light"], default=["trace", "light"]
    )
    parser.add_argument("--repeat", type=int, default=3, help="warm repetitions (median)")
    parser.add_argument("--cold", type=int, default=1, help="cold repetitions (median)")
    parser.add_argument("--steps", type=int, default=1000, help="steps per rank, light basis")
    parser.add_argument(
        "--runs-dir", type=Path, default=REPO / "benchmarks" / "results" / "compare-runs"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if "light" in args.basis and min(args.ranks) <= SLOW_RANK:
        parser.error(f"the light basis slows rank {SLOW_RANK}: --ranks must be over {SLOW_RANK}")

    precompile()
    results = []
    print(
        f"{'basis':>6} {'ranks':>6} {'cold s':>8} {'cold CPU s':>10} {'warm s':>8}"
        f" {'warm CPU s':>10} {'peak RSS MB':>11} {'expected':>8}",
        flush=True,
    )
    for n in args.ranks:
        for basis in args.basis:
            root = args.runs_dir / basis / f"ranks{n}"
            if basis == "trace":
                base = ensure_trace_run(root / "base", n, default_straggler(n))
                new = ensure_trace_run(root / "new", n, NEW_STRAGGLER)
            else:
                base = write_light_run(root / "base", n, args.steps, slow=False)
                new = write_light_run(root / "new", n, args.steps, slow=True)
            row: dict[str, Any] = {"basis": basis, "ranks": n}
            row.update(bench(base, new, args.cold, args.repeat))
            row["expected"] = as_expected(basis, n, row["answer"])
            results.append(row)
            print(
                f"{basis:>6} {n:>6} {row['cold_s']:>8.2f} {row['cold_cpu_s']:>10.2f}"
                f" {row['warm_s'] or 0:>8.2f} {row['warm_cpu_s'] or 0:>10.2f}"
                f" {row['peak_rss_mb']:>11} {'yes' if row['expected'] else 'NO':>8}",
                flush=True,
            )
            answer = row["answer"]
            print(f"         {answer['headline']}")
            print(f"         origin: {answer['origin']}")
            for s in answer["stragglers"]:
                print(f"         straggler rank {s['rank']} {s['kind']}: {s['sentence']}")
            if args.json:  # after every row: a long run that is stopped keeps its figures
                figures = {"repeat": args.repeat, "steps": args.steps, "results": results}
                Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0 if all(r["expected"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
