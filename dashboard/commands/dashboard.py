"""``rankscope dashboard``: serve the Streamlit dashboard for a run, or a folder of runs.

``streamlit_command(host, port)`` is the command line that starts the packaged
app (``dashboard/app/main.py``); ``serve(path, ...)`` checks the path, starts it
as a subprocess with the path in ``$RANKSCOPE_DASHBOARD_PATH``, prints the URL
and waits. Streamlit always runs headless: rankscope opens the browser itself
once the server answers, so Streamlit never stops to ask for an e-mail address.

The server never outlives the command: Ctrl-C, SIGTERM (``kill``) and SIGHUP (a
closed terminal or SSH session) stop it and then the command (exit 0), and on
Linux the server also gets SIGTERM if the command dies without cleaning up (SIGKILL).
The page makes no request beyond the server itself, so it works on an offline
cluster. A --host other than loopback prints a warning: the dashboard has no
authentication.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

APP_DIR = Path(__file__).resolve().parents[1] / "app"
APP_MAIN = APP_DIR / "main.py"
ENV_PATH = "RANKSCOPE_DASHBOARD_PATH"  # read by rankscope.dashboard.app.data
ENV_LIVE = "RANKSCOPE_DASHBOARD_LIVE"
DEFAULT_PORT = 8501


def streamlit_command(host: str, port: int, server_address: str | None = None) -> list[str]:
    """``streamlit run main.py`` with rankscope's options.

    Nothing in it reaches beyond this machine: no usage statistics, no welcome
    banner (whose "External URL" asks checkip.amazonaws.com), and for a wildcard
    --host the address users reach is given (``server_address``), so Streamlit
    never looks its own up on the internet either.
    """
    extra = ["--browser.serverAddress", server_address] if server_address else []
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
        "--logger.hideWelcomeMessage",
        "true",
        # Streamlit's info lines ("Uvicorn server started") are not for users;
        # warnings and errors still show.
        "--logger.level",
        "warning",
        *extra,
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port(host: str, port: int) -> int:
    """The port the server can listen on (a free one for 0); a RankscopeError (exit 2) if none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise RankscopeError(
                f"cannot listen on {_address(host, port)} ({e.strerror or e}); choose another"
                f" {'--port' if isinstance(e, PermissionError) or e.errno == 98 else '--host'}"
            ) from None
        return int(s.getsockname()[1])


_WILDCARD = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def reachable_address() -> str:
    """This machine's address as other machines see it (for a wildcard --host).

    Connecting a UDP socket sends nothing; it only makes the kernel choose the
    interface of the default route. Without one (an offline cluster) the host
    name stands in.
    """
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
    ):
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: documentation only, never routed
        address = str(s.getsockname()[0])
        if address not in _WILDCARD and not is_loopback(address):
            return address
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        address = socket.gethostbyname(name)
        if not is_loopback(address):
            return address
    return name


def _url(host: str, port: int) -> str:
    if is_loopback(host):
        shown = "localhost"
    elif host in _WILDCARD:
        shown = reachable_address()
    else:
        return f"http://{_address(host, port)}"
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


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the command as Ctrl-C does (KeyboardInterrupt), once.

    Further signals while it stops are ignored, so the clean-up that stops the
    server is never cut short. A no-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt

    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, interrupt) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _die_with_parent() -> None:
    """In the server process, before exec: SIGTERM it when this command dies (Linux).

    Covers a SIGKILL, which no handler sees. prctl(PR_SET_PDEATHSIG) fires when
    the parent exits; a parent gone before the call is checked right after.
    """
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def stop_server(child: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM (Streamlit then shuts down cleanly), SIGKILL if it has not within timeout_s."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait(timeout=timeout_s)


def serve(path: str | Path, host: str, port: int, open_browser: bool, live: bool = False) -> int:
    """Start the dashboard on ``path`` and wait until it stops (Ctrl-C, SIGTERM, SIGHUP)."""
    from rankscope.dashboard.app.runs import find_runs

    runs = find_runs(path)  # a clear RankscopeError (exit 2) before anything starts
    try:
        import plotly  # noqa: F401
        import streamlit  # noqa: F401
    except ImportError:
        raise RankscopeError(
            "the dashboard needs streamlit and plotly: pip install 'rankscope[dashboard]'",
            EXIT_ENVIRONMENT,
        ) from None
    port = _check_port(host, port)
    env = dict(os.environ)
    env[ENV_PATH] = str(Path(path).resolve())
    if live:
        env[ENV_LIVE] = "1"
    url = _url(host, port)
    if not is_loopback(host):
        print(
            f"rankscope dashboard: warning: listening on {_address(host, port)} without"
            " authentication: anyone who can reach it can read these traces (an SSH tunnel"
            " to the default --host 127.0.0.1 keeps them private)",
            file=sys.stderr,
            flush=True,
        )
    what = runs[0].label if len(runs) == 1 else f"{len(runs)} runs in {path}"
    print(f"rankscope dashboard: {what} at {url}  (Ctrl-C to stop)", flush=True)
    with stop_on_signals():
        try:
            # Started in the app folder so Streamlit reads the project's .streamlit/config.toml.
            child = subprocess.Popen(
                streamlit_command(host, port, reachable_address() if host in _WILDCARD else None),
                cwd=APP_DIR,
                env=env,
                stdout=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except KeyboardInterrupt:
            return 0
        try:
            if open_browser:
                local = "localhost" if host in _WILDCARD or is_loopback(host) else host
                _open_when_ready(_url(local, port), host, port)
            code = child.wait()
        except KeyboardInterrupt:
            stop_server(child)
            return 0
        finally:
            if child.poll() is None:  # an unexpected error: never leave the server behind
                stop_server(child)
    if code not in (0, -2, -15, 130):
        raise RankscopeError(f"streamlit exited with code {code}", EXIT_ENVIRONMENT)
    return 0


class DashboardCommand:
    """Open the dashboard: load imbalance, communication stalls and GPU utilisation in a browser.

    PATH is a run directory, a folder of traces, a single trace file, or a folder
    holding several runs, up to three levels down (a run picker lists them,
    newest first). The server listens on 127.0.0.1 unless --host says otherwise;
    the dashboard has no authentication, so any other address prints a warning.
    Ctrl-C, SIGTERM and SIGHUP stop the server with the command.

    Exit codes: 0 the server ran and was stopped; 2 bad input (no run at PATH, a
    bad --port, the port taken); 3 an environment problem (streamlit missing or
    failing to start).

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
