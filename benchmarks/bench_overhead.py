"""What the collector costs a training step: the same 2-rank gloo CPU job, side by side.

Four configurations run interleaved inside the same two processes (so they share
warm caches, the same process group and the same machine noise), repetition
after repetition:

- ``baseline``: no collector;
- ``light, attach off``: a Collector with no profiler window (step timer +
  telemetry thread) and no control channel (``control_period_s=0``);
- ``light, no FR/data``: the control channel on (as jobs run it: the recorder
  thread looks for an attach request every 0.5 s and writes a heartbeat every
  second, the training thread checks one attribute per step), but neither the
  collective log nor the DataLoader timer;
- ``light``: everything the light layer does by default: the same plus each
  step's DataLoader wait (two clock reads per batch) and the collective log
  (the flight recorder, ring of 2000, read on the recorder thread every >= 2 s;
  a read holds the GIL for the whole ring). Light blocks run ``--steps`` (250)
  steps, so each holds at least one read;
- ``torch.profiler``: torch.profiler alone, the usual way (schedule with warmup 1,
  active 3, ``tensorboard_trace_handler(use_gzip=True)`` exporting on the training thread);
- ``collector window``: a Collector with the same window (warmup 1, steps 3);
- ``attach window``: a Collector with no window of its own that gets the same
  window through an attach request (the ``rankscope attach`` path).

Light configurations time ``--steps`` steps after 5 untimed ones; profiler
configurations time the five steps from the warm-up step to the step at whose
start the trace is saved. Rank 0 prints median and mean step time per
configuration and the two ratios that matter, light / baseline and collector
window / torch.profiler, paired by repetition (the figure to quote on a shared
or noisy machine). Before the table, the cost of one poll of the request file
(``ControlChannel.poll()`` when nothing changed: one ``lstat``) and of one
flight-recorder read of a full ring (per entry) are timed directly.

    python benchmarks/bench_overhead.py            # ~1-2 minutes on 2 cores
    python benchmarks/bench_overhead.py --quick    # ~20 seconds

``--old-src OLD/src`` (``git archive COMMIT | tar -x -C OLD``) runs only baseline
and light, from that tree and from this checkout, job after job (``--rounds``),
and prints light / baseline for each tree. ``bench_collector_cpu.py`` measures
the light layer's own CPU time per duty, which machine noise moves far less.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC_ENV = "RANKSCOPE_BENCH_SRC"  # the source tree a --old-src job imports rankscope from
sys.path.insert(0, os.environ.get(SRC_ENV) or str(REPO / "src"))  # rankscope, uninstalled

CONFIGS = (
    "baseline",
    "light, attach off",
    "light, no FR/data",
    "light",
    "torch.profiler",
    "collector window",
    "attach window",
)
WINDOW_AT = 8  # profiled steps 8-10; warm-up step 7; the trace is saved as step 11 begins
SETTLE_STEPS = 5  # untimed steps after a collector starts: its threads start up meanwhile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    from rankscope import Collector
    from rankscope.profiler import rundir
    from rankscope.profiler.control import AttachRequest

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.manual_seed(rank)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(torch.randn(args.batch * 64, 256))

    def batches() -> Any:
        while True:
            yield from DataLoader(dataset, batch_size=args.batch)

    data = batches()

    def train_step() -> None:
        with torch.profiler.record_function("data_loading"):
            (x,) = next(data)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        train_step()
    # results[config][rep] = that repetition's step times (seconds)
    results: dict[str, list[list[float]]] = {c: [] for c in CONFIGS}
    tmp = Path(out)

    def timed(steps: int, mark: Any, keep: range) -> list[float]:
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            train_step()
            mark()
            if i in keep:
                times.append(time.perf_counter() - t0)
        return times

    window_steps = WINDOW_AT + 4  # steps 0..7: step 7 begins after the save
    window_keep = range(WINDOW_AT - 1, WINDOW_AT + 4)
    configs = tuple(c for c in CONFIGS if c in args.configs)
    for rep in range(args.reps):
        order = configs if rep % 2 == 0 else tuple(reversed(configs))
        for config in order:
            dist.barrier()
            if config == "baseline":
                n = SETTLE_STEPS + args.steps
                times = timed(n, lambda: None, range(SETTLE_STEPS, n))
            elif config.startswith("light"):
                control = 0.0 if config == "light, attach off" else 0.5
                full = config == "light"
                name = {"light": "light", "light, attach off": "noattach"}.get(config, "nofr")
                with Collector(
                    tmp / f"{name}{rep}",
                    nvml_period_ms=100,
                    control_period_s=control,
                    collectives=full,
                    data_timing=full,
                ) as col:
                    n = SETTLE_STEPS + args.steps
                    times = timed(n, col.step, range(SETTLE_STEPS, n))
            elif config == "attach window":
                run = tmp / f"attach{rep}"
                if rank == 0:
                    # What `rankscope attach` writes, before the collectors start so that
                    # their first poll (at start) finds it; each rank then waits for its
                    # "accepted" outside the timed steps.
                    request = AttachRequest(f"bench{rep}", WINDOW_AT, 3, time.time_ns())
                    rundir.write_json_atomic(rundir.request_path(run), request.to_json())
                dist.barrier()
                with Collector(run, nvml_period_ms=100) as col:
                    _wait_for_ack(run, rank, f"bench{rep}")
                    times = timed(window_steps, col.step, window_keep)
            elif config == "torch.profiler":
                from torch.profiler import (
                    ProfilerActivity,
                    profile,
                    schedule,
                    tensorboard_trace_handler,
                )

                with profile(
                    activities=[ProfilerActivity.CPU],
                    schedule=schedule(wait=WINDOW_AT - 1, warmup=1, active=3, repeat=1),
                    on_trace_ready=tensorboard_trace_handler(
                        str(tmp / f"tp{rep}"), worker_name=f"rank{rank}", use_gzip=True
                    ),
                ) as prof:
                    times = timed(window_steps, prof.step, window_keep)
            else:
                with Collector(
                    tmp / f"window{rep}",
                    profile_steps=f"{WINDOW_AT}-{WINDOW_AT + 2}",
                    nvml_period_ms=100,
                ) as col:
                    times = timed(window_steps, col.step, window_keep)
            results[config].append(times)
    dist.barrier()
    if rank == 0:
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results))
        else:
            _print_table(results, args)
    dist.destroy_process_group()


def _print_table(results: dict[str, list[list[float]]], args: argparse.Namespace) -> None:
    flat = {c: [t for rep in reps for t in rep] for c, reps in results.items()}
    med = {c: statistics.median(v) * 1000 for c, v in flat.items()}
    mean = {c: statistics.fmean(v) * 1000 for c, v in flat.items()}
    print(f"\n2 ranks, gloo on CPU, {args.reps} interleaved repetitions")
    print(f"{'configuration':<18} {'steps':>6} {'median ms':>10} {'mean ms':>9}")
    for c in CONFIGS:
        if c in flat:
            print(f"{c:<18} {len(flat[c]):>6} {med[c]:>10.3f} {mean[c]:>9.3f}")
    print()
    for a, b, goal in (
        ("light", "baseline", "goal < +1%"),
        ("light, no FR/data", "light, attach off", "the attach poll; goal ~0"),
        ("light", "light, no FR/data", "collective log + data timing; goal < +1%"),
        ("collector window", "torch.profiler", "goal <= +1%"),
        ("attach window", "torch.profiler", "goal <= +1%"),
    ):
        if not (results.get(a) and results.get(b)):
            continue
        # Paired: each repetition's two blocks ran back to back, so a slow spell on a
        # shared machine hits both; the median over repetitions of their ratio is the
        # figure least moved by noise. Pooled medians and means are printed beside it.
        mean_a = [statistics.fmean(r) for r in results[a]]
        mean_b = [statistics.fmean(r) for r in results[b]]
        paired = statistics.median(x / y for x, y in zip(mean_a, mean_b, strict=True))
        print(
            f"{a} / {b}: paired {(paired - 1) * 100:+.2f}%, "
            f"pooled median {(med[a] / med[b] - 1) * 100:+.2f}%, "
            f"pooled mean {(mean[a] / mean[b] - 1) * 100:+.2f}%   ({goal})"
        )


def _wait_for_ack(run: Path, rank: int, request_id: str, timeout_s: float = 30.0) -> None:
    from rankscope.profiler import rundir

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ack = rundir.read_acks(run).get(rank)
        if ack is not None and ack.get("id") == request_id:
            if ack["state"] != "accepted":
                raise RuntimeError(f"rank {rank}: attach request {ack['state']}: {ack}")
            return
        time.sleep(0.005)
    raise RuntimeError(f"rank {rank}: no answer to the attach request")


def poll_cost_us(n: int = 20_000) -> float:
    """Microseconds per poll of an unchanged request file (what runs every 0.5 s)."""
    from rankscope.profiler import rundir
    from rankscope.profiler.control import AttachRequest, ControlChannel
    from rankscope.profiler.faults import Faults

    with tempfile.TemporaryDirectory(prefix="rankscope-poll-") as d:
        run = Path(d)
        channel = ControlChannel(
            run,
            0,
            1,
            Faults("bench"),
            start_ns=time.time_ns(),
            current_step=lambda: 0,
            capturing=lambda: False,
            offer=lambda request: None,
        )
        channel.open()
        request = AttachRequest("bench", 10, 3, time.time_ns())
        rundir.write_json_atomic(rundir.request_path(run), request.to_json())
        channel.poll()  # the one real read; from here on each poll is one lstat
        t0 = time.perf_counter()
        for _ in range(n):
            channel.poll()
        return (time.perf_counter() - t0) / n * 1e6


def step_cost_us(n: int = 20_000) -> float:
    """Microseconds the training thread spends in one ``Collector.step()`` (light layer).

    Measured directly, in a loop with nothing else in it: the deterministic
    figure behind the noisy side-by-side ratio below.
    """
    from rankscope import Collector

    with tempfile.TemporaryDirectory(prefix="rankscope-step-") as d:
        col = Collector(d, profile_steps=None)
        col.start()
        try:
            for _ in range(1000):  # warm up
                col.step()
            t0 = time.perf_counter()
            for _ in range(n):
                col.step()
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            col.stop()


def fr_read_cost(ring: int, reps: int = 9) -> tuple[float, float]:
    """(us per entry, ms per read) of one flight-recorder read of a full ring, median of reps.

    In a child process (a 1-rank gloo group that issues ``ring`` all_reduces), so
    this process starts no process group before the benchmark's own.
    """
    import subprocess

    code = f"""
import os, statistics, time, torch, torch.distributed as dist
from rankscope.profiler.collectives import find_dumps
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
t = torch.ones(10)
for _ in range({ring}):
    dist.all_reduce(t)
dump = dict(find_dumps(torch._C._distributed_c10d))["fr"]
times = []
for _ in range({reps}):
    t0 = time.perf_counter(); n = len(dump()["entries"]); times.append(time.perf_counter() - t0)
print(n, statistics.median(times))
dist.destroy_process_group()
"""
    env = dict(os.environ, TORCH_FR_BUFFER_SIZE=str(ring))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    n, seconds = int(out[-2]), float(out[-1])
    return seconds / n * 1e6, seconds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~20 s)")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    parser.add_argument("--steps", type=int, default=250, help="timed steps per light block")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated configurations to run"
    )
    parser.add_argument(
        "--old-src",
        type=Path,
        help="src/ of an older checkout: run baseline and light from it and from this "
        "checkout, job after job (--rounds), and compare light / baseline side by side",
    )
    parser.add_argument("--rounds", type=int, default=4, help="jobs per tree with --old-src")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.configs = [c.strip() for c in args.configs.split(",")]
    if args.old_src is not None:
        compare_trees(args)
        return
    if args.reps is None:
        args.reps = 3 if args.quick else 16
    if args.quick:
        args.steps = min(args.steps, 20)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # What `rankscope run` sets: the flight recorder keeps a ring only with it.
    from rankscope.profiler.collectives import BUDGET, DEFAULT_BUFFER

    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", str(DEFAULT_BUFFER))
    import torch.multiprocessing as mp

    if args.json_out:  # one job of compare_trees: the blocks only
        with tempfile.TemporaryDirectory(prefix="rankscope-bench-") as out:
            mp.spawn(_worker, args=(2, _free_port(), args, out), nprocs=2, join=True)
        return

    us = poll_cost_us()
    print(
        f"attach poll: {us:.2f} us per poll when nothing changed, every 0.5 s on the "
        f"recorder thread = {us * 2 / 1e6 * 100:.5f}% of one core"
    )
    step_us = step_cost_us()
    print(
        f"light layer: {step_us:.2f} us per Collector.step() on the training thread"
        f" (= {step_us / 1e3 / 10 * 100:.3f}% of a 10 ms step; steps below are ~8 ms)"
    )
    per_entry_us, read_ms = fr_read_cost(int(os.environ["TORCH_FR_BUFFER_SIZE"]))
    print(
        f"flight recorder: {per_entry_us:.2f} us per entry to dump and decode; a read of a full "
        f"ring ({os.environ['TORCH_FR_BUFFER_SIZE']}) holds the GIL {read_ms:.1f} ms; reads come "
        f"every >= max(2 s, 100 x that) = {max(2.0, read_ms / 1000 / BUDGET):.1f} s, so <= "
        f"{read_ms / 1000 / max(2.0, read_ms / 1000 / BUDGET) * 100:.2f}% of wall time"
    )
    with tempfile.TemporaryDirectory(prefix="rankscope-bench-") as out:
        mp.spawn(_worker, args=(2, _free_port(), args, out), nprocs=2, join=True)


def compare_trees(args: argparse.Namespace) -> None:
    """Baseline and light from ``--old-src`` and from this checkout, job after job.

    Each job runs ``--reps`` interleaved repetitions of the two configurations in
    its own two processes; trees alternate job by job (old, new, new, old, ...), so
    a slow spell of the machine falls on both. Per tree: light / baseline paired by
    repetition (median over all repetitions of all its jobs), and pooled medians.
    """
    import subprocess

    trees = {"old": args.old_src.resolve(), "new": REPO / "src"}
    per_tree: dict[str, dict[str, list[list[float]]]] = {
        t: {"baseline": [], "light": []} for t in trees
    }
    for r in range(args.rounds):
        for t in list(trees) if r % 2 == 0 else list(reversed(trees)):
            with tempfile.TemporaryDirectory(prefix="rankscope-cmp-") as d:
                out = Path(d) / "results.json"
                cmd = [sys.executable, __file__, "--configs", "baseline,light"]
                cmd += ["--reps", str(args.reps), "--steps", str(args.steps)]
                cmd += ["--batch", str(args.batch), "--json-out", str(out)]
                env = dict(os.environ, **{SRC_ENV: str(trees[t])}, PYTHONPATH=str(trees[t]))
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                got = json.loads(out.read_text())
            for c in ("baseline", "light"):
                per_tree[t][c] += got[c]
            print(f"round {r}: {t} done", file=sys.stderr)
    print(
        f"\n2 ranks, gloo on CPU; per tree {args.rounds} jobs x {args.reps} interleaved "
        f"repetitions x {args.steps} steps; light / baseline"
    )
    widths = {"baseline ms": 12, "light ms": 9, "paired": 8, "median": 8, "mean": 8}
    print(f"{'tree':<5} " + " ".join(f"{h:>{w}}" for h, w in widths.items()))
    for t, res in per_tree.items():
        base = [x for rep in res["baseline"] for x in rep]
        light = [x for rep in res["light"] for x in rep]
        paired = statistics.median(
            statistics.fmean(a) / statistics.fmean(b)
            for a, b in zip(res["light"], res["baseline"], strict=True)
        )
        med = statistics.median(light) / statistics.median(base)
        mean = statistics.fmean(light) / statistics.fmean(base)
        print(
            f"{t:<5} {statistics.median(base) * 1e3:>12.3f} "
            f"{statistics.median(light) * 1e3:>9.3f} {(paired - 1) * 100:>+7.2f}% "
            f"{(med - 1) * 100:>+7.2f}% {(mean - 1) * 100:>+7.2f}%"
        )


if __name__ == "__main__":
    main()
