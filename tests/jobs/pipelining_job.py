"""A pipeline-parallel job built on ``torch.distributed.pipelining`` (gloo, CPU).

It never imports rankscope; run it under ``rankscope run``::

    python -m torch.distributed.run --standalone --nproc-per-node 4 pipelining_job.py

One ``PipelineStage`` per rank, driven by PyTorch's own ``ScheduleGPipe`` or
``Schedule1F1B`` (``--schedule``) over ``--micro`` micro-batches, or
``ScheduleInterleaved1F1B`` with two virtual stages per rank (``interleaved``: rank
r holds stages r and r + world, so the last rank sends back to rank 0). Unlike
``pipeline_job.py`` the library sends with ``isend`` and waits for it later, so
a send's range spans the compute issued meanwhile. Each stage's forward computes
``--ms`` (real CPU work); stage ``--slow-stage`` ``--factor`` times as long.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)


class Block(nn.Module):
    def __init__(self, ms: float) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 64)
        self.ms = ms
        self.eye = torch.eye(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = time.perf_counter() + self.ms / 1000
        y = self.lin(x)
        while time.perf_counter() < end:
            y = torch.tanh(y @ self.eye)
        return self.lin(y)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--ms", type=float, default=5.0)
    p.add_argument("--slow-stage", type=int, default=-1)
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--schedule", choices=("gpipe", "1f1b", "interleaved"), default="gpipe")
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    torch.set_num_threads(1)
    ms = args.ms * (args.factor if rank == args.slow_stage else 1.0)
    loss = lambda out, target: (out - target).square().mean()  # noqa: E731
    if args.schedule == "interleaved":
        # two virtual stages per rank: rank r holds stages r and r + world (a loop)
        blocks = [Block(ms), Block(ms)]
        stages = [
            PipelineStage(b, rank + k * world, 2 * world, torch.device("cpu"))
            for k, b in enumerate(blocks)
        ]
        schedule = ScheduleInterleaved1F1B(stages, args.micro, loss_fn=loss)
        params = [q for b in blocks for q in b.parameters()]
    else:
        block = Block(ms)
        stage = PipelineStage(block, rank, world, torch.device("cpu"))
        kind = ScheduleGPipe if args.schedule == "gpipe" else Schedule1F1B
        schedule = kind(stage, args.micro, loss_fn=loss)
        params = list(block.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)
    batch = 16 * args.micro
    for _ in range(args.steps):
        opt.zero_grad()
        if rank == 0:
            schedule.step(torch.randn(batch, 64))
        elif rank == world - 1:
            schedule.step(target=torch.zeros(batch, 64))
        else:
            schedule.step()
        opt.step()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
