"""A DDP job written for Slurm: rank and size from ``SLURM_PROCID``/``SLURM_NTASKS``.

Uses ``rankscope.Collector`` in code and starts it *before* ``init_process_group``
(so the collector must tell the rank from Slurm's variables alone), then joins
the gloo group through ``MASTER_ADDR``/``MASTER_PORT``. Run it under
``tests/fakes/fake_srun.py -n 2`` (or a real ``srun``): ``slurm_job.py RUN_DIR
[--steps N] [--slow-rank R] [--sleep-ms MS]``.
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
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--slow-rank", type=int, default=-1)
    parser.add_argument("--sleep-ms", type=float, default=40.0)
    args = parser.parse_args()

    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    with Collector(args.run_dir, nvml_period_ms=50) as col:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = nn.parallel.DistributedDataParallel(
            nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 16))
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(args.steps):
            with torch.profiler.record_function("data_loading"):
                if rank == args.slow_rank:
                    time.sleep(args.sleep_ms / 1000)
                x = torch.randn(32, 64)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            col.step()
        dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main()
