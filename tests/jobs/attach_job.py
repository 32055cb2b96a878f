"""A DDP job on CPU (gloo) that runs until told to stop, for attach tests.

``--stop-file PATH``: the job trains ~``--step-ms`` ms steps until PATH exists
(or ``--max-steps``). Ranks agree on the last step through an all_reduce of the
flag, so no rank leaves the others waiting in a collective. Knows nothing about
rankscope: the tests run it under ``rankscope run --profile off``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--step-ms", type=float, default=15.0)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = 0
    while steps < args.max_steps:
        with torch.profiler.record_function("data_loading"):
            time.sleep(args.step_ms / 1000)
            x = torch.randn(16, 64)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        stop = torch.tensor([1 if os.path.exists(args.stop_file) else 0])
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item():
            break
    # Tear down together: a rank that destroys its gloo group while the other
    # still sends can abort at exit (\"terminate called without an active exception\").
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} trained {steps} steps", flush=True)


if __name__ == "__main__":
    main()
