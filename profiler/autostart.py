"""Collection with no code change: what the ``rankscope run`` bootstrap arms in each process.

``arm_from_env()`` runs right after the job imports torch (the bootstrap's import
hook calls it). It reads the ``RANKSCOPE_*`` environment that ``rankscope run``
set and arms, without writing anything: a global optimizer step post-hook and
hooks on ``torch.distributed.init_process_group``/``destroy_process_group``. The
collector really starts (files appear) only at the first sign that this process
trains: ``init_process_group`` returning, or an optimizer step. So launchers
(torchrun's agent), DataLoader workers and compile workers, which import torch
but never do either, leave nothing behind. Step boundaries come from the
optimizer hook unless the code calls ``Collector.step()`` itself.

Environment (set by ``rankscope run``, see ``rankscope.profiler.commands.run``):
RANKSCOPE_RUN_DIR, RANKSCOPE_CONFIG (JSON of Collector keyword arguments, the
settings of ``rankscope.profiler.settings``), RANKSCOPE_COMMAND (JSON argv of the
launched command). The names live in ``settings``; this module imports the
collector, never the other way round (``collector.set_owner_lookup``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rankscope.profiler import collector as collector_module
from rankscope.profiler.collector import Collector
from rankscope.profiler.settings import (  # re-exported: the names other modules used
    ENV_ALL,
    ENV_BOOTSTRAP,
    ENV_COMMAND,
    ENV_CONFIG,
    ENV_PACKAGE_PATH,
    ENV_RUN_DIR,
    collector_kwargs,
    package_path,
)

__all__ = [
    "ENV_ALL",
    "ENV_BOOTSTRAP",
    "ENV_COMMAND",
    "ENV_CONFIG",
    "ENV_PACKAGE_PATH",
    "ENV_RUN_DIR",
    "AutoStart",
    "arm_from_env",
    "collector_for_delegates",
    "is_launcher",
    "package_path",
]

_LAUNCHER_MODULES = ("torch.distributed.run", "torch.distributed.launch")


class AutoStart:
    """Arms hooks in one process and starts its collector on the first training signal."""

    def __init__(self, run_dir: str, config: dict[str, Any], command: list[str] | None) -> None:
        self.run_dir = run_dir
        self.config = collector_kwargs(config)
        self.command = command
        self.collector: Collector | None = None
        self._starting = False
        self._failed = False
        self._pid = os.getpid()
        self._optimizer_hook: Any = None

    def arm(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        from rankscope.profiler import hooks

        hooks.install()
        hooks.on_init(self._on_dist_init)
        self._optimizer_hook = register_optimizer_step_post_hook(self._on_optimizer_step)

    def ensure_started(self) -> Collector | None:
        if os.getpid() != self._pid:
            return None  # forked child: the parent collects
        if self.collector is not None or self._starting or self._failed:
            return self.collector
        self._starting = True
        try:
            collector = Collector(
                self.run_dir,
                steps_from_optimizer=True,
                run_config={"launcher": "rankscope run"},
                command=self.command,
                **self.config,
            )
            collector._register_optimizer_hook = False  # this object's hook feeds it
            collector.start()
            self.collector = collector
        except Exception as e:
            self._failed = True
            print(f"rankscope: collector not started: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            self._starting = False
        return self.collector

    def _on_dist_init(self) -> None:
        self.ensure_started()

    def _on_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            collector = self.ensure_started()
            if collector is not None:
                collector._on_optimizer_step(optimizer, caller=sys._getframe(1))
        except Exception:
            pass  # the collector reports its own faults; the optimizer step stands


_armed: AutoStart | None = None


def collector_for_delegates() -> Collector | None:
    """The rankscope-run collector of this process, started now if armed; else None."""
    if _armed is None or _armed._starting:
        return None
    return _armed.ensure_started()


# A Collector the job makes itself asks this first (the dependency runs one way:
# autostart knows the collector, the collector only this callback).
collector_module.set_owner_lookup(collector_for_delegates)


def is_launcher(argv: list[str]) -> bool:
    """torchrun / ``python -m torch.distributed.run`` itself: it starts workers, never trains."""
    if not argv:
        return False
    if os.path.basename(argv[0]).startswith("torchrun"):
        return True
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1] in _LAUNCHER_MODULES:
            return True
    # A console-script shim runs as `python /path/bin/torchrun ...`.
    return len(argv) > 1 and os.path.basename(argv[1]).startswith("torchrun")


def arm_from_env() -> AutoStart | None:
    """Arm this process if ``rankscope run`` asked for it and it may be a worker."""
    global _armed
    if _armed is not None:
        return _armed
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir or is_launcher(list(getattr(sys, "orig_argv", sys.argv))):
        return None
    try:
        config = json.loads(os.environ.get(ENV_CONFIG) or "{}")
        command = json.loads(os.environ[ENV_COMMAND]) if os.environ.get(ENV_COMMAND) else None
        auto = AutoStart(run_dir, config if isinstance(config, dict) else {}, command)
        auto.arm()
        _armed = auto
    except Exception as e:
        print(
            f"rankscope: not collecting in this process: {type(e).__name__}: {e}", file=sys.stderr
        )
        return None
    return auto
