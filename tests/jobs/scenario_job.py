"""A small DDP job on CPU (gloo) with one known, induced slowdown: the diagnosis scenarios.

It never imports rankscope; run it under ``rankscope run`` (or any launcher)::

    python -m torch.distributed.run --standalone --nproc-per-node 4 scenario_job.py \\
        --scenario data_getitem --rank 2 --ms 60

Every step: the next batch from a DataLoader, forward, backward (DDP all-reduce),
optimizer step. ``--scenario`` picks what is slowed (``--rank``/``--ms``/``--at-step``
size it):

- ``balanced``: nothing induced.
- ``comm_heavy``: nothing induced, but a wider model (hidden 2048: ~1.2 MB of
  gradients, against ~0.2 MB), so the all-reduce is a larger share of the step.
- ``data_getitem``: rank R's ``Dataset.__getitem__`` sleeps (ms / batch) per sample.
- ``slow_workers``: every rank loads with 2 DataLoader workers; rank R's workers
  sleep (ms) per batch, one batch at a time each.
- ``uneven_batch``: rank R trains on 3x the others' batch (its batch repeated 3x:
  3x the operator work, the same data loading).
- ``python_work``: rank R does ms of pure-Python work outside any torch op
  between the optimizer step and the next batch (half busy loop, half sleep).
- ``single_stall``: rank R stalls ms (pure Python) in step ``--at-step`` (or in each
  of a comma-separated list of steps) as
  ``rankscope run`` numbers steps (a step ends at each optimizer step: loop
  iteration S + 1 is collector step S).
- ``rotating``: at step s, rank s % world stalls ms (pure Python).
- ``two_slow``: rank R sleeps ms in ``__getitem__``, rank R2 half of that.
- ``periodic``: rank R stalls ms (pure Python) at every ``--every``-th step
  (collector steps ``--at-step``, ``--at-step`` + every, ...).
- ``long_batches``: rank R's batch is 4x longer (4x the operator work) at every
  ``--every``-th step (collector steps ``--at-step``, ``--at-step`` + every, ...), as
  long sequences bucketed onto one rank.
- ``contended``: every rank does the same operator work; from collector step
  ``--at-step`` on, rank R's training thread shares one CPU with a busy-loop
  process (both pinned there): it is ready to run but waits for the CPU, as
  beside another job or under CPU throttling.
- ``slow_node``: every rank of node ``--slow-node`` (torchrun's ``GROUP_RANK``) sleeps ms
  per batch in ``__getitem__`` (``tests/jobs/two_nodes.py`` runs two "nodes" on one host).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

FEATURES = 128
SAMPLES_PER_EPOCH = 100_000


class Synthetic(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random samples; ``sleep_s`` per ``__getitem__`` stands for slow decoding or I/O."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s

    def __len__(self) -> int:
        return SAMPLES_PER_EPOCH

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        g = torch.Generator().manual_seed(i)
        return torch.randn(FEATURES, generator=g), torch.randn(16, generator=g)


class SlowBatches:
    """A collate function whose batches cost ``sleep_s`` each (runs inside a worker)."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        xs, ys = zip(*items, strict=True)
        return torch.stack(xs), torch.stack(ys)


def python_work(seconds: float) -> None:
    """Work a profiler sees no op for: a busy Python loop, then a sleep (logging, I/O, GC)."""
    end = time.perf_counter() + seconds / 2
    acc = 0
    while time.perf_counter() < end:
        acc += sum(range(200))
    time.sleep(seconds / 2)


def pin_beside_a_hog(hog: subprocess.Popen[bytes]) -> None:
    """Pin this thread to the CPU of ``hog`` (a ``busy_loop(cpu, armed=True)``) and set it spinning.

    The loop was started and pinned beforehand: a new interpreter takes a few steps'
    time to start on a loaded host, and the contention must begin at this step. The
    thread also lowers its own priority (nice 5: about a quarter of the CPU against
    the loop): a thread that sleeps in every collective otherwise wins each wake-up
    against a busy loop, and how much it waits would depend on the machine's load.
    """
    os.sched_setaffinity(0, {HOG_CPU})
    os.setpriority(os.PRIO_PROCESS, 0, 5)  # this thread (Linux: a thread id is a "process")
    assert hog.stdin is not None
    hog.stdin.write(b"go\n")
    hog.stdin.flush()


HOG_CPU = max(os.sched_getaffinity(0))


def busy_loop(cpu: int, armed: bool = False) -> subprocess.Popen[bytes]:
    """A process spinning on ``cpu`` until its parent exits (so a killed job leaves none).

    ``armed``: it starts, pins itself and waits (asleep) for a line on its stdin before
    it spins, so the spinning starts at once when that line is written.
    """
    wait = "import sys\nsys.stdin.readline()\n" if armed else ""
    code = (
        f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nparent = os.getppid()\n{wait}"
        "while os.getppid() == parent:\n    for _ in range(100_000):\n        pass\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE if armed else None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="balanced")
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--rank2", type=int, default=2)
    p.add_argument("--slow-node", type=int, default=-1)
    p.add_argument("--ms", type=float, default=60.0)
    p.add_argument("--at-step", default="10")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--every", type=int, default=4)
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="extra parameter-free operator layers a step on every rank (more compute, "
        "no more communication); default: the scenario's",
    )
    p.add_argument(
        "--comm-mb",
        type=float,
        default=0.0,
        help="a buffer of this many MB all-reduced a step on every rank besides the "
        "gradients (more communication, no more compute)",
    )
    p.add_argument(
        "--mb",
        type=float,
        default=512.0,
        help="memory_hog: MB of CPU tensor the chosen rank holds during every step",
    )
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sc, me, stall_s = args.scenario, rank == args.rank, args.ms / 1000
    stall_steps = {int(s) + 1 for s in args.at_step.split(",")}  # loop iteration of each

    batch = args.batch
    repeat = 3 if sc == "uneven_batch" and me else 1
    sleep_item = 0.0
    if sc in ("data_getitem", "two_slow") and me:
        sleep_item = stall_s / batch
    if sc == "two_slow" and rank == args.rank2:
        sleep_item = stall_s / 2 / batch
    if sc == "slow_node" and os.environ.get("GROUP_RANK") == str(args.slow_node):
        sleep_item = stall_s / batch
    workers = 2 if sc == "slow_workers" else 0
    collate = SlowBatches(stall_s if sc == "slow_workers" and me else 0.0)
    loader = DataLoader(
        Synthetic(sleep_item),
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=1 if workers else None,
        persistent_workers=bool(workers),
    )

    hidden = 2048 if sc == "comm_heavy" else 256
    # uneven_batch: per-sample feature work (no parameters, so no extra communication)
    # makes operator time scale with the batch.
    mix = torch.randn(FEATURES, FEATURES) / FEATURES**0.5
    # contended: every rank does ~30 ms of operator work a step, so a rank sharing
    # its CPU needs its share of it (a thread that mostly sleeps hardly notices a hog)
    feature_depth = {"uneven_batch": 600, "long_batches": 600, "contended": 1500}.get(sc, 0)
    if args.depth is not None:
        feature_depth = args.depth
    net = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 16))
    model = nn.parallel.DistributedDataParallel(net)
    # --comm-mb: a buffer all-reduced every step besides the gradients (state or metrics
    # kept in sync): more communication, allocated once, so no more compute
    extra = torch.zeros(int(args.comm_mb * 2**20 / 4)) if args.comm_mb else None
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hoard_bytes = int(args.mb * 2**20) if sc == "memory_hog" and me else 0

    first = int(args.at_step.split(",")[0]) + 1  # the loop iteration of that collector step
    # started (asleep) before the loop: an interpreter's start-up must not delay the onset
    hog = busy_loop(HOG_CPU, armed=True) if sc == "contended" and me else None
    batches = iter(loader)
    for step in range(args.steps):
        if sc == "contended" and me and step == first:
            assert hog is not None
            pin_beside_a_hog(hog)
        if sc == "periodic" and me and step >= first and (step - first) % args.every == 0:
            python_work(stall_s)
        if sc == "python_work" and me:
            python_work(stall_s)
        if sc == "single_stall" and me and step in stall_steps:
            python_work(stall_s)
        if sc == "rotating" and step % world == rank:
            python_work(stall_s)
        # memory_hog: a tensor held through the step, made anew each step (torch's CPU
        # allocator reports only what it allocates while the profiler records memory);
        # torch.empty never touches its pages, so the machine's memory is not spent
        hoard = torch.empty(hoard_bytes, dtype=torch.uint8) if hoard_bytes else None
        x, y = next(batches)
        long = sc == "long_batches" and me and step >= first and (step - first) % args.every == 0
        if repeat > 1 or long:
            times = 4 if long else repeat
            x, y = x.repeat(times, 1), y.repeat(times, 1)
        for _ in range(feature_depth):
            x = torch.tanh(x @ mix)
        loss = (model(x) - y).square().mean()
        loss.backward()
        if extra is not None:
            dist.all_reduce(extra)
        opt.step()
        opt.zero_grad()
        del hoard
    if hog is not None:
        hog.kill()
        hog.wait()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
