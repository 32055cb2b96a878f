"""What the collector's log of gloo's sends and receives costs (``rankscope.profiler.p2p``).

The worst case: two ranks ping-pong a 16-float tensor with blocking ``send``/``recv``
(3,000 round trips, the best of 5 blocks), so every operation is the log's
overhead and almost nothing else. ``off``: no log; ``on``: the log installed as
``rankscope run`` installs it (its rows drained between blocks, as the recorder
thread does). Configurations alternate, ``--repeat`` times each, in one session;
the median per operation is printed in microseconds. A third job (``own``: ``on``
with a timer around the log's methods, which adds its own cost) gives the log's
own time per call and per wait on the training thread.

    python benchmarks/bench_p2p.py            # ~1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROUND_TRIPS = 3000


def worker(mode: str) -> None:
    sys.path.insert(0, str(SRC))  # rankscope, uninstalled
    import torch
    import torch.distributed as dist

    log = None
    own = {"started": 0.0, "waited": 0.0}
    if mode in ("on", "own"):
        from rankscope.profiler import p2p

        log = p2p.install(torch)
        assert log is not None
    if log is not None and mode == "own":
        for name in own:
            method = getattr(log, name)

            def timed(*a: object, _m: object = method, _n: str = name) -> None:
                t0 = time.perf_counter()
                _m(*a)  # type: ignore[operator]
                own[_n] += time.perf_counter() - t0

            setattr(log, name, timed)
    dist.init_process_group("gloo")
    rank, t = dist.get_rank(), torch.ones(16)

    def block() -> None:
        for _ in range(ROUND_TRIPS):
            if rank == 0:
                dist.send(t, 1)
                dist.recv(t, 1)
            else:
                dist.recv(t, 0)
                dist.send(t, 0)

    block()
    best = float("inf")
    for _ in range(5):
        dist.barrier()
        own = dict.fromkeys(own, 0.0)
        t0 = time.perf_counter()
        block()
        best = min(best, time.perf_counter() - t0)
        if log is not None:
            log.drain()
    if rank == 0:
        ops = 2 * ROUND_TRIPS
        print(
            f"RESULT us_per_op={best / ops * 1e6:.3f} started_us={own['started'] / ops * 1e6:.3f}"
            f" waited_us={own['waited'] / ops * 1e6:.3f}",
            flush=True,
        )
    dist.destroy_process_group()


def run(mode: str) -> dict[str, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [__file__, "--worker", mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    m = re.search(r"RESULT (.*)", out.stdout)
    if m is None:
        sys.exit(f"bench_p2p: the {mode} job gave no result: {out.stderr[-2000:]}")
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker", choices=("off", "on", "own"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker)
        return
    got: dict[str, list[dict[str, float]]] = {"off": [], "on": [], "own": []}
    for i in range(args.repeat):
        for mode in ("off", "on", "own"):
            got[mode].append(run(mode))
            print(f"  {i + 1}/{args.repeat} {mode}: {got[mode][-1]['us_per_op']:.1f} us/op")
    off = statistics.median(r["us_per_op"] for r in got["off"])
    on = statistics.median(r["us_per_op"] for r in got["on"])
    started = statistics.median(r["started_us"] for r in got["own"])
    waited = statistics.median(r["waited_us"] for r in got["own"])
    print("| config | us per send or receive (median) |\n|---|---|")
    print(f"| off | {off:.1f} |\n| on | {on:.1f} ({(on / off - 1) * 100:+.0f}%) |")
    print(
        f"the log's own time on the training thread: {started:.2f} us a call,"
        f" {waited:.2f} us a wait"
    )


if __name__ == "__main__":
    main()
