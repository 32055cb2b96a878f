"""A small DDP job on CPU (gloo) with a real DataLoader, knowing nothing about rankscope.

``--data-slow-rank R --data-sleep-ms N``: rank R's dataset sleeps N ms in
``__getitem__`` (batch size 1, no workers: N ms of DataLoader wait per step).
``--slow-rank R --slow-ms N --slow-from A [--slow-until B] [--slow-again C]``:
rank R sleeps N ms in every step from step A (until B, and again from C on):
a slowdown that starts mid-run. ``--step-ms`` pads every step to about that
long. ``--result FILE`` writes the trained parameters' sum and the losses (the
training result, to compare runs with and without the collector).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Numbers(Dataset[torch.Tensor]):
    def __init__(self, n: int, sleep_s: float) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 64, generator=g)
        self.sleep_s = sleep_s

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self.x[i]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data-slow-rank", type=int, default=-1)
    p.add_argument("--data-sleep-ms", type=float, default=0.0)
    p.add_argument("--slow-rank", type=int, default=-1)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--slow-from", type=int, default=1 << 30)
    p.add_argument("--slow-until", type=int, default=1 << 30)
    p.add_argument("--slow-again", type=int, default=1 << 30)
    p.add_argument("--step-ms", type=float, default=0.0)
    p.add_argument("--result", default="")
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sleep_s = args.data_sleep_ms / 1000 if rank == args.data_slow_rank else 0.0
    loader = DataLoader(Numbers(args.steps * 4, sleep_s), batch_size=4 if not sleep_s else 1)
    losses = []
    batches = iter(loader)
    for step in range(args.steps):
        t0 = time.perf_counter()
        x = next(batches)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        slow = args.slow_from <= step < args.slow_until or step >= args.slow_again
        if rank == args.slow_rank and slow:
            time.sleep(args.slow_ms / 1000)
        pad = args.step_ms / 1000 - (time.perf_counter() - t0)
        if pad > 0:
            time.sleep(pad)
    if args.result and rank == 0:
        total = sum(float(q.double().sum()) for q in model.parameters())
        with open(args.result, "w") as f:
            json.dump({"param_sum": total, "losses": losses}, f)
    # Tear down together: a rank that destroys its gloo group while the other
    # still sends can abort at exit (\"terminate called without an active exception\").
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} trained {args.steps} steps (pid {os.getpid()})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
