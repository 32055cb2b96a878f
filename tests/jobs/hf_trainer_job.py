"""A real ``transformers.Trainer`` on CPU (gloo), recorded by rankscope's callback.

``python -m torch.distributed.run --nproc-per-node 2 hf_trainer_job.py RUN_DIR
[--steps N] [--slow-rank R] [--sleep-ms MS] [--profile 3-5] [--export-to mlflow]``:
a tiny regression model whose forward sleeps on rank R; ``--accumulate K`` sets
``gradient_accumulation_steps`` (a step is then K forwards); ``--step-ms MS`` sleeps in
every rank's forward; ``--stop-file PATH`` ends training at the first step after PATH
exists (the ranks agree through an all_reduce).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from rankscope.integrations.transformers import RankscopeCallback


class Tiny(nn.Module):
    def __init__(self, slow: bool, sleep_s: float, step_s: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
        self.sleep_s = (sleep_s if slow else 0.0) + step_s

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training and self.sleep_s:
            time.sleep(self.sleep_s)
        return {"loss": (self.body(x).squeeze(-1) - y).square().mean()}


class StopOnFile(TrainerCallback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stop = torch.tensor([1 if os.path.exists(self.path) else 0])
        torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item():
            control.should_training_stop = True


class Data(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 32, generator=g)
        self.y = torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--slow-rank", type=int, default=-1)
    parser.add_argument("--sleep-ms", type=float, default=40.0)
    parser.add_argument("--profile", default="off")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--export-to", default="")
    parser.add_argument("--step-ms", type=float, default=0.0)
    parser.add_argument("--stop-file", default="")
    args = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    callback = RankscopeCallback(
        args.run_dir,
        profile_steps=args.profile,
        nvml_period_ms=50,
        export_to=tuple(t for t in args.export_to.split(",") if t),
    )
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=args.accumulate,
            learning_rate=1e-3,
            use_cpu=True,
            ddp_backend="gloo",
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        model = Tiny(rank == args.slow_rank, args.sleep_ms / 1000, args.step_ms / 1000)
        callbacks: list[TrainerCallback] = [callback]
        if args.stop_file:
            callbacks.append(StopOnFile(args.stop_file))
        trainer = Trainer(model=model, args=training, train_dataset=Data(4096), callbacks=callbacks)
        trainer.train()
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main()
