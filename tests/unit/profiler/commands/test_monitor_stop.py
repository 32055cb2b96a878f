"""SignalStop: what ``rankscope monitor`` waits on, ended by SIGTERM/SIGINT at once."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rankscope.profiler.commands.monitor import SignalStop


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_long_wait_at_once(signum: signal.Signals) -> None:
    with SignalStop() as stop:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signum))
        timer.start()
        began = time.monotonic()
        assert stop.wait(30.0) is True
        took = time.monotonic() - began
        timer.join()
        assert stop.is_set() and stop.signum == signum
        assert took < 10.0, f"the wait outlived the signal by {took:.1f} s"


def test_a_signal_before_the_wait_is_not_lost() -> None:
    with SignalStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(30.0) is True


def test_the_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with SignalStop() as stop:
        assert signal.getsignal(signal.SIGTERM) != before[0]
        assert stop.wait(0.01) is False
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
