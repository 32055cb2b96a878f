"""The light layer's own cost in CPU time and wake-ups: a measure noise hardly moves.

The same 2-rank gloo CPU job as ``bench_overhead.py`` (~9 ms steps, both ranks
keeping both cores of a 2-core machine busy). Each repetition runs a block of
``--steps`` steps with no collector and one with the default light layer
(telemetry every 100 ms, attach poll and heartbeat, progress watch, collective
log, DataLoader timer), in alternating order. In the light block, after the
collector has settled, each rank reads for every thread of the process

- its CPU time and its counts of voluntary context switches ("sleeps": each is a
  wake-up, the thread slept on a timer, an event, I/O or the GIL and was woken)
  and of involuntary ones ("preempted") from ``/proc/self/task/TID/schedstat``
  and ``.../status``, keyed by the Python thread's name;

and times each of the collector's duties with ``time.thread_time_ns`` on the
thread that runs it (wrapping the bound methods of the running collector:
telemetry sample, attach poll + heartbeat, flush, flight-recorder read,
progress tick), plus ``Collector.step()`` on the training thread and, from a
micro-benchmark, the DataLoader timer's cost per batch. The flight recorder's
dump is one C call that holds the GIL: its time per read is the GIL hold.

Shares are of the training thread's own CPU time over the same steps (what the
collector's CPU could have taken from it on a machine with no core to spare),
summed over both ranks and all repetitions. Wall time per step (light vs none)
is printed too, paired by repetition, but on a shared machine it is the noisy
figure; CPU time and wake-up counts are not.

With ``--old-src OLD/src`` (``git archive COMMIT | tar -x -C OLD``) the same
job runs from that tree too, interleaved with this checkout's, and both tables
print side by side.

    python benchmarks/bench_collector_cpu.py                     # ~1 minute per tree
    python benchmarks/bench_collector_cpu.py --old-src /tmp/perf-old/src --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC_ENV = "RANKSCOPE_BENCH_SRC"
sys.path.insert(0, os.environ.get(SRC_ENV) or str(REPO / "src"))  # rankscope, uninstalled

SETTLE_STEPS = 20  # untimed steps after the collector starts (its threads start up)
_SWITCHES = re.compile(rb"^(voluntary|nonvoluntary)_ctxt_switches:\s+(\d+)", re.M)

# (label, thread, how to find the object, method name); absent ones are skipped.
DUTIES: tuple[tuple[str, str, str, str], ...] = (
    ("telemetry sample", "recorder", "sampler", "sample"),
    ("attach poll + heartbeat", "recorder", "control", "tick"),
    ("flush (steps, manifest, acks)", "recorder", "recorder", "_flush"),
    ("flight-recorder read", "recorder", "collectives", "poll"),
    ("progress tick (+ progress.json)", "progress", "progress", "tick"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def thread_stats() -> dict[str, tuple[int, int, int]]:
    """``{thread name: (cpu_ns, voluntary, involuntary switches)}`` of this process's threads.

    Python threads by their ``threading`` name (a trailing ``-R`` rank dropped),
    the main thread as ``training``, the others (torch, gloo) summed as ``other``.
    """
    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for tid_text in os.listdir("/proc/self/task"):
        tid = int(tid_text)
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                cpu = int(f.read().split()[0])
            with open(f"/proc/self/task/{tid}/status", "rb") as f:
                switches = dict(_SWITCHES.findall(f.read()))
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        if tid == main:
            name = "training"
        elif tid in names:
            name = re.sub(r"-\d+$", "", names[tid])
        else:
            name = "other"
        row = out[name]
        row[0] += cpu
        row[1] += int(switches.get(b"voluntary", 0))
        row[2] += int(switches.get(b"nonvoluntary", 0))
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def _instrument(col: Any) -> dict[str, list[int]]:
    """Wrap each duty of the running collector ``col``: label -> [cpu_ns, calls]."""
    recorder = getattr(col, "_recorder", None)
    owners = {
        "recorder": recorder,
        "sampler": getattr(recorder, "sampler", None),
        "control": getattr(col, "_control", None),
        "collectives": getattr(recorder, "collectives", None),
        "progress": getattr(col, "_progress", None),
    }
    acc: dict[str, list[int]] = {}
    for label, _thread, owner_name, method in DUTIES:
        owner = owners[owner_name]
        fn = getattr(owner, method, None) if owner is not None else None
        if fn is None:
            continue
        acc[label] = cell = [0, 0]

        def wrapped(*a: Any, _fn: Callable[..., Any] = fn, _c: list[int] = cell, **k: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return _fn(*a, **k)
            finally:
                _c[0] += time.thread_time_ns() - t0
                _c[1] += 1

        setattr(owner, method, wrapped)
    return acc


def _fr_counters(col: Any) -> tuple[float, int, int, int, int]:
    """Flight recorder: (dump seconds, reads, entries dumped, entries written, dropped)."""
    fr = getattr(getattr(col, "_recorder", None), "collectives", None)
    if fr is None:
        return 0.0, 0, 0, 0, 0
    return (
        float(fr.dump_s),
        int(fr.polls),
        int(fr.dumped_entries),
        int(fr.entries_written),
        int(fr.dropped),
    )


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from rankscope import Collector

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.manual_seed(rank)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    dataset = TensorDataset(torch.randn(args.batch * 64, 256))

    def batches() -> Any:
        while True:
            yield from DataLoader(dataset, batch_size=args.batch)

    data = batches()

    def train_step() -> None:
        (x,) = next(data)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(SETTLE_STEPS):
        train_step()
    blocks: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for config in ("none", "light") if rep % 2 == 0 else ("light", "none"):
            dist.barrier()
            if config == "none":
                cpu0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                for _ in range(args.steps):
                    train_step()
                cpu1, t1 = time.thread_time_ns(), time.perf_counter_ns()
                blocks.append(
                    {"config": config, "rep": rep, "wall_ns": t1 - t0, "train_cpu_ns": cpu1 - cpu0}
                )
                continue
            with Collector(Path(out) / f"light{rep}", nvml_period_ms=100) as col:
                for _ in range(SETTLE_STEPS):
                    train_step()
                    col.step()
                acc = _instrument(col)
                fr0 = _fr_counters(col)
                before = thread_stats()
                step_ns = 0
                cpu0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                for _ in range(args.steps):
                    train_step()
                    s0 = time.thread_time_ns()
                    col.step()
                    step_ns += time.thread_time_ns() - s0
                cpu1, t1 = time.thread_time_ns(), time.perf_counter_ns()
                after = thread_stats()
                fr1 = _fr_counters(col)
                duties = {k: list(v) for k, v in acc.items()}  # not the final read at stop
            threads = {
                name: [a - b for a, b in zip(after[name], before.get(name, (0, 0, 0)), strict=True)]
                for name in after
            }
            blocks.append(
                {
                    "config": config,
                    "rep": rep,
                    "wall_ns": t1 - t0,
                    "train_cpu_ns": cpu1 - cpu0,
                    "step_call_ns": step_ns,
                    "duties": duties,
                    "threads": threads,
                    "fr": [a - b for a, b in zip(fr1, fr0, strict=True)],
                }
            )
    Path(out, f"rank{rank}.json").write_text(json.dumps(blocks))
    dist.barrier()
    dist.destroy_process_group()


def datawait_cost_ns(n: int = 200_000) -> float:
    """Nanoseconds the DataLoader timer adds to one ``__next__`` (wrapped minus bare)."""
    import torch
    from torch.utils.data import dataloader

    from rankscope.profiler import datawait

    cls = dataloader._BaseDataLoaderIter
    original = cls.__next__
    try:
        cls.__next__ = lambda self: None  # type: ignore[method-assign,assignment]
        bare = cls.__next__
        installed = datawait._installed
        datawait._installed = False
        datawait.install(torch)
        wrapped = cls.__next__
        it = object.__new__(cls)
        best = {}
        for name, fn in (("bare", bare), ("wrapped", wrapped)):
            times = []
            for _ in range(5):
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    fn(it)
                times.append((time.perf_counter_ns() - t0) / n)
            best[name] = min(times)
        return max(0.0, best["wrapped"] - best["bare"])
    finally:
        cls.__next__ = original  # type: ignore[method-assign]
        datawait._installed = installed
        datawait.take()


def run_job(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The job, in this process (``--job``): each rank's blocks."""
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from rankscope.profiler.collectives import DEFAULT_BUFFER

    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", str(DEFAULT_BUFFER))
    with tempfile.TemporaryDirectory(prefix="rankscope-cpu-") as out:
        mp.spawn(_worker, args=(2, _free_port(), args, out), nprocs=2, join=True)
        return [
            {**b, "rank": r}
            for r in range(2)
            for b in json.loads(Path(out, f"rank{r}.json").read_text())
        ]


def summarise(blocks: list[dict[str, Any]], data_ns: float, steps: int) -> dict[str, Any]:
    """Per-duty and per-thread totals over every light block of both ranks."""
    light = [b for b in blocks if b["config"] == "light"]
    none = [b for b in blocks if b["config"] == "none"]
    train_cpu = sum(b["train_cpu_ns"] for b in light)
    wall = sum(b["wall_ns"] for b in light)  # rank-seconds
    n_steps = steps * len(light)
    duties: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for b in light:
        for label, (ns, calls) in b["duties"].items():
            duties[label][0] += ns
            duties[label][1] += calls
    duties["Collector.step() (training thread)"] = [
        sum(b["step_call_ns"] for b in light),
        float(n_steps),
    ]
    duties["DataLoader timer (training thread)"] = [data_ns * n_steps, float(n_steps)]
    threads: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for b in light:
        for name, vals in b["threads"].items():
            for i, v in enumerate(vals):
                threads[name][i] += v
    fr = [sum(b["fr"][i] for b in light) for i in range(5)]
    # Wall per step, paired: each repetition's two blocks ran back to back.
    ratios = []
    for rep in {b["rep"] for b in blocks}:
        for rank in (0, 1):
            a = [b["wall_ns"] for b in light if b["rep"] == rep and b["rank"] == rank]
            z = [b["wall_ns"] for b in none if b["rep"] == rep and b["rank"] == rank]
            if a and z:
                ratios.append(a[0] / z[0])
    none_cpu_step = sum(b["train_cpu_ns"] for b in none) / max(1, steps * len(none))
    return {
        "train_cpu_ns": train_cpu,
        "wall_ns": wall,
        "steps": n_steps,
        "duties": dict(duties),
        "threads": dict(threads),
        "fr": fr,
        "paired_wall": statistics.median(ratios) - 1 if ratios else None,
        "train_cpu_per_step_light": train_cpu / max(1, n_steps),
        "train_cpu_per_step_none": none_cpu_step,
        "wall_per_step_light": wall / max(1, n_steps),
        "wall_per_step_none": sum(b["wall_ns"] for b in none) / max(1, steps * len(none)),
    }


def _pct(ns: float, of: float) -> str:
    return f"{100 * ns / of:.3f}%" if of else "-"


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    trees = list(results)
    head = " | ".join(f"{t}: CPU share | {t}: calls/s" for t in trees)
    print(f"\n| duty | {head} |")
    print("|---|" + "---|---|" * len(trees))
    labels: list[str] = []
    for s in results.values():
        labels += [k for k in s["duties"] if k not in labels]
    totals = {t: 0.0 for t in trees}
    for label in labels:
        cells = []
        for t in trees:
            s = results[t]
            ns, calls = s["duties"].get(label, (0.0, 0.0))
            totals[t] += ns
            rate = calls / (s["wall_ns"] / 1e9) if s["wall_ns"] else 0.0
            cells.append(f"{_pct(ns, s['train_cpu_ns'])} | {rate:.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        "| all duties | "
        + " | ".join(f"{_pct(totals[t], results[t]['train_cpu_ns'])} | " for t in trees)
        + " |"
    )
    head = " | ".join(f"{t}: CPU share | {t}: sleeps/s | {t}: preempted/s" for t in trees)
    print(f"\n| thread | {head} |")
    print("|---|" + "---|---|---|" * len(trees))
    names: list[str] = []
    for s in results.values():
        names += [k for k in s["threads"] if k not in names]
    bg = {t: 0.0 for t in trees}
    for name in sorted(names, key=lambda n: (n != "training", n == "other", n)):
        cells = []
        for t in trees:
            s = results[t]
            cpu, vol, invol = s["threads"].get(name, (0.0, 0.0, 0.0))
            secs = s["wall_ns"] / 1e9
            if name.startswith("rankscope"):
                bg[t] += cpu
            cells.append(f"{_pct(cpu, s['train_cpu_ns'])} | {vol / secs:.1f} | {invol / secs:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        "| rankscope threads | "
        + " | ".join(f"{_pct(bg[t], results[t]['train_cpu_ns'])} | | " for t in trees)
        + " |"
    )
    print()
    for t in trees:
        s = results[t]
        dump_s, polls, entries, written, dropped = s["fr"]
        on_training = sum(
            ns for k, (ns, _) in s["duties"].items() if k.endswith("(training thread)")
        )
        print(
            f"{t}: collector CPU (rankscope threads + training-thread calls) = "
            f"{_pct(bg[t] + on_training, s['train_cpu_ns'])} of the training thread's CPU; "
            f"flight recorder: {polls} reads in {s['wall_ns'] / 1e9:.0f} rank-s, "
            + (
                f"{1e3 * dump_s / polls:.1f} ms GIL hold per read ({entries / polls:.0f} entries), "
                f"{written} entries written, {dropped} dropped; "
                if polls
                else ""
            )
            + f"training thread CPU per step {s['train_cpu_per_step_none'] / 1e6:.3f} ms "
            f"without, {s['train_cpu_per_step_light'] / 1e6:.3f} ms with; wall per step "
            f"{s['wall_per_step_none'] / 1e6:.3f} / {s['wall_per_step_light'] / 1e6:.3f} ms, "
            f"paired {100 * (s['paired_wall'] or 0):+.2f}% (noisy)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="repetitions per job")
    parser.add_argument("--steps", type=int, default=1500, help="steps per block (~9 ms each)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--old-src", type=Path, help="src/ of an older checkout, run alongside")
    parser.add_argument("--rounds", type=int, default=1, help="jobs per tree, interleaved")
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps({"blocks": run_job(args), "data_ns": datawait_cost_ns()}))
        return
    trees = {"new": REPO / "src"}
    if args.old_src is not None:
        trees = {"old": args.old_src.resolve(), **trees}
    collected: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    data_ns: dict[str, list[float]] = {t: [] for t in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for t in order:
            env = dict(os.environ, **{SRC_ENV: str(trees[t])}, PYTHONPATH=str(trees[t]))
            cmd = [sys.executable, __file__, "--job", "--reps", str(args.reps)]
            cmd += ["--steps", str(args.steps), "--batch", str(args.batch)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{t}: the job failed:\n{done.stderr[-3000:]}")
            got = json.loads(done.stdout.strip().splitlines()[-1])
            collected[t] += got["blocks"]
            data_ns[t].append(got["data_ns"])
            print(f"round {r} {t}: done", file=sys.stderr)
    results = {t: summarise(collected[t], statistics.median(data_ns[t]), args.steps) for t in trees}
    print(
        f"2 ranks, gloo on CPU, {args.rounds} job(s) per tree x {args.reps} repetitions "
        f"x {args.steps} steps per block; shares of the training thread's CPU time"
    )
    print_tables(results)


if __name__ == "__main__":
    main()
