"""The real dashboard server's life: it stops with the command, whatever stops the command.

Each test starts ``python -m rankscope.dashboard.cli dashboard|demo ... --no-browser
--port P`` in its own session, waits until the server answers on loopback, then
signals the command alone (not its process group, as ``kill PID`` would) and
checks that the port closes and no child process survives. The finaliser kills
the whole session, pass or fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import rankscope_cmd

from rankscope.dashboard.commands.dashboard import free_port, reachable_address

pytest.importorskip("streamlit")

SAMPLE = Path(__file__).resolve().parents[3] / "sample_traces" / "ddp3_dataloader_straggler"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _server(*args: str, port: int) -> Iterator[subprocess.Popen[str]]:
    env = dict(os.environ, RANKSCOPE_SAMPLE_DIR=str(SAMPLE.parent))
    proc = subprocess.Popen(
        [*rankscope_cmd(), *args, "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not _answers(port):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _gone(procs: list[psutil.Process], timeout_s: float = 20.0) -> list[int]:
    """Pids of ``procs`` still running after ``timeout_s`` (zombies count as gone)."""
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize(
    "command", [("dashboard", str(SAMPLE)), ("demo",)], ids=["dashboard", "demo"]
)
def test_a_signal_stops_the_server_with_the_command(
    command: tuple[str, ...], sig: signal.Signals
) -> None:
    port = free_port()
    with _server(*command, port=port) as proc:
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the dashboard runs Streamlit in a child process"
        os.kill(proc.pid, sig)  # the command only, as `kill PID` does
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert _gone(children) == []
        assert not _answers(port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_server_follows_a_killed_command() -> None:
    port = free_port()
    with _server("dashboard", str(SAMPLE), port=port) as proc:
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs
        proc.wait(timeout=10)
        assert _gone(children) == []
        assert not _answers(port)


def test_a_wildcard_host_warns_and_prints_the_reachable_address() -> None:
    port = free_port("0.0.0.0")
    with _server("dashboard", str(SAMPLE), "--host", "0.0.0.0", port=port) as proc:
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"at http://{reachable_address()}:{port}" in out
    assert "localhost" not in out
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "without authentication" in warning[0]


def test_loopback_prints_localhost_and_no_warning() -> None:
    port = free_port()
    with _server("dashboard", str(SAMPLE), port=port) as proc:
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert f"at http://localhost:{port}" in out
    assert "warning" not in err


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        ("missing", "no such file or directory"),
        ("empty", "no trace files found"),
        ("not_a_trace", "not a trace file"),
    ],
)
def test_bad_paths_are_one_line_errors_before_any_server(
    tmp_path: Path, make: str, needle: str
) -> None:
    path = tmp_path / "runs"
    if make == "empty":
        path.mkdir()
    elif make == "not_a_trace":
        path.write_text("hello")
    proc = subprocess.run(
        [*rankscope_cmd(), "dashboard", str(path), "--no-browser", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_a_bad_host_or_a_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, needle in (
            (("--host", "nosuch.invalid", "--port", "0"), "choose another --host"),
            (("--port", str(port)), "choose another --port"),
        ):
            proc = subprocess.run(
                [*rankscope_cmd(), "dashboard", str(SAMPLE), "--no-browser", *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_without_streamlit_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rankscope.dashboard import cli

    monkeypatch.setitem(sys.modules, "streamlit", None)  # import streamlit -> ImportError
    assert cli.main(["dashboard", str(SAMPLE), "--no-browser", "--port", "0"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'rankscope[dashboard]'" in err
