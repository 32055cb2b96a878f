"""Memory of ``rankscope report`` on large light-layer logs: peak RSS against file size.

Writes a 2-rank run (``run.json``, rank manifests, a step log and a collective log per
rank; no trace window) whose collective logs hold ``--mb`` MB each (100 all_reduce
records a step, ~200 bytes a record, the collector's format), then measures
``rankscope report RUN --format json`` in a child process (``bench_scale.measure``:
peak RSS of that command alone) and checks the verdict names the planted straggler
(rank 1 issues each step's collectives 6 ms late). The run is written under
``--runs-dir`` and reused.

    .venv/bin/python benchmarks/bench_light_memory.py --mb 383 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import rankscope_cmd
from bench_scale import measure

REPO = Path(__file__).resolve().parents[1]
T0 = 1_790_000_000_000_000_000
STEP_NS = 20_000_000
PER_STEP = 100  # collectives a step
RECORD = (
    '{{"seq":{seq},"pg":"0","pg_desc":"default_pg","name":"all_reduce","p2p":false,'
    '"bytes":4194304,"enqueue_ns":{t},"start_ns":null,"end_ns":null,"duration_ms":null,'
    '"state":"completed"}}\n'
)


def make_run(run: Path, mb: float) -> int:
    """A 2-rank run with ``mb`` MB of collective log per rank; returns its step count."""
    per_step_bytes = len(RECORD.format(seq=10**6, t=T0)) * PER_STEP
    steps = max(10, int(mb * 1e6 / per_step_bytes))
    if (run / "run.json").exists():
        return steps
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps({"schema": "rankscope.run/1", "world_size": 2}))
    for rank in (0, 1):
        meta = {"schema": "rankscope.rank/1", "rank": rank, "world_size": 2}
        (run / f"rank{rank}.meta.json").write_text(json.dumps(meta))
        late = 6_000_000 * rank  # rank 1 reaches each step's collectives 6 ms later
        with open(run / f"rank{rank}.steps.jsonl", "w") as f:
            f.write(json.dumps({"schema": "rankscope.steps/1", "rank": rank}) + "\n")
            for s in range(steps):
                start = T0 + s * STEP_NS
                f.write(f'{{"step":{s},"start_ns":{start},"end_ns":{start + STEP_NS - 1}}}\n')
        with open(run / f"rank{rank}.collectives.jsonl", "w") as f:
            seq = 1
            for s in range(steps):
                base = T0 + s * STEP_NS + 10_000_000 + late
                f.write(
                    "".join(
                        RECORD.format(seq=seq + i, t=base + i * 50_000) for i in range(PER_STEP)
                    )
                )
                seq += PER_STEP
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, nargs="+", default=[383.0])
    p.add_argument("--runs-dir", type=Path, default=REPO / "benchmarks" / "results" / "light")
    args = p.parse_args()
    head = f"{'MB/rank':>8} {'files MB':>9} {'peak RSS MB':>12} {'x files':>8} {'wall s':>7}"
    print(head + "  verdict")
    for mb in args.mb:
        run = args.runs_dir / f"mb{mb:g}"
        make_run(run, mb)
        files = sum(f.stat().st_size for f in run.iterdir() if f.is_file()) / 1e6
        got = measure(rankscope_cmd(run), timeout=3600)
        report = json.loads(got["out"]) if got.get("out") else {}
        verdict = (report.get("verdict") or {}).get("headline", got.get("stderr", "")[-200:])
        print(
            f"{mb:>8g} {files:>9.0f} {got['rss_mb']:>12.0f} {got['rss_mb'] / files:>8.2f}"
            f" {got['wall_s']:>7.1f}  {verdict[:90]}"
        )


if __name__ == "__main__":
    main()
