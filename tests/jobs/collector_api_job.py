"""The same tiny DDP job, instrumented in code with ``rankscope.Collector``.

``python collector_api_job.py RUN_DIR [--slow-rank R] [--profile 3-5]`` under
torchrun; every rank calls ``col.step()`` after its optimizer step.
``--metrics-port P`` passes ``metrics_port=P``; ``--stop-file PATH`` ends the job
at the first step after PATH exists (the ranks agree through an all_reduce).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch import nn

from rankscope import Collector


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--slow-rank", type=int, default=-1)
    parser.add_argument("--sleep-ms", type=float, default=40.0)
    parser.add_argument("--profile", default="3-5")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--step-ms", type=float, default=0.0)
    args = parser.parse_args()

    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    model: nn.Module = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 16))
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Collector(
        args.run_dir,
        profile_steps=args.profile,
        nvml_period_ms=50,
        metrics_port=args.metrics_port,
    ) as col:
        for _ in range(args.steps):
            if args.stop_file:
                stop = torch.tensor([1 if os.path.exists(args.stop_file) else 0])
                if distributed:
                    dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                if stop.item():
                    break
            time.sleep(args.step_ms / 1000)
            with torch.profiler.record_function("data_loading"):
                if rank == args.slow_rank:
                    time.sleep(args.sleep_ms / 1000)
                x = torch.randn(32, 64)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            col.step()
    if distributed:
        # Tear down together: a rank that destroys its gloo group while the other
        # still sends can abort at exit (\"terminate called without an active exception\").
        dist.barrier()
        dist.destroy_process_group()
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main()
