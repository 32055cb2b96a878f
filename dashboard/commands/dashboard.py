"""``rankscope dashboard``: serve the Streamlit dashboard for a run, or a folder of runs.

``streamlit_command(host, port)`` is the command line that starts the packaged
app (``dashboard/app/main.py``); ``serve(path, ...)`` checks the path, starts it
as a subprocess with the path in ``$RANKSCOPE_DASHBOARD_PATH``, prints the URL
and waits. Streamlit always runs headless: rankscope opens the browser itself
once the server answers, so Streamlit never stops to ask for an e-mail address.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from pathlib import Path

from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

APP_DIR = Path(__file__).resolve().parents[1] / "app"
APP_MAIN = APP_DIR / "main.py"
ENV_PATH = "RANKSCOPE_DASHBOARD_PATH"  # read by rankscope.dashboard.app.data
ENV_LIVE = "RANKSCOPE_DASHBOARD_LIVE"
DEFAULT_PORT = 8501


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_MAIN),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise RankscopeError(
                f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port"
            ) from None


def _url(host: str, port: int) -> str:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "localhost") else host
    return f"http://{shown}:{port}"


def _open_when_ready(url: str, host: str, port: int, timeout_s: float = 60.0) -> None:
    def wait_then_open() -> None:
        target = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((target, port), timeout=1):
                webbrowser.open(url)
                return
            time.sleep(0.3)

    threading.Thread(target=wait_then_open, daemon=True).start()


def serve(path: str | Path, host: str, port: int, open_browser: bool, live: bool = False) -> int:
    """Start the dashboard on ``path`` and wait until it stops (Ctrl-C)."""
    from rankscope.dashboard.app.runs import find_runs

    runs = find_runs(path)  # a clear RankscopeError (exit 2) before anything starts
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise RankscopeError(
            "streamlit is not installed (pip install streamlit)",
            EXIT_ENVIRONMENT,
        ) from None
    if port == 0:
        port = free_port(host)
    _check_port(host, port)
    env = dict(os.environ)
    env[ENV_PATH] = str(Path(path).resolve())
    if live:
        env[ENV_LIVE] = "1"
    url = _url(host, port)
    what = runs[0].label if len(runs) == 1 else f"{len(runs)} runs in {path}"
    print(f"rankscope dashboard: {what} at {url}  (Ctrl-C to stop)", flush=True)
    # Started in the app folder so Streamlit reads the project's .streamlit/config.toml.
    child = subprocess.Popen(
        streamlit_command(host, port), cwd=APP_DIR, env=env, stdout=subprocess.DEVNULL
    )
    if open_browser:
        _open_when_ready(url, host, port)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        return 0
    if code not in (0, -2, 130):
        raise RankscopeError(f"streamlit exited with code {code}", EXIT_ENVIRONMENT)
    return 0


class DashboardCommand:
    """Open the dashboard: load imbalance, communication stalls and GPU utilisation in a browser.

    PATH is a run directory, a folder of traces, a single trace file, or a folder
    holding several runs (a run picker lists them, newest first). The server
    listens on 127.0.0.1 unless --host says otherwise.

    examples:
      rankscope dashboard runs/exp1
      rankscope dashboard runs/ --port 8600 --no-browser
      rankscope dashboard runs/exp1 --host 0.0.0.0   # reachable from other machines
    """

    name = "dashboard"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "path",
            metavar="PATH",
            nargs="?",
            default=".",
            help="run or folder of runs (default: .)",
        )
        add_server_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        check_server_arguments(args)
        return serve(args.path, args.host, args.port, open_browser=not args.no_browser)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--port, --host and --no-browser: the same for ``dashboard`` and ``demo``."""
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default 127.0.0.1)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")


def check_server_arguments(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise RankscopeError(f"--port {args.port}: expected 0-65535")
