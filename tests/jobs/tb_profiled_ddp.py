"""A small DDP job on CPU (gloo) profiled with plain torch.profiler + tensorboard_trace_handler.

It never imports rankscope: it stands for "traces a job already wrote". One rank
can be slowed on purpose:
  SLOW_RANK=R SLOW_KIND=data   R sleeps STALL_MS inside data_loading each step
  SLOW_RANK=R SLOW_KIND=compute   R does extra matmuls in its forward pass
Run with: python -m torch.distributed.run --nproc-per-node 3 tb_profiled_ddp.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import (
    ProfilerActivity,
    profile,
    record_function,
    schedule,
    tensorboard_trace_handler,
)


def main() -> None:
    out_dir = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    torch.set_num_threads(1)
    slow_rank = int(os.environ.get("SLOW_RANK", "-1"))
    kind = os.environ.get("SLOW_KIND", "data")
    stall_s = float(os.environ.get("STALL_MS", "60")) / 1000
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    extra = torch.randn(384, 384)
    steps = int(os.environ.get("STEPS", "8"))
    sched = schedule(wait=1, warmup=1, active=steps - 2, repeat=1)
    with profile(
        activities=[ProfilerActivity.CPU],
        schedule=sched,
        on_trace_ready=tensorboard_trace_handler(out_dir, worker_name=f"worker{rank}"),
    ) as prof:
        for _ in range(steps):
            with record_function("data_loading"):
                x = torch.randn(64, 256)
                if rank == slow_rank and kind == "data":
                    time.sleep(stall_s)
            with record_function("forward"):
                y = model(x)
                if rank == slow_rank and kind == "compute":
                    t0 = time.perf_counter()
                    while time.perf_counter() - t0 < stall_s:
                        extra = torch.tanh(extra @ extra / 384)
                loss = y.square().mean()
            with record_function("backward"):
                loss.backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    # Tear down together: a rank that destroys its gloo group while the other
    # still sends can abort at exit (\"terminate called without an active exception\").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
