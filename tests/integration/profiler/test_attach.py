"""``rankscope attach``: the request format, hostile request files, a live Collector, a real job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs.collector_jobs import (  # noqa: F401 - fixture
    JOBS,
    job_env,
    launcher,
    no_leftover_threads,
    profiler_step_spans,
    rankscope,
    read_trace,
)

from rankscope import Collector
from rankscope.profiler import rundir
from rankscope.profiler.commands.attach import answer_for, choose_first_step
from rankscope.profiler.control import AttachRequest, BadRequest, ControlChannel, parse_request
from rankscope.profiler.errors import EXIT_BAD_INPUT, EXIT_NOTHING
from rankscope.profiler.faults import Faults

torch = pytest.importorskip("torch", reason="torch is not installed")

ATTACH_JOB = JOBS / "attach_job.py"


def request_json(**over: Any) -> dict[str, Any]:
    obj = AttachRequest("t1", 50, 3, time.time_ns()).to_json()
    obj.update(over)
    return obj


# ---------------------------------------------------------------------- the format


def test_a_request_round_trips() -> None:
    req = AttachRequest("20250101T120000-abc123", 120, 3, 1, "me@host pid 1")
    back = parse_request(json.dumps(req.to_json()).encode())
    assert back == req and back.last_step == 122


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(request_json(steps=10**9)).encode(), "steps 1000000000 out of range 1..100"),
        (json.dumps(request_json(steps=0)).encode(), "steps 0 out of range"),
        (json.dumps(request_json(steps=True)).encode(), "steps must be an integer"),
        (json.dumps(request_json(steps="3")).encode(), "steps must be an integer"),
        (json.dumps(request_json(first_step=-5)).encode(), "first_step -5 out of range"),
        (json.dumps(request_json(command="exec")).encode(), "unknown command 'exec'"),
        (json.dumps(request_json(schema="rankscope.attach-request/9")).encode(), "schema"),
        (json.dumps(request_json(id="../../etc/passwd")).encode(), "id must be"),
        (json.dumps(request_json(id="")).encode(), "id must be"),
        (json.dumps(request_json(out="/etc/cron.d/x")).encode(), "unexpected field(s) out"),
        (json.dumps(request_json(file="../../x.json.gz")).encode(), "unexpected field(s) file"),
        (json.dumps({"schema": rundir.REQUEST_SCHEMA}).encode(), "missing field(s)"),
        (b" " * (rundir.MAX_REQUEST_BYTES + 1), "larger than"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=None) as info:
        parse_request(data)
    assert reason in str(info.value)


def test_first_step_is_ahead_of_the_furthest_rank() -> None:
    now = 10**18
    beats = [
        {"step": 100, "ts_ns": now - 500_000_000, "steps_per_s": 50.0},  # ~125 now
        {"step": 101, "ts_ns": now, "steps_per_s": 50.0},
    ]
    # furthest ~125; 2 s at 50 steps/s = 100 steps lead; +1 warm-up; rounded up to 10
    assert choose_first_step(beats, now) == 230
    # A slow job (one step per 10 s): at least 2 steps of lead, no rounding.
    assert choose_first_step([{"step": 7, "ts_ns": now, "steps_per_s": 0.1}], now) == 10
    # No rate yet (the job just started): the minimum lead.
    assert choose_first_step([{"step": 0, "ts_ns": now, "steps_per_s": None}], now) == 3


def test_answers_are_found_in_the_history() -> None:
    ack = {"id": "b", "state": "accepted", "history": [{"id": "a", "state": "done"}]}
    assert answer_for(ack, "b") is ack
    assert answer_for(ack, "a") == {"id": "a", "state": "done"}
    assert answer_for(ack, "c") is None and answer_for(None, "a") is None


# ---------------------------------------------------------------------- the channel, hostile files


class Channel:
    """A ControlChannel over a temporary run directory, with the collector faked."""

    def __init__(self, run: Path, step: int = 10) -> None:
        self.run = run
        self.step = step
        self.offers: list[AttachRequest] = []
        self.refuse: str | None = None
        self.faults = Faults("rank 0")
        self.channel = ControlChannel(
            run,
            0,
            1,
            self.faults,
            start_ns=time.time_ns(),
            current_step=lambda: self.step,
            capturing=lambda: False,
            offer=self._offer,
        )
        run.mkdir(parents=True, exist_ok=True)
        self.channel.open()

    def _offer(self, req: AttachRequest) -> str | None:
        self.offers.append(req)
        return self.refuse

    def write(self, data: bytes | dict[str, Any]) -> None:
        path = rundir.request_path(self.run)
        tmp = path.with_name(".tmp")
        tmp.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
        os.replace(tmp, path)

    def poll(self) -> list[str]:
        """Poll once, write acks; the log lines produced."""
        self.channel.poll()
        self.channel.write_acks()
        lines = list(self.faults.pending)
        self.faults.pending.clear()
        return lines


def test_hostile_request_files_are_ignored_with_a_reason(tmp_path: Path) -> None:
    ch = Channel(tmp_path / "run")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(request_json(id="via-link")))
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: ch.write(b"{bad json"), "not valid JSON"),
        (lambda: ch.write(request_json(id="huge", steps=10**6)), "out of range 1..100"),
        (lambda: ch.write(request_json(id="cmd", command="shell")), "unknown command"),
        (lambda: ch.write(request_json(id="path", path="/tmp/x")), "unexpected field(s) path"),
        (lambda: ch.write(request_json(id="../../x")), "id must be"),
        (lambda: ch.write(b"x" * 100_000), "larger than"),
        (lambda: ch.write(request_json(id="old", created_ns=1)), "before this rank's collector"),
    ]
    for make, reason in cases:
        make()
        lines = ch.poll()
        assert len(lines) == 1 and reason in lines[0] and "ignored" in lines[0], (reason, lines)

    # A symlink to a valid request elsewhere is never followed.
    rundir.request_path(ch.run).unlink()
    rundir.request_path(ch.run).symlink_to(outside)
    lines = ch.poll()
    assert len(lines) == 1 and "symlink" in lines[0]
    # Nor a directory in its place.
    rundir.request_path(ch.run).unlink()
    rundir.request_path(ch.run).mkdir()
    lines = ch.poll()
    assert len(lines) == 1 and "regular file" in lines[0]

    assert ch.offers == []  # nothing reached the training side
    assert not rundir.ack_path(ch.run, 0).exists()  # invalid ids get no answer, only a log line
    hb = rundir.read_heartbeats(ch.run)[0]
    assert hb["rank"] == 0 and hb["pid"] == os.getpid() and hb["state"] == "running"


def test_valid_requests_are_offered_once_and_answered(tmp_path: Path) -> None:
    ch = Channel(tmp_path / "run")
    ch.write(request_json(id="r1"))
    assert ch.poll() == []
    assert [r.id for r in ch.offers] == ["r1"]
    assert rundir.read_acks(ch.run)[0]["state"] == "accepted"
    ch.poll()  # unchanged file: one lstat, nothing read
    ch.write(request_json(id="r1"))  # the same request rewritten: still once
    ch.poll()
    assert len(ch.offers) == 1
    ch.refuse = "busy with request r1"
    ch.write(request_json(id="r2"))
    assert "busy with request r1" in ch.poll()[0]
    ack = rundir.read_acks(ch.run)[0]
    assert (ack["id"], ack["state"], ack["reason"]) == ("r2", "refused", "busy with request r1")
    assert [h["id"] for h in ack["history"]] == ["r2"]


# ---------------------------------------------------------------------- a live Collector


@pytest.fixture
def training() -> Iterator[Callable[..., Any]]:
    """Run a tiny single-process training loop on a thread until stopped."""
    threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(col: Collector, step_s: float = 0.01) -> threading.Event:
        stop = threading.Event()

        def loop() -> None:
            torch.manual_seed(0)
            model = torch.nn.Sequential(
                torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
            )
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            while not stop.is_set():
                with torch.profiler.record_function("data_loading"):
                    time.sleep(step_s)
                loss = model(torch.randn(8, 32)).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                col.step()

        t = threading.Thread(target=loop, name="test-training")
        threads.append((t, stop))
        t.start()
        return stop

    yield start
    for t, stop in threads:
        stop.set()
        t.join(10)


def wait_for(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def write_request(run: Path, req: AttachRequest) -> None:
    rundir.write_json_atomic(rundir.request_path(run), req.to_json())


@pytest.mark.usefixtures("no_leftover_threads")
def test_collector_captures_requested_steps_one_request_at_a_time(
    tmp_path: Path, training: Callable[..., threading.Event]
) -> None:
    run = tmp_path / "run"
    with Collector(run, nvml_period_ms=0, control_period_s=0.05) as col:
        stop = training(col)
        wait_for(lambda: col.current_step >= 5)
        first = col.current_step + 40
        write_request(run, AttachRequest("one", first, 3, time.time_ns()))
        acked = wait_for(lambda: answer_for(rundir.read_acks(run).get(0), "one"))
        assert acked["state"] in ("accepted", "started")
        # A second request while the first is pending: refused, the first goes on.
        write_request(run, AttachRequest("two", first + 10, 2, time.time_ns()))
        two = wait_for(lambda: answer_for(rundir.read_acks(run).get(0), "two"))
        assert two["state"] == "refused" and "busy with request one" in two["reason"]
        done = wait_for(
            lambda: (a := answer_for(rundir.read_acks(run).get(0), "one")) and a["state"] == "done"
        )
        # Several in a row: once the first is done, the next one is welcome.
        third = col.current_step + 30
        write_request(run, AttachRequest("three", third, 2, time.time_ns()))
        wait_for(
            lambda: (
                (a := answer_for(rundir.read_acks(run).get(0), "three")) and a["state"] == "done"
            )
        )
        stop.set()
    assert done is True
    meta = rundir.read_json(rundir.rank_meta_path(run, 0))
    windows = [(w["first_step"], w["last_step"], w["request"]) for w in meta["windows"]]
    assert windows == [(first, first + 2, "one"), (third, third + 1, "three")]
    trace = read_trace(run / f"rank0.step{first}-{first + 2}.pt.trace.json.gz")
    assert sorted(profiler_step_spans(trace)) == [first, first + 1, first + 2]
    steps = {s["step"] for s in rundir.read_steps(run, 0)}
    assert set(range(third + 2)) <= steps  # training never stopped
    hb = rundir.read_heartbeats(run)[0]
    assert hb["state"] == "stopped" and hb["steps_per_s"] > 0


@pytest.mark.usefixtures("no_leftover_threads")
def test_requests_in_the_past_or_over_a_configured_window_are_refused(
    tmp_path: Path, training: Callable[..., threading.Event]
) -> None:
    run = tmp_path / "run"
    with Collector(run, profile_steps="300-302", nvml_period_ms=0, control_period_s=0.05) as col:
        stop = training(col, 0.005)
        wait_for(lambda: col.current_step >= 20)
        write_request(run, AttachRequest("past", 3, 3, time.time_ns()))
        past = wait_for(lambda: answer_for(rundir.read_acks(run).get(0), "past"))
        assert past["state"] == "refused" and "too close" in past["reason"]
        write_request(run, AttachRequest("overlap", 298, 5, time.time_ns()))
        over = wait_for(lambda: answer_for(rundir.read_acks(run).get(0), "overlap"))
        assert over["state"] == "refused" and "configured profiler window 300-302" in over["reason"]
        stop.set()
    assert not list(run.glob("*.pt.trace.json.gz"))
    log = rundir.log_path(run, 0).read_text()
    assert "attach request past: ignored: start step 3 is too close" in log


@pytest.mark.usefixtures("no_leftover_threads")
def test_a_job_that_stops_before_the_window_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, nvml_period_ms=0, control_period_s=0.05) as col:
        for _ in range(3):
            col.step()
        write_request(run, AttachRequest("late", 1000, 3, time.time_ns()))
        wait_for(lambda: answer_for(rundir.read_acks(run).get(0), "late"))
    ack = rundir.read_acks(run)[0]
    assert ack["state"] == "failed" and "the job stopped at step 3" in ack["reason"]


@pytest.mark.usefixtures("no_leftover_threads")
def test_attach_off_writes_no_control_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Collector(run, nvml_period_ms=0, control_period_s=0) as col:
        col.step()
    assert not rundir.control_dir(run).exists()


# ---------------------------------------------------------------------- a real job


def _start_job(run: Path, stop_file: Path) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "rankscope.dashboard.cli",
        "run",
        "--out",
        str(run),
        "--profile",
        "off",
        "--nvml-period-ms",
        "200",
        "--",
        *launcher("module", 2),
        str(ATTACH_JOB),
        "--stop-file",
        str(stop_file),
        "--step-ms",
        "15",
    ]
    return subprocess.Popen(
        cmd, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_attach_to_a_running_gloo_job(tmp_path: Path) -> None:
    run, stop_file = tmp_path / "run", tmp_path / "stop"
    job = _start_job(run, stop_file)
    try:
        beats = wait_for(
            lambda: (
                (b := rundir.read_heartbeats(run))
                and len(b) == 2
                and all(h["step"] >= 10 for h in b.values())
                and b
            ),
            timeout=60,
        )
        assert {h["world_size"] for h in beats.values()} == {2}

        status = rankscope("attach", str(run), "--status")
        assert status.returncode == 0, status.stderr
        assert "job running, 2 of 2 rank(s) live" in status.stdout
        assert status.stdout.count(" running ") == 2

        # A hostile request (asks to write outside the run directory): logged, ignored.
        rundir.write_json_atomic(
            rundir.request_path(run), request_json(id="evil", file="/tmp/evil.json.gz")
        )
        wait_for(
            lambda: all(
                "unexpected field(s) file"
                in (rundir.log_path(run, r).read_text() if rundir.log_path(run, r).exists() else "")
                for r in (0, 1)
            )
        )

        t0 = time.monotonic()
        attach = rankscope("attach", str(run), "--steps", "3", timeout=90)
        attach_s = time.monotonic() - t0
        assert attach.returncode == 0, attach.stdout + attach.stderr
        assert "on 2 of 2 rank(s)" in attach.stdout
        acks = rundir.read_acks(run)
        firsts = {a["first_step"] for a in acks.values()}
        assert len(firsts) == 1 and {a["state"] for a in acks.values()} == {"done"}
        first = firsts.pop()
        captured = [first, first + 1, first + 2]
        for rank in (0, 1):
            trace_file = rundir.trace_path(run, rank, first, first + 2)
            assert str(trace_file) in attach.stdout
            assert sorted(profiler_step_spans(read_trace(trace_file))) == captured

        # The report (read while the job runs on) covers exactly the captured steps.
        report = rankscope("report", str(run), "--format", "json")
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["run"]["steps"] == captured

        # Right after the first: a second attach works too.
        again = rankscope("attach", str(run), "--steps", "2", timeout=90)
        assert again.returncode == 0, again.stdout + again.stderr
        second = {a["first_step"] for a in rundir.read_acks(run).values()}.pop()
        assert second > first + 2
    finally:
        stop_file.touch()
        out, _ = job.communicate(timeout=60)
    assert job.returncode == 0, out[-3000:]
    assert "ignored: unexpected field(s) file" in out
    assert not Path("/tmp/evil.json.gz").exists()

    manifest = rundir.read_run_manifest(run)
    for rank in (0, 1):
        windows = manifest["ranks"][rank]["windows"]
        assert [(w["first_step"], w["last_step"]) for w in windows] == [
            (first, first + 2),
            (second, second + 1),
        ]
    report = rankscope("report", str(run), "--format", "json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["run"]["steps"] == [*captured, second, second + 1]
    print(f"attach --steps 3 took {attach_s:.1f} s")

    finished = rankscope("attach", str(run), "--status")
    assert finished.returncode == EXIT_NOTHING
    assert "the job has finished (exit code 0)" in finished.stdout + finished.stderr
    late = rankscope("attach", str(run), "--steps", "3")
    assert late.returncode == EXIT_NOTHING and "has finished" in late.stderr


def test_status_and_attach_on_missing_or_foreign_dirs(tmp_path: Path) -> None:
    missing = rankscope("attach", str(tmp_path / "nope"), "--status")
    assert missing.returncode == EXIT_BAD_INPUT and "no such run directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = rankscope("attach", str(tmp_path / "empty"), "--steps", "3")
    assert empty.returncode == EXIT_NOTHING and "not a run directory" in empty.stderr
    bad = rankscope("attach", str(tmp_path / "empty"), "--steps", "500")
    assert bad.returncode == EXIT_BAD_INPUT and "--steps must be 1..100" in bad.stderr
    for proc in (missing, empty, bad):
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="checks the message of older Pythons")
def test_pid_needs_python_314(tmp_path: Path) -> None:
    proc = rankscope("attach", str(tmp_path / "run"), "--pid", str(os.getpid()))
    assert proc.returncode == 3 and "needs Python 3.14 or newer" in proc.stderr


@pytest.mark.skipif(not hasattr(sys, "remote_exec"), reason="sys.remote_exec needs Python 3.14+")
@pytest.mark.slow
def test_pid_injects_the_collector(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import time, torch\n"
        "m = torch.nn.Linear(4, 1); o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for _ in range(3000):\n"
        "    m(torch.randn(2, 4)).sum().backward(); o.step(); time.sleep(0.01)\n"
    )
    job = subprocess.Popen([sys.executable, str(script)], env=job_env())
    try:
        time.sleep(3)
        proc = rankscope("attach", str(tmp_path / "run"), "--pid", str(job.pid), "--steps", "2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert list((tmp_path / "run").glob("rank0.step*.pt.trace.json.gz"))
    finally:
        job.kill()
        job.wait()
