"""A 2-rank gloo DDP job whose profiler window's stop stalls one rank's next batch.

``python capture_stall_job.py RUN_DIR --profile 10-12 --stall-rank 1 --stall-ms 400``
under torchrun: a ``rankscope.Collector`` takes the window; on ``--stall-rank`` its
stop (``Collector._close_window``, on the training thread at the start of step
13) makes the next ``__getitem__`` of the DataLoader sleep ``--stall-ms``. That is
the footprint seen on an H200: the window's end lands in the next step's
DataLoader wait on the rank with the larger trace. Every step is padded to about
``--step-ms`` so the steps around the window are known.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rankscope import Collector

STALL = {"pending": False, "seconds": 0.0}


class Numbers(Dataset[torch.Tensor]):
    def __init__(self, n: int) -> None:
        self.x = torch.randn(n, 64, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        if STALL["pending"]:
            STALL["pending"] = False
            time.sleep(STALL["seconds"])
        return self.x[i]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--profile", default="10-12")
    p.add_argument("--stall-rank", type=int, default=1)
    p.add_argument("--stall-ms", type=float, default=400.0)
    p.add_argument("--step-ms", type=float, default=20.0)
    args = p.parse_args()

    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", "2000")  # the collective log, before init
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = iter(DataLoader(Numbers(args.steps * 4), batch_size=4))
    with Collector(args.run_dir, profile_steps=args.profile, nvml_period_ms=50) as col:
        if rank == args.stall_rank:
            close = col._close_window

            def close_and_stall() -> None:
                close()
                STALL["seconds"] = args.stall_ms / 1000
                STALL["pending"] = True

            col._close_window = close_and_stall  # type: ignore[method-assign]
        for _ in range(args.steps):
            t0 = time.perf_counter()
            x = next(batches)
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            pad = args.step_ms / 1000 - (time.perf_counter() - t0)
            if pad > 0:
                time.sleep(pad)
            col.step()
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
