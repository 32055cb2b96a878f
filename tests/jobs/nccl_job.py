"""One rank on one GPU with NCCL: 25 steps of one 4 MiB all_reduce and an optimizer step.

World size 1 (plain python): enough for NCCL's flight recorder to time every
collective, on a machine with a single GPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def main() -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    w = torch.zeros(1 << 20, device="cuda", requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(25):
        loss = (w * 2).sum()
        loss.backward()
        assert w.grad is not None
        dist.all_reduce(w.grad)
        opt.step()
        opt.zero_grad()
    torch.cuda.synchronize()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
