"""``rankscope run``: collect from an unmodified training command.

Sets the RANKSCOPE_* environment and prepends ``profiler/bootstrap`` (a
``sitecustomize``) to PYTHONPATH, runs the command, passes its exit code
through, then records the exit code and end time in ``run.json``.

The light layer needs PyTorch's flight recorder to keep a ring of collectives:
unless the environment already sets ``TORCH_FR_BUFFER_SIZE`` or
``TORCH_NCCL_TRACE_BUFFER_SIZE``, ``TORCH_FR_BUFFER_SIZE`` is set to
``collectives.DEFAULT_BUFFER`` (``--no-collectives`` leaves it alone).
``--metrics-port P`` starts ``rankscope metrics RUN --port P`` beside the job
(``rankscope.profiler.exporter``; a port in use is a warning, never an error).
``--nccl-timing`` sets ``TORCH_NCCL_ENABLE_TIMING=1`` (NCCL's GPU duration per
collective, at the cost of two CUDA events per collective; off by default).
The collector flags, their defaults and environment variables come from
``rankscope.profiler.settings`` (a variable sets its flag's default).

SIGHUP, SIGINT, SIGTERM and SIGQUIT sent to ``rankscope run`` go to the command
(as torchrun forwards them to its workers) and ``rankscope run`` waits for it,
so a closed terminal or a scheduler's SIGTERM still leaves ``exit_code`` in
``run.json``. Temporary files an earlier, killed job left (hidden partial
exports, ``.*.tmp`` from atomic writes) are removed before the command starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rankscope.profiler import exporter, rundir, settings
from rankscope.profiler.collectives import DEFAULT_BUFFER
from rankscope.profiler.errors import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    RankscopeError,
    one_line,
)
from rankscope.profiler.placement import nodes_of
from rankscope.profiler.schedule import parse_profile_steps

DEFAULT_PROFILE = settings.BY_NAME["profile_steps"].run_default
BOOTSTRAP_DIR = Path(__file__).resolve().parent.parent / "bootstrap"


def bootstrap_env(
    run_dir: Path,
    config: dict[str, Any],
    command: list[str],
    base: dict[str, str] | None = None,
    *,
    nccl_timing: bool = False,
) -> dict[str, str]:
    """The environment that makes every Python process of ``command`` load the collector."""
    env = dict(os.environ if base is None else base)
    if config.get("collectives", True) and not (
        env.get("TORCH_FR_BUFFER_SIZE") or env.get("TORCH_NCCL_TRACE_BUFFER_SIZE")
    ):
        env["TORCH_FR_BUFFER_SIZE"] = str(DEFAULT_BUFFER)
    if nccl_timing:
        env["TORCH_NCCL_ENABLE_TIMING"] = "1"
    env[settings.ENV_RUN_DIR] = str(run_dir)
    env[settings.ENV_CONFIG] = json.dumps(settings.collector_kwargs(config))
    env[settings.ENV_COMMAND] = json.dumps(command)
    env[settings.ENV_BOOTSTRAP] = str(BOOTSTRAP_DIR)
    env[settings.ENV_PACKAGE_PATH] = settings.package_path()
    env["RANKSCOPE_RUN_ID"] = uuid.uuid4().hex
    old = env.get("PYTHONPATH", "")
    parts = [p for p in old.split(os.pathsep) if p and p != str(BOOTSTRAP_DIR)]
    env["PYTHONPATH"] = os.pathsep.join([str(BOOTSTRAP_DIR), *parts])
    return env


FORWARDED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT")
    if hasattr(signal, name)
)
# What an interrupted write leaves: write_json_atomic's ".NAME.XXXX.tmp", the
# control channel's ".NAME.PID.N.tmp" and export's ".rankR.stepA-B.pt.trace.json.gz.PID.*".
_TEMP_PATTERNS = (".*.tmp", ".rank*.pt.trace.json.gz.*")


def clear_temp_files(run_dir: Path) -> list[Path]:
    """Remove the hidden temporary files of interrupted writes; return what was removed."""
    removed = []
    for folder in (run_dir, rundir.control_dir(run_dir)):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for pattern in _TEMP_PATTERNS:
            for p in folder.glob(pattern):
                if p.is_symlink() or p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()
                        removed.append(p)
    return removed


def _clear_previous_run(run_dir: Path) -> None:
    for pattern in (
        "rank*.meta.json",
        "rank*.steps.jsonl",
        "rank*.collectives.jsonl",
        "rank*.telemetry.jsonl",
        "rank*.pt.trace.json.gz",
        "rank*.log",
        rundir.RUN_MANIFEST,
        # A request left from the earlier job must not reach the new one's ranks.
        f"{rundir.CONTROL_DIR}/{rundir.REQUEST_FILE}",
        f"{rundir.CONTROL_DIR}/rank*.ack.json",
        f"{rundir.CONTROL_DIR}/rank*.heartbeat.json",
    ):
        for p in run_dir.glob(pattern):
            p.unlink()
    # The earlier job's restarted attempts (attempt0/, ...): run directories of its own.
    for _, folder in rundir.attempt_dirs(run_dir):
        for p in folder.iterdir():
            if (
                p.name == rundir.RUN_MANIFEST or rundir.rank_from_filename(p.name) is not None
            ) and (p.is_file() or p.is_symlink()):
                p.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()  # kept if it holds anything rankscope did not write
    clear_temp_files(run_dir)


class RunCommand:
    """Run a training command with the collector in every rank (no code change).

    Every Python process the command starts loads rankscope's bootstrap; each
    torch.distributed worker (torchrun, python -m torch.distributed.run, srun's
    tasks or plain python) records step times from its optimizer, GPU telemetry,
    and one torch.profiler window, into the run directory. The command's exit code is
    passed through. Steps are counted between optimizer steps: step 0 runs from
    the end of the first optimizer.step() to the end of the second, so the default
    window 5-7 covers the 7th to 9th training iterations.

    examples:
      rankscope run --out runs/exp1 -- torchrun --nproc-per-node 4 train.py
      rankscope run --out runs/exp2 --profile 20-22 -- python train.py --epochs 1
      rankscope run --out runs/exp3 --profile off -- torchrun ... train.py
      rankscope run --out runs/exp4 --profile off --auto-capture -- torchrun ... train.py
      rankscope run --out /shared/runs/exp5 -- srun python train.py   # Slurm: once, outside srun

    The light layer (always on) also records each step's DataLoader wait and
    every collective's arrival (PyTorch's flight recorder). --auto-capture lets
    the job take a profiler window by itself when its steps turn slow (3 steps
    in a row 50% and 5 ms over the median of the 50 before; at most 3 windows an
    hour, 5 minutes apart).
    """

    name = "run"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
        # Every collector setting with a flag, from the one registry (profiler.settings).
        self._env_problem: str | None = None
        try:
            settings.add_flags(parser, os.environ)
        except ValueError as e:
            # Reported by run(): building the parser must never end in a traceback.
            self._env_problem = str(e)
            settings.add_flags(parser, {})
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the collector files of an earlier run in DIR",
        )
        parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")

    def run(self, args: argparse.Namespace) -> int:
        command = list(args.cmd)
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            raise RankscopeError("no command to run: rankscope run --out DIR -- COMMAND ...")
        if getattr(self, "_env_problem", None):
            raise RankscopeError(f"{self._env_problem}")
        config = settings.config_from_args(args)
        if config["nvml_period_ms"] < 0:
            raise RankscopeError("--nvml-period-ms must be 0 (off) or positive")
        plan = parse_profile_steps(config["profile_steps"])
        run_dir = Path(args.out).absolute()
        if run_dir.exists() and not run_dir.is_dir():
            raise RankscopeError(f"--out {args.out} is a file, not a directory")
        if rundir.is_run_dir(run_dir):
            if not args.overwrite:
                raise RankscopeError(
                    f"{args.out} already holds a run; choose another --out or pass --overwrite"
                )
            _clear_previous_run(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RankscopeError(f"cannot create {args.out}: {e.strerror}", EXIT_ENVIRONMENT) from e
        problem = rundir.control_dir_problem(run_dir)
        if problem is not None:
            raise RankscopeError(f"{args.out}: {problem}")
        clear_temp_files(run_dir)

        config["profile_steps"] = None if plan.empty else plan.spec
        nccl_timing = bool(config.pop("nccl_timing"))
        # Served from this process's side (it outlives the ranks), never by a rank.
        metrics_port = config.pop("metrics_port")
        env = bootstrap_env(run_dir, config, command, nccl_timing=nccl_timing)
        start_ns = time.time_ns()
        forwarder = SignalForwarder()
        previous = {s: signal.signal(s, forwarder) for s in FORWARDED_SIGNALS}
        metrics = None
        try:
            if metrics_port is not None:
                metrics = exporter.start(
                    run_dir,
                    metrics_port,
                    lambda text: print(
                        f"rankscope run: warning: {one_line(text)}", file=sys.stderr
                    ),
                    who="rankscope run",
                )
            try:
                child = subprocess.Popen(command, env=env)
            except FileNotFoundError as e:
                raise RankscopeError(f"command not found: {command[0]}", EXIT_BAD_INPUT) from e
            except PermissionError as e:
                raise RankscopeError(f"cannot execute {command[0]}: permission denied") from e
            forwarder.attach(child)
            code = child.wait()
            # Like a shell: a child killed by signal N exits 128 + N.
            code = 128 - code if code < 0 else code
            # Still forwarding: a second signal now must not cut this write short.
            _finish_manifest(run_dir, command, start_ns, code)
        finally:
            exporter.stop(metrics)
            for s, handler in previous.items():
                if handler is not None:
                    signal.signal(s, handler)
        _summarise(run_dir, args.out)
        return code


class SignalForwarder:
    """A signal handler that passes FORWARDED_SIGNALS to the child (it decides how to stop).

    Installed before the child starts: a signal that arrives before there is a
    child is kept and sent to it as soon as it exists, so none is lost and
    ``rankscope run`` never dies leaving the job orphaned.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(OSError):
            self.child.send_signal(signum)  # a no-op once the child has been reaped

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        for signum in self.pending:
            self(signum, None)
        self.pending.clear()


def _finish_manifest(run_dir: Path, command: list[str], start_ns: int, code: int) -> None:
    """Record how the job ended in ``run.json`` (the job has exited: no rank writes it now)."""
    path = run_dir / rundir.RUN_MANIFEST
    try:
        manifest = rundir.read_json(path, nofollow=True)
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        ranks = rundir.read_run_manifest(run_dir)["ranks"]
        manifest = {
            "schema": rundir.RUN_SCHEMA,
            "world_size": max((m.get("world_size", 0) for m in ranks.values()), default=None),
            "start_ns": start_ns,
            "command": command,
            "config": {"launcher": "rankscope run"},
        }
    manifest["exit_code"] = code
    manifest["end_ns"] = time.time_ns()
    nodes = nodes_of(rundir.read_run_manifest(run_dir)["ranks"])
    if nodes:
        manifest["nodes"] = nodes
    try:
        rundir.write_json_atomic(path, manifest)
    except OSError as e:
        print(f"rankscope run: could not update {path}: {e}", file=sys.stderr)


def _summarise(run_dir: Path, shown: str) -> None:
    ranks = rundir.read_run_manifest(run_dir)["ranks"]
    traces = sum(len(m.get("windows") or []) for m in ranks.values())
    if ranks:
        line = f"rankscope run: {shown}: {len(ranks)} rank(s), {traces} trace file(s)"
    else:
        line = (
            f"rankscope run: {shown}: no rank collected (the command started no Python "
            "process that imported torch and stepped an optimizer)"
        )
    print(line, file=sys.stderr)
