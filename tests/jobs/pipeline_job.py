"""A pipeline-parallel job on CPU (gloo): one stage per rank, GPipe schedule.

It never imports rankscope; run it under ``rankscope run``::

    python -m torch.distributed.run --standalone --nproc-per-node 2 pipeline_job.py

Every step: ``--micro`` micro-batches forward (receive the activation from the
previous stage, compute ``--fwd-ms``, send it on), then backward in reverse
(receive the gradient from the next stage, compute twice ``--fwd-ms``, send it
back), then the stage's optimizer step. Stage ``--slow-stage`` computes
``--factor`` times as long. Compute is real CPU work (matmuls until the time is
spent). Blocking ``send``/``recv``, or ``isend``/``irecv`` + ``wait`` with ``--async``.
``--hang-stage S --hang-at K``: stage S stops in ``stuck_in_compute`` (a 60 s
sleep) at step K, before its first micro-batch; ``--deadlock-at K``: at step K
stages 0 and 1 both send to the other before they receive (each blocks in its
send). The process group times out after ``--pg-timeout-s``. Each stage prints
its own measured bubble (time blocked in sends and receives / step time, over
the steps from 5 on) as ``BUBBLE stage=S fraction=F traced=T`` at the end (T: over the steps a
profiler was recording, the trace window's).
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
import torch.distributed as dist
from torch import nn


def compute(layer: nn.Linear, x: torch.Tensor, ms: float) -> torch.Tensor:
    end = time.perf_counter() + ms / 1000
    y = layer(x)
    while time.perf_counter() < end:
        y = layer(y).tanh()
    return y


def stuck_in_compute(seconds: float) -> None:
    time.sleep(seconds)  # the frame a stuck stage should show


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--fwd-ms", type=float, default=4.0)
    p.add_argument("--slow-stage", type=int, default=-1)
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--async", dest="use_async", action="store_true")
    p.add_argument("--hang-stage", type=int, default=-1)
    p.add_argument("--hang-at", type=int, default=-1)
    p.add_argument("--deadlock-at", type=int, default=-1)
    p.add_argument("--pg-timeout-s", type=float, default=600.0)
    args = p.parse_args()

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.pg_timeout_s))
    stage, stages = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(stage)
    torch.set_num_threads(1)
    layer = nn.Linear(64, 64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.001)
    ms = args.fwd_ms * (args.factor if stage == args.slow_stage else 1.0)
    act = torch.zeros(16, 64)
    blocked = total = 0.0

    def recv(t: torch.Tensor, src: int) -> None:
        nonlocal blocked
        t0 = time.perf_counter()
        if args.use_async:
            dist.irecv(t, src=src).wait()
        else:
            dist.recv(t, src=src)
        blocked += time.perf_counter() - t0

    def send(t: torch.Tensor, dst: int) -> None:
        nonlocal blocked
        t0 = time.perf_counter()
        if args.use_async:
            dist.isend(t, dst=dst).wait()
        else:
            dist.send(t, dst=dst)
        blocked += time.perf_counter() - t0

    traced = [0.0, 0.0]  # blocked and step seconds over the steps a profiler traced
    for step in range(args.steps):
        t_step = time.perf_counter()
        before = blocked
        if step == args.hang_at and stage == args.hang_stage:
            stuck_in_compute(60)
        if step == args.deadlock_at and stage < 2:
            send(torch.zeros(16, 64), 1 - stage)  # both send first: neither receives
            recv(torch.zeros(16, 64), 1 - stage)
        for _ in range(args.micro):
            if stage > 0:
                recv(act, stage - 1)
            out = compute(layer, act, ms)
            if stage < stages - 1:
                send(out.detach().contiguous(), stage + 1)
        grad = torch.zeros(16, 64)
        for _ in range(args.micro):
            if stage < stages - 1:
                recv(grad, stage + 1)
            g = compute(layer, grad, 2 * ms)
            g.square().mean().backward()
            if stage > 0:
                send(torch.zeros(16, 64), stage - 1)
        opt.step()
        opt.zero_grad()
        seconds = time.perf_counter() - t_step
        if torch._C._autograd._profiler_enabled():  # a step of rankscope's trace window
            traced[0] += blocked - before
            traced[1] += seconds
        if step >= 5:  # after warm-up, as the collector's whole-run steps
            total += seconds
        else:
            blocked = 0.0
    window = f" traced={traced[0] / traced[1]:.3f}" if traced[1] else ""
    print(f"BUBBLE stage={stage} fraction={blocked / total:.3f}{window}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
