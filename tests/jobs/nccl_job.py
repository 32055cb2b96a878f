"""One rank alone: 25 steps of one 4 MiB all_reduce and an optimizer step.

World size 1 (plain python, no launcher): NCCL refuses two ranks on one GPU, so
this is the job that tests NCCL's flight recorder on a single-GPU machine
(``--backend nccl``, the default); ``--backend gloo`` runs the same job on the
CPU, so CI checks a 1-rank job's collective log without a GPU. The process group
rendezvous through a file (no port to collide with another job). With NCCL the
job waits 0.5 s before tearing down: NCCL's watchdog (every 100 ms) retires the
last collectives then, which is when the flight recorder computes their GPU time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist

STEPS = 25
ELEMENTS = 1 << 20  # float32: 4 MiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    nccl = args.backend == "nccl"
    device = torch.device("cuda", 0) if nccl else torch.device("cpu")
    if nccl:
        torch.cuda.set_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        store = dist.FileStore(os.path.join(tmp, "store"), 1)
        dist.init_process_group(args.backend, store=store, rank=0, world_size=1)
        w = torch.zeros(ELEMENTS, device=device, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for _ in range(args.steps):
            loss = (w * 2).sum()
            loss.backward()
            assert w.grad is not None
            dist.all_reduce(w.grad)
            opt.step()
            opt.zero_grad()
        if nccl:
            torch.cuda.synchronize()
            time.sleep(0.5)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
