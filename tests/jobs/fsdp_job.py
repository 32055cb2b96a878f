"""A small FSDP2 job on CPU (gloo): ``fully_shard`` per block, rank R with 2x the batch.

It never imports rankscope; run it under ``rankscope run``::

    python -m torch.distributed.run --standalone --nproc-per-node 2 fsdp_job.py --rank 1

Every step: forward (an all_gather per block), backward (an all_gather and a
reduce_scatter per block), optimizer step: many collectives per step, where the
rank with the larger batch arrives last at most of them and the other waits in each.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

FEATURES = 384


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, default=1)  # the rank with --factor times the batch
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--batch", type=int, default=512)
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(
        *[
            nn.Sequential(nn.Linear(FEATURES, FEATURES), nn.Tanh(), nn.Linear(FEATURES, FEATURES))
            for _ in range(args.blocks)
        ]
    )
    for block in model:
        fully_shard(block)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = args.batch * (args.factor if rank == args.rank else 1)
    x = torch.randn(batch, FEATURES)
    for _ in range(args.steps):
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
