"""What the framework callbacks cost a training step, on the training thread.

Times the hook calls one training step makes, in a tight loop with no training
around them, so the figure is the callbacks' own cost per step (the collector's
background threads run beside it as in a job: telemetry every 100 ms, the attach
poll every 0.5 s):

- ``Collector.step()``: the collector alone, the floor;
- ``transformers``: ``RankscopeCallback.on_step_begin`` + ``on_step_end``;
- ``transformers, empty``: the same two calls on a bare ``TrainerCallback`` (what any
  callback costs: the call itself);
- ``lightning``: ``RankscopeCallback.on_train_batch_start`` + ``on_train_batch_end``
  with ``trainer.global_step`` moving every step.

Each configuration runs ``--steps`` steps after 1,000 untimed ones, ``--repeat``
times interleaved; the median per-step time of the repetitions is printed in
microseconds. One process, no process group (the hooks do the same either way).

    python benchmarks/bench_callbacks.py            # ~20 s on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # rankscope, uninstalled

SETTINGS: dict[str, Any] = {"profile_steps": "off", "nvml_period_ms": 100}


def collector_step(run: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    from rankscope import Collector

    col = Collector(run, **SETTINGS).start()
    return col.step, col.stop


def transformers_hooks(run: Path, empty: bool = False) -> tuple[Callable[[], None], Any]:
    from transformers import TrainerCallback

    from rankscope.integrations.transformers import RankscopeCallback

    cb = TrainerCallback() if empty else RankscopeCallback(run, **SETTINGS)
    args = state = control = None
    cb.on_train_begin(args, state, control)

    def step() -> None:
        cb.on_step_begin(args, state, control)
        cb.on_step_end(args, state, control)

    return step, lambda: cb.on_train_end(args, state, control)


def lightning_hooks(run: Path) -> tuple[Callable[[], None], Any]:
    from rankscope.integrations.lightning import RankscopeCallback

    cb = RankscopeCallback(run, **SETTINGS)
    trainer = SimpleNamespace(global_step=0)
    cb.on_train_start(trainer, None)

    def step() -> None:
        cb.on_train_batch_start(trainer, None, None, 0)
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, None, None, None, 0)

    return step, lambda: cb.on_train_end(trainer, None)


CONFIGS: dict[str, Callable[[Path], tuple[Callable[[], None], Any]]] = {
    "Collector.step()": collector_step,
    "transformers": transformers_hooks,
    "transformers, empty": lambda run: transformers_hooks(run, empty=True),
    "lightning": lightning_hooks,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for name, make in CONFIGS.items():
                step, stop = make(Path(tmp) / f"{r}-{len(times[name])}-{name[:5]}")
                for _ in range(1000):
                    step()
                t0 = time.perf_counter_ns()
                for _ in range(args.steps):
                    step()
                times[name].append((time.perf_counter_ns() - t0) / args.steps / 1000)
                stop()
    print(f"{args.steps} steps x {args.repeat} repetitions; median per step (min-max):")
    for name, values in times.items():
        print(
            f"  {name:22s} {statistics.median(values):7.2f} us"
            f"  ({min(values):.2f}-{max(values):.2f})"
        )


if __name__ == "__main__":
    main()
