"""Cold ``parse_trace`` on one large trace: MB of JSON per CPU second and peak RSS, before/after.

Each measurement is a fresh subprocess (``resource.getrusage(RUSAGE_SELF)``
there gives its peak RSS) that imports rankscope from a source tree: this
checkout's ``src`` and, with ``--old-src``, an older one (make it with
``git worktree add /tmp/old <commit>``, then pass ``/tmp/old/src``).
Repetitions are interleaved and medians reported, as the machine is shared.
The headline figure is per core: MB of JSON over the process's CPU seconds
(``time.process_time``, all threads) for decompression + decode + column build,
which a busy shared machine disturbs far less than wall time.

    python benchmarks/make_big_trace.py /tmp/big/rank0.pt.trace.json.gz --mb 1000
    python benchmarks/bench_big_trace.py /tmp/big/rank0.pt.trace.json.gz --old-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from rankscope.dashboard.ingest.kineto import parse_trace
from rankscope.dashboard.ingest.run import json_size
path = Path(sys.argv[1])
start, cpu = time.perf_counter(), time.process_time()
trace = parse_trace(path)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"s": elapsed, "cpu": cpu, "mb": json_size(path) / 1e6, "rss": rss,
                  "rows": len(trace.gpu) + len(trace.cpu)}))
"""


def measure(src: Path, trace: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(trace)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace", type=Path)
    p.add_argument("--old-src", type=Path, help="src/ of an older checkout, measured alongside")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    trees = {"after": REPO / "src"}
    if args.old_src:
        trees = {"before": args.old_src, **trees}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for _ in range(args.repeat):
        for label, src in trees.items():
            runs[label].append(measure(src, args.trace))
    for label, rs in runs.items():
        secs = statistics.median(r["s"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        mb = rs[0]["mb"]
        rss = statistics.median(r["rss"] for r in rs) / 2**30
        print(
            f"{label:>6}: {mb:.0f} MB JSON in {cpu:.2f} CPU s = {mb / cpu:.0f} MB/s per core"
            f" ({secs:.2f} s wall), peak RSS {rss:.2f} GiB, {rs[0]['rows']:.0f} rows"
            f" (median of {len(rs)})"
        )
    if "before" in runs:
        before = statistics.median(r["cpu"] for r in runs["before"])
        after = statistics.median(r["cpu"] for r in runs["after"])
        print(f"speed-up per core: {before / after:.2f}x")


if __name__ == "__main__":
    main()
