"""Generate ``sample_traces/ddp3_dataloader_straggler/`` with rankscope's own collector.

A 3-rank DDP job on CPU (gloo): a 2-layer transformer encoder, 30 optimizer steps,
``record_function`` ranges ``data_loading``/``forward``/``backward``/``optimizer_step``.
Each batch comes from a ``torch.utils.data.DataLoader``; on rank 1 the dataset sleeps
60 ms per batch, so rank 1 is the straggler and data loading is the cause; ranks 0
and 2 wait for it in ``gloo:all_reduce``. The job runs unmodified under ``rankscope
run`` with the current collector: the light layer (step times, each step's DataLoader
wait, every collective from the flight recorder, host telemetry), one profiler window
over steps 4-6 (record_shapes off to keep the files small), so ``rankscope demo`` fills
every page, Whole run included.

    PYTHONPATH=src python sample_traces/make_sample.py   # rewrites the sample (~30 s)

The numbers move a little from one regeneration to the next (CPU timing on a shared
machine); the story does not: rank 1, data loading. Regenerate it whenever the run
format changes, so the demo shows what a run recorded today looks like.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "ddp3_dataloader_straggler"
SLOW_RANK = 1
SLEEP_S = 0.060
STEPS = 30
BATCH = (8, 32, 64)


def worker() -> None:
    """One rank of the job; knows nothing about rankscope."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.profiler import record_function
    from torch.utils.data import DataLoader, IterableDataset

    class Batches(IterableDataset):  # type: ignore[type-arg]
        """``STEPS`` random batches; the slow rank's storage takes ``SLEEP_S`` per batch."""

        def __init__(self, rank: int) -> None:
            self.rank = rank

        def __iter__(self):  # type: ignore[no-untyped-def]
            gen = torch.Generator().manual_seed(self.rank)
            for _ in range(STEPS):
                if self.rank == SLOW_RANK:
                    time.sleep(SLEEP_S)
                yield torch.randn(*BATCH, generator=gen)

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True)
    model = nn.parallel.DistributedDataParallel(nn.TransformerEncoder(layer, num_layers=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = iter(DataLoader(Batches(rank), batch_size=None, num_workers=0))
    for _ in range(STEPS):
        with record_function("data_loading"):
            x = next(batches)
        with record_function("forward"):
            loss = model(x).square().mean()
        with record_function("backward"):
            opt.zero_grad()
            loss.backward()
        with record_function("optimizer_step"):
            opt.step()
    dist.destroy_process_group()


def main() -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable, "-m", "rankscope.dashboard.cli", "run",
        "--out", str(OUT), "--overwrite", "--profile", "4-6",
        "--",
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
        str(Path(__file__).resolve()), "--worker",
    ]  # fmt: skip
    code = subprocess.call(cmd, env=env, cwd=REPO)
    if code == 0:
        # Relative command paths keep the checked-in sample free of this machine's paths.
        import json

        manifest_path = OUT / "run.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["command"] = ["torchrun", "--nproc-per-node", "3", "make_sample.py", "--worker"]
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
        print(f"wrote {OUT.relative_to(REPO)} ({total / 1e6:.2f} MB)")
    return code


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        sys.exit(main())
