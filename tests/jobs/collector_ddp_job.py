"""A tiny DDP training job on CPU (gloo) that knows nothing about rankscope.

Run it under torchrun / ``python -m torch.distributed.run`` (or plain python for
one process). ``--slow-rank R --sleep-ms N`` makes rank R sleep N ms inside
``record_function("data_loading")`` every step: a straggler caused by data
loading. ``--exit-code`` ends the job with that code after training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--slow-rank", type=int, default=-1)
    parser.add_argument("--sleep-ms", type=float, default=40.0)
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)
    model: nn.Module = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 16))
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(args.steps):
        with torch.profiler.record_function("data_loading"):
            if rank == args.slow_rank:
                time.sleep(args.sleep_ms / 1000)
            x = torch.randn(args.batch, 64)
        with torch.profiler.record_function("forward"):
            loss = model(x).square().mean()
        opt.zero_grad()
        with torch.profiler.record_function("backward"):
            loss.backward()
        with torch.profiler.record_function("optimizer_step"):
            opt.step()
    if distributed:
        # Tear down together: a rank that destroys its gloo group while the other
        # still sends can abort at exit (\"terminate called without an active exception\").
        dist.barrier()
        dist.destroy_process_group()
    print(f"rank {rank} trained {args.steps} steps", flush=True)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
