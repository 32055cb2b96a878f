"""A real Lightning ``Trainer`` (DDP on CPU, gloo) recorded by rankscope's callback.

``python -m torch.distributed.run --nproc-per-node 2 lightning_job.py RUN_DIR
[--steps N] [--slow-rank R] [--sleep-ms MS] [--profile 3-5] [--accumulate K]
[--package lightning|pytorch_lightning]``: Lightning sees torchrun's variables and
joins its process group; rank R sleeps in ``training_step``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from typing import Any

import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--slow-rank", type=int, default=-1)
    parser.add_argument("--sleep-ms", type=float, default=40.0)
    parser.add_argument("--profile", default="off")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument(
        "--package", default="lightning", choices=["lightning", "pytorch_lightning"]
    )
    args = parser.parse_args()

    pl: Any = importlib.import_module(
        "lightning.pytorch" if args.package == "lightning" else "pytorch_lightning"
    )
    callbacks = importlib.import_module(f"rankscope.integrations.{args.package}")
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    sleep_s = args.sleep_ms / 1000 if rank == args.slow_rank else 0.0

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if sleep_s:
                time.sleep(sleep_s)
            x, y = batch
            return (self.body(x).squeeze(-1) - y).square().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4096, 32, generator=g), torch.randn(4096))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        strategy="ddp",
        devices=world,
        max_steps=args.steps,
        accumulate_grad_batches=args.accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            callbacks.RankscopeCallback(args.run_dir, profile_steps=args.profile, nvml_period_ms=50)
        ],
    )
    trainer.fit(Tiny(), loader)
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main()
