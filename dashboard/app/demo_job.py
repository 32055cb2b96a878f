"""The small training job behind ``rankscope demo --live``; it knows nothing about rankscope.

A DDP job on CPU (gloo) under ``python -m torch.distributed.run``: a small MLP,
``record_function`` ranges ``data_loading``/``forward``/``backward``/``optimizer_step``.
Rank ``--slow-rank`` (default 1) sleeps ``--sleep-ms`` (default 40) inside
``data_loading`` every step, so it is the straggler, data loading is the cause
and the other ranks wait for it in ``gloo:all_reduce``. ``--step-ms`` paces the
steps so the dashboard has time to fill in while it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--slow-rank", type=int, default=1)
    parser.add_argument("--sleep-ms", type=float, default=40.0)
    parser.add_argument(
        "--step-ms", type=float, default=60.0, help="extra host time per step, every rank"
    )
    args = parser.parse_args()

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.profiler import record_function

    torch.set_num_threads(1)
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)
    model: nn.Module = nn.Sequential(
        nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 16)
    )
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(args.steps):
        with record_function("data_loading"):
            time.sleep(args.step_ms / 2000)
            if rank == args.slow_rank:
                time.sleep(args.sleep_ms / 1000)
            x = torch.randn(64, 256)
        with record_function("forward"):
            loss = model(x).square().mean()
        opt.zero_grad()
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer_step"):
            opt.step()
        time.sleep(args.step_ms / 2000)
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
