"""The control channel: withdrawn requests, a bounded log, a control/ that gets replaced."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from rankscope.profiler import rundir
from rankscope.profiler.control import AttachRequest, ControlChannel
from rankscope.profiler.faults import Faults


class Fake:
    def __init__(self, run: Path) -> None:
        run.mkdir(parents=True, exist_ok=True)
        self.run = run
        self.pending: AttachRequest | None = None
        self.faults = Faults("rank 0")
        self.ch = ControlChannel(
            run, 0, 1, self.faults, start_ns=time.time_ns(), current_step=lambda: 10,
            capturing=lambda: False, offer=self.offer, withdraw=self.withdraw,
        )  # fmt: skip
        self.ch.open()

    def offer(self, req: AttachRequest) -> str | None:
        self.pending = req
        return None

    def withdraw(self, req: AttachRequest) -> bool:
        if self.pending is req:
            self.pending = None
            return True
        return False

    def ack(self) -> dict:  # type: ignore[type-arg]
        self.ch.write_acks()
        return rundir.read_acks(self.run)[0]


def test_removing_the_request_withdraws_it(tmp_path: Path) -> None:
    f = Fake(tmp_path / "run")
    req = AttachRequest("r1", 500, 2, time.time_ns())
    rundir.write_json_atomic(rundir.request_path(f.run), req.to_json())
    f.ch.poll()
    assert f.ack()["state"] == "accepted" and f.pending is not None
    rundir.request_path(f.run).unlink()
    f.ch.poll()
    assert f.pending is None and f.ack()["state"] == "cancelled"


def test_a_window_that_opened_is_not_withdrawn(tmp_path: Path) -> None:
    f = Fake(tmp_path / "run")
    req = AttachRequest("r1", 500, 2, time.time_ns())
    rundir.write_json_atomic(rundir.request_path(f.run), req.to_json())
    f.ch.poll()
    assert f.pending is not None
    f.ch.window_opened(f.pending)
    rundir.request_path(f.run).unlink()
    f.ch.poll()
    assert f.pending is not None and f.ack()["state"] == "accepted"


def test_ignored_requests_log_a_bounded_number_of_lines(tmp_path: Path) -> None:
    f = Fake(tmp_path / "run")
    for i in range(200):
        path = rundir.request_path(f.run)
        path.write_text(json.dumps({"bad": i}))
        os.utime(path, ns=(i, i))  # a new file each time, as a loop rewriting it makes
        f.ch.poll()
    assert 1 <= len(f.faults.pending) <= 10


def test_replaced_control_dir_stops_the_channel(tmp_path: Path) -> None:
    f = Fake(tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(rundir.control_dir(f.run), tmp_path / "moved")
    rundir.control_dir(f.run).symlink_to(outside)
    with pytest.raises(RuntimeError, match="replaced"):
        f.ch.beat()
    f.ch.tick(time.monotonic() + 10)  # never raises: attach is turned off instead
    assert f.ch.disabled and list(outside.iterdir()) == []


def test_open_refuses_a_symlinked_control_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "run").mkdir()
    rundir.control_dir(tmp_path / "run").symlink_to(outside)
    with pytest.raises(RuntimeError, match="symlink"):
        Fake(tmp_path / "run")
    assert list(outside.iterdir()) == []
