"""Rank 0 blocks inside a gloo all_reduce that rank 1 never joins; the test signals rank 0.

Started as two plain processes (``--rank 0|1 --store FILE``), no launcher: the test
sends SIGTERM itself while rank 0's main thread is inside the C++ collective, where
Python runs no signal handler. Rank 0's ``ProgressWatch`` (stall threshold 60 s, so
no stall evidence) must write the signal evidence from its own thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCH_FR_BUFFER_SIZE", "2000")

import torch
import torch.distributed as dist

from rankscope.profiler.faults import Faults
from rankscope.profiler.progress import ProgressWatch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    store = dist.FileStore(str(a.store), 2)
    dist.init_process_group(
        "gloo",
        store=store,
        rank=a.rank,
        world_size=2,
        timeout=__import__("datetime").timedelta(seconds=30),
    )
    t = torch.ones(4)
    dist.all_reduce(t)  # seq 1: both join
    if a.rank == 1:
        time.sleep(60)  # never joins seq 2; the test kills it
        return
    start = time.time_ns()
    watch = ProgressWatch(
        a.out, 0, 2, Faults("rank 0"), torch, start_ns=start,
        current=lambda: (0, start), stall_after_s=60.0, tick_s=0.5,
    )  # fmt: skip
    watch.start()
    print("blocking", flush=True)
    dist.all_reduce(t)  # blocks in C++ until the test's SIGTERM ends the process
    sys.exit(3)


if __name__ == "__main__":
    main()
