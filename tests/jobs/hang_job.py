"""A small gloo job that hangs, desyncs or dies on purpose, knowing nothing about rankscope.

Every step: forward, backward, one ``all_reduce`` of the gradients on the default
group (``--groups 2``: on the rank's own group of two made with ``new_group``,
then one ``all_reduce`` of the loss on the default group), then ``opt.step()``.
Rank ``--rank`` does ``--scenario`` at step ``--at``, before its gradient
all_reduce:

- ``stop``: sleeps ``--sleep-s`` (never joins: the others time out);
- ``late``: sleeps ``--sleep-s`` then goes on (slow, not hung);
- ``desync``: all-reduces a tensor one element longer than the others';
- ``desync_op``: broadcasts (from rank 0) where the others all-reduce;
- ``raise``: raises ``RuntimeError`` from ``load_batch``;
- ``kill``: SIGKILLs itself;
- ``abort``: ``os.abort()`` from ``native_crash`` (SIGABRT, as a C++ abort or a
  segfault in an extension would end it);
- ``healthy``: nothing.

The process group timeout is ``--pg-timeout-s`` (short, so a hang ends fast).
``--first-attempt-only``: the scenario happens only when torchrun has not restarted
the job (``TORCHELASTIC_RESTART_COUNT`` 0), so a restarted attempt runs healthy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import time

import torch
import torch.distributed as dist
from torch import nn


def load_batch(step: int, fail_at: int) -> torch.Tensor:
    if step == fail_at:
        raise RuntimeError(f"corrupt batch at step {step}")
    return torch.randn(8, 16, generator=torch.Generator().manual_seed(step))


def wait_for_peers(seconds: float) -> None:
    time.sleep(seconds)  # the stack a stalled rank should show


def native_crash() -> None:
    os.abort()  # the stack a rank killed by a fatal signal should show


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--scenario", default="healthy")
    p.add_argument("--rank", type=int, default=-1)
    p.add_argument("--at", type=int, default=5)
    p.add_argument("--sleep-s", type=float, default=60.0)
    p.add_argument("--pg-timeout-s", type=float, default=6.0)
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--step-ms", type=float, default=20.0)
    p.add_argument("--first-attempt-only", action="store_true")
    args = p.parse_args()

    timeout = datetime.timedelta(seconds=args.pg_timeout_s)
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if restart == "0":
        dist.init_process_group("gloo", timeout=timeout)
    else:
        # gloo publishes each rank's address in torchrun's store, which outlives an
        # attempt: a restarted attempt uses a prefix of its own, or it may read a dead
        # rank's address and fail to connect.
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False
        )
        dist.init_process_group(
            "gloo",
            store=dist.PrefixStore(f"attempt{restart}", store),
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            timeout=timeout,
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    group = None
    if args.groups > 1:
        size = world // args.groups
        for g in range(args.groups):
            members = list(range(g * size, (g + 1) * size))
            made = dist.new_group(members)
            if rank in members:
                group = made
    torch.manual_seed(0)
    model = nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    me = rank == args.rank
    if args.first_attempt_only and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        me = False
    for step in range(args.steps):
        x = load_batch(step, args.at if me and args.scenario == "raise" else -1)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        grads = torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None])
        if me and step == args.at:
            if args.scenario in ("stop", "late"):
                wait_for_peers(args.sleep_s)
            elif args.scenario == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif args.scenario == "abort":
                native_crash()
            elif args.scenario == "desync":
                grads = torch.cat([grads, torch.zeros(1)])
        if me and step == args.at and args.scenario == "desync_op":
            dist.broadcast(grads, src=0, group=group)
        else:
            dist.all_reduce(grads, group=group)
        if group is not None:
            dist.all_reduce(loss.detach(), group=None)
        opt.step()
        time.sleep(args.step_ms / 1000)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
