"""What one profiler window costs the training thread, phase by phase.

One process trains a small MLP (CPU, or ``--device cuda``) and takes
``--windows`` profiler windows of 3 recorded steps (1 warm-up step before each),
``--gap`` steps apart, in two configurations run one after the other in the
same process:

- ``torch.profiler``: torch.profiler alone with the same schedule, the usual way
  (``tensorboard_trace_handler(use_gzip=True)``: the trace is written and gzipped
  inside the step at whose start the window ends);
- ``collector``: ``rankscope.Collector`` with the same windows (``profile_steps``),
  light layer on (step timer, DataLoader timer, telemetry thread).

Every step is timed on the training thread. A phase's cost is its steps' time
beyond the median step outside every window (the steps before the first window
and between windows, the export's tail excluded), summed over the phase's steps,
median over windows:

- ``start``: the warm-up step (the profiler starts at its beginning);
- ``window``: the 3 recorded steps;
- ``stop``: the step at whose start the profiler stops (stop/flush, then
  torch.profiler's inline export, or the collector's hand-off to its thread);
- ``export``: the steps after that while the collector's export thread runs
  (torch.profiler alone exports inside ``stop``: none).

The collector's own work is also timed directly, wall and thread CPU time (the
CPU figure holds up on a loaded machine): the stop on the training thread
(``_close_window``: torch's stop and the hand-off) and the export thread. With
``--ops`` the step has more ops and the trace grows (a larger trace makes stop
and export cost more).

    python benchmarks/bench_window.py                       # ~1 minute on 2 loaded cores
    python benchmarks/bench_window.py --device cuda         # a GPU (~30 s on an H200)
    python benchmarks/bench_window.py --ops 400 --windows 3 # a larger trace
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # rankscope, uninstalled

PHASES = ("start", "window", "stop", "export")
DIRECT = ("stop wall", "stop cpu", "export wall", "export cpu")
WARMUP = 1
ACTIVE = 3


def _model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(args.ops):
        layers += [nn.Linear(args.width, args.width), nn.ReLU()]
    model = nn.Sequential(*layers).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, args.width, device=args.device)
    return model, opt, x


def _train_step(model: Any, opt: Any, x: Any, sync: bool) -> None:
    import torch

    opt.zero_grad(set_to_none=True)
    loss = model(x).square().mean()
    loss.backward()
    opt.step()
    if sync:
        torch.cuda.synchronize()


def _schedule(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(warm-up step, first recorded step, last recorded step) per window."""
    out = []
    for k in range(args.windows):
        first = args.first + k * args.gap
        out.append((first - WARMUP, first, first + ACTIVE - 1))
    return out


def _run_torch(args: argparse.Namespace, out: Path) -> tuple[list[float], list[int]]:
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    model, opt, x = _model(args)
    windows = _schedule(args)
    activities = [ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sched = schedule(
        wait=args.gap - WARMUP - ACTIVE,
        warmup=WARMUP,
        active=ACTIVE,
        repeat=len(windows),
        skip_first=windows[0][0] - (args.gap - WARMUP - ACTIVE),
    )
    times = []
    with profile(
        activities=activities,
        schedule=sched,
        on_trace_ready=tensorboard_trace_handler(str(out / "tb"), use_gzip=True),
        record_shapes=args.record_shapes,
        with_stack=args.with_stack,
    ) as prof:
        last = time.perf_counter()
        for _ in range(args.steps):
            _train_step(model, opt, x, args.device == "cuda")
            # Timed like the collector's step records: the clock is read before the
            # boundary, so what the boundary does (window edges) counts in the next step.
            now = time.perf_counter()
            times.append((now - last) * 1e3)
            last = now
            prof.step()
    del torch
    return times, [0] * len(times)


def _run_collector(
    args: argparse.Namespace, out: Path, direct: dict[str, list[float]]
) -> tuple[list[float], list[int]]:
    from rankscope import Collector
    from rankscope.profiler import export

    model, opt, x = _model(args)
    windows = _schedule(args)
    spec = ",".join(f"{a}-{b}" for _, a, b in windows)
    times = []
    exporting = []
    col = Collector(
        out / "run",
        profile_steps=spec,
        record_shapes=args.record_shapes,
        with_stack=args.with_stack,
        nvml_period_ms=100.0,
        control_period_s=0.5,
    )
    original_close, original_export = col._close_window, export.export_window

    def timed_close() -> None:
        t, c = time.perf_counter(), time.thread_time()
        original_close()
        direct["stop wall"].append((time.perf_counter() - t) * 1e3)
        direct["stop cpu"].append((time.thread_time() - c) * 1e3)

    def timed_export(*a: Any, **k: Any) -> dict[str, Any]:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return original_export(*a, **k)
        finally:
            direct["export wall"].append((time.perf_counter() - t) * 1e3)
            direct["export cpu"].append((time.thread_time() - c) * 1e3)

    col._close_window = timed_close  # type: ignore[method-assign]
    export.export_window = timed_export
    with col:
        last = time.perf_counter()
        for _ in range(args.steps):
            _train_step(model, opt, x, args.device == "cuda")
            now = time.perf_counter()
            times.append((now - last) * 1e3)
            last = now
            exporting.append(int(any(t.is_alive() for t in col._exports)))
            col.step()
    export.export_window = original_export
    return times, exporting


def _phases(
    times: list[float], exporting: list[int], args: argparse.Namespace
) -> tuple[dict[str, list[float]], float]:
    """Per phase, the excess over the quiet median at each window; and that median."""
    windows = _schedule(args)
    # times[i] is step i, from just before the boundary that begins it to just before
    # the one that ends it: step i's time includes what its start (a window edge) cost.
    touched: dict[int, str] = {}
    for begin, first, last in windows:
        touched[begin] = "start"
        for s in range(first, last + 1):
            touched[s] = "window"
        touched[last + 1] = "stop"
        s = last + 2
        # exporting[s - 1]: the export thread was alive as step s began (ran beside it).
        while s < len(times) and exporting[s - 1]:
            touched[s] = "export"
            s += 1
    quiet = [t for i, t in enumerate(times) if i >= args.skip and i not in touched]
    base = statistics.median(quiet)
    out: dict[str, list[float]] = {p: [] for p in PHASES}
    for begin, _first, last in windows:
        span = [s for s in touched if begin <= s < (last + 1 + args.gap - ACTIVE - WARMUP)]
        per = {p: 0.0 for p in PHASES}
        for s in span:
            if s < len(times):
                per[touched[s]] += times[s] - base
        for p in PHASES:
            out[p].append(per[p])
    return out, base


def _merge(
    results: dict[str, tuple[dict[str, list[float]], float]],
    name: str,
    new: tuple[dict[str, list[float]], float],
) -> None:
    """Pool each round's windows; the quiet step is the median of the rounds' (smallest kept)."""
    if name not in results:
        results[name] = new
        return
    per, base = results[name]
    for p in PHASES:
        per[p].extend(new[0][p])
    results[name] = (per, min(base, new[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ops", type=int, default=60, help="linear layers per step")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--gap", type=int, default=20, help="steps from one window to the next")
    ap.add_argument("--first", type=int, default=20, help="the first window's first step")
    ap.add_argument("--skip", type=int, default=10, help="untimed start-up steps")
    ap.add_argument("--record-shapes", action="store_true")
    ap.add_argument("--with-stack", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="each configuration, alternated")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU only)")
    ap.add_argument("--only", choices=("torch", "collector"), default=None)
    args = ap.parse_args()
    args.steps = args.first + args.windows * args.gap + 5
    if args.device == "cuda":
        import torch

        torch.cuda.init()
    else:
        import torch

        torch.set_num_threads(args.threads)
    results: dict[str, tuple[dict[str, list[float]], float]] = {}
    direct: dict[str, list[float]] = {k: [] for k in DIRECT}
    sizes: list[int] = []
    for _ in range(args.rounds):  # alternated, so a change in machine load hits both
        with tempfile.TemporaryDirectory(prefix="bench_window_") as tmp:
            out = Path(tmp)
            if args.only in (None, "torch"):
                times, exporting = _run_torch(args, out)
                _merge(results, "torch.profiler alone", _phases(times, exporting, args))
            if args.only in (None, "collector"):
                times, exporting = _run_collector(args, out, direct)
                _merge(results, "collector", _phases(times, exporting, args))
                sizes += [p.stat().st_size for p in (out / "run").glob("*.pt.trace.json.gz")]
    extra = ""
    if direct["stop wall"]:
        m = {k: statistics.median(v) for k, v in direct.items() if v}
        extra = (
            f"collector, timed directly (median): stop on the training thread "
            f"{m['stop wall']:.1f} ms wall / {m['stop cpu']:.1f} ms CPU; export thread "
            f"{m.get('export wall', 0):.1f} ms wall / {m.get('export cpu', 0):.1f} ms CPU"
        )
    if sizes:
        extra += f"; trace {statistics.median(sizes) / 1e6:.2f} MB gzipped"
    print(
        f"device {args.device}, {args.ops} linear layers of {args.width}, batch {args.batch}, "
        f"{args.windows} windows of {ACTIVE} steps (+{WARMUP} warm-up), record_shapes "
        f"{args.record_shapes}, with_stack {args.with_stack}, threads {threading.active_count()}"
    )
    print("| configuration | quiet step | start | window (3 steps) | stop | export | total |")
    print("|---|---|---|---|---|---|---|")
    for name, (per, base) in results.items():
        cells = [f"{statistics.median(per[p]):+.1f}" for p in PHASES]
        total = statistics.median([sum(v) for v in zip(*(per[p] for p in PHASES), strict=True)])
        print(f"| {name} | {base:.1f} ms | " + " | ".join(cells) + f" | {total:+.1f} |")
    print("(ms beyond the quiet step, summed over the phase's steps, median over windows)")
    if extra:
        print(extra)


if __name__ == "__main__":
    main()
