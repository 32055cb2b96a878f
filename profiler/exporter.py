"""Start and stop the Prometheus exporter of a run (``rankscope metrics``) beside a job.

``rankscope run --metrics-port P`` (the launcher) and ``Collector(metrics_port=P)``
(rank 0) serve the run's light layer without serving anything from a training
process: ``start`` runs ``python -m rankscope.dashboard.cli metrics RUN --port P``
as a niced process in its own session (a signal to the job's process group
never reaches it), told to exit once the process that started it is gone. It
reads the rank files the job writes anyway: no traffic inside the job.

Nothing here raises: a port that cannot be bound (checked here first, so the
warning comes before the job's own output) or a missing ``prometheus_client``
gives one warning line and no exporter, and the job runs on. The collector side
never imports the review side: the exporter is a subprocess. Standard library only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rankscope.profiler import settings

ADDR = "0.0.0.0"
STOP_WAIT_S = 5.0


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_problem(port: int, addr: str = ADDR) -> str | None:
    """Why ``addr:port`` cannot be served (in use, no permission), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the exporter's server binds: a port left in TIME_WAIT is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def start(
    run_dir: Path, port: int, warn: Callable[[str], None], *, who: str
) -> subprocess.Popen[bytes] | None:
    """The exporter process serving ``run_dir`` on ``port``, or None (``warn`` says why).

    ``who`` prefixes a warning the exporter itself prints (a port taken between
    the check here and its own bind).
    """
    if importlib.util.find_spec("prometheus_client") is None:
        warn(
            f"--metrics-port {port} needs prometheus_client (pip install"
            " 'rankscope[metrics]'); no metrics served (the job runs on)"
        )
        return None
    problem = port_problem(port)
    if problem is not None:
        warn(f"metrics port {port}: {problem}; no metrics served (the job runs on)")
        return None
    env = {k: v for k, v in os.environ.items() if k not in settings.ENV_ALL}
    # The same rankscope as this process's, without the bootstrap (no collector in it).
    bootstrap = os.environ.get(settings.ENV_BOOTSTRAP)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != bootstrap]
    env["PYTHONPATH"] = os.pathsep.join([settings.package_path(), *parts])
    cmd = [sys.executable, "-m", "rankscope.dashboard.cli", "metrics", str(run_dir)]
    cmd += ["--port", str(port), "--exit-with-pid", str(os.getpid()), "--warn-as", who]
    nice = shutil.which("nice")
    if nice:
        cmd = [nice, "-n", "10", *cmd]
    try:
        return subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        warn(f"metrics exporter did not start ({e}); no metrics served (the job runs on)")
        return None


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """End the exporter (SIGTERM, then SIGKILL after ``STOP_WAIT_S``) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        proc.terminate()
    try:
        proc.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_WAIT_S)
