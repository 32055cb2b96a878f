"""A 4-rank 2x2 mesh on CPU (gloo): tensor-parallel pairs and data-parallel pairs.

It never imports rankscope; run it under ``rankscope run``::

    python -m torch.distributed.run --standalone --nproc-per-node 4 groups_job.py --slow-pair 1

Tensor-parallel groups ``tp``: ranks {0, 1} and {2, 3}; data-parallel groups ``dp``:
{0, 2} and {1, 3}. Every step: forward, an all-reduce of the activations in the
rank's tp pair, backward, an all-reduce of the gradients in its dp pair, optimizer
step. Both ranks of tp pair ``--slow-pair`` sleep ``--ms`` before each step's
forward: the pair is even within itself and holds back both dp groups.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slow-pair", type=int, default=-1)
    p.add_argument("--ms", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tp_groups = [dist.new_group(r, group_desc="tp") for r in ([0, 1], [2, 3])]
    dp_groups = [dist.new_group(r, group_desc="dp") for r in ([0, 2], [1, 3])]
    pair = rank // 2
    tp, dp = tp_groups[pair], dp_groups[rank % 2]
    model = nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 64)
    for _ in range(args.steps):
        if pair == args.slow_pair:
            time.sleep(args.ms / 1000)
        h = model(x)
        dist.all_reduce(h.detach(), group=tp)
        h.square().mean().backward()
        for param in model.parameters():
            assert param.grad is not None
            dist.all_reduce(param.grad, group=dp)
        opt.step()
        opt.zero_grad()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
