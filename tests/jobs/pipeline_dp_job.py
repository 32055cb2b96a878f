"""Data parallel x pipeline parallel on 4 ranks (gloo, CPU), knowing nothing about rankscope.

Two pipelines of two stages: ranks 0 -> 1 and 2 -> 3, blocking ``send``/``recv``
(GPipe: ``--micro`` micro-batches forward, then backward). Each stage all-reduces
its gradients with the same stage of the other pipeline over its own data-parallel
group (``new_group([0, 2])``, ``new_group([1, 3])``); there is no collective on
the default group in a step. Rank ``--slow-rank`` computes ``--factor`` x as long:
the stage before it in its pipeline then waits for it, and arrives last at its own
data-parallel all-reduce.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--ms", type=float, default=4.0)
    p.add_argument("--slow-rank", type=int, default=-1)
    p.add_argument("--factor", type=float, default=2.0)
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    stage = rank % 2
    groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    dp = groups[stage]
    torch.set_num_threads(1)
    layer = nn.Linear(64, 64)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    ms = args.ms * (args.factor if rank == args.slow_rank else 1.0)

    def compute(x: torch.Tensor, ms: float) -> torch.Tensor:
        end = time.perf_counter() + ms / 1000
        y = layer(x)
        while time.perf_counter() < end:
            y = layer(y).tanh()
        return y

    for _ in range(args.steps):
        for _ in range(args.micro):
            x = torch.zeros(16, 64)
            if stage == 1:
                dist.recv(x, rank - 1)
            y = compute(x, ms)
            if stage == 0:
                dist.send(y.detach().contiguous(), rank + 1)
        for _ in range(args.micro):
            g = torch.zeros(16, 64)
            if stage == 0:
                dist.recv(g, rank + 1)
            compute(g, 2 * ms).sum().backward()
            if stage == 1:
                dist.send(torch.zeros(16, 64), rank - 1)
        for param in layer.parameters():
            assert param.grad is not None
            dist.all_reduce(param.grad, group=dp)
        opt.step()
        opt.zero_grad()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
