"""``rankscope attach``: capture a profiler window from a job that is already running.

The command talks to the job only through the run directory's control channel
(formats in ``rankscope.profiler.rundir``): it reads the ranks' heartbeats, picks a first
step far enough ahead of the furthest rank that every rank sees the request
before its warm-up step (``choose_first_step``), writes one request file
atomically, then waits for each rank's acknowledgement and prints which ranks
captured which steps and where the traces are. No clocks or collectives have to
agree: all ranks record the same step numbers because the request names them.

``--status`` prints the ranks, their step and last heartbeat (and names the
heartbeat files it could not trust); from each rank's progress record
(``rankscope.profiler.progress``) a rank alive but without steps is ``stalled``,
with a line saying how long and which collective it has not issued or waits in.
``--cancel`` removes the request, which withdraws it on every rank whose window
has not opened yet. ``--pid`` loads the collector into a Python 3.14+ process
that runs without it (``sys.remote_exec``).
A symlinked ``control/`` is refused (exit 2): it could point outside the run.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import math
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rankscope
from rankscope.profiler import rundir
from rankscope.profiler.control import AttachRequest, BadRequest, validate_request
from rankscope.profiler.errors import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_NOTHING,
    RankscopeError,
)

# A rank looks for requests every 0.5 s and beats every 1 s; a request names a
# step at least LEAD_S of training ahead so that every rank has polled (twice, on
# a shared filesystem with attribute caching) before its warm-up step begins.
LEAD_S = 2.0
MIN_LEAD_STEPS = 2
WARMUP_STEPS = 1  # the collector's default warm-up before a window
STALE_S = 10.0  # a heartbeat older than this: the rank is not running (or is stuck)
START_WAIT_S = 20.0  # a job that just started: how long to wait for every rank's step rate
# ... and how far ahead to start then: its first rates average in the slow start-up steps
START_LEAD_S = 6.0
EXPORT_SLACK_S = 60.0  # after the last step: stopping the profiler and writing the trace
FINAL_STATES = ("done", "refused", "failed", "cancelled")
CANCEL_WAIT_S = 3.0  # how long --cancel waits for the ranks to confirm
_SHOWN_MISSING = 32  # ranks listed by name when heartbeats are missing


def heartbeat_age_s(hb: dict[str, Any], now_ns: int) -> float:
    return max(0.0, (now_ns - int(hb.get("ts_ns", 0))) / 1e9)


def liveness(hb: dict[str, Any], now_ns: int) -> tuple[bool, str]:
    """Whether the rank behind ``hb`` still runs, and a word for the status table."""
    if hb.get("state") == "stopped":
        return False, "stopped"
    age = heartbeat_age_s(hb, now_ns)
    if age > STALE_S:
        return False, f"silent {age:.0f} s"
    if hb.get("host") == socket.gethostname() and isinstance(hb.get("pid"), int):
        try:
            os.kill(hb["pid"], 0)
        except ProcessLookupError:
            return False, "exited"
        except PermissionError:
            pass  # someone else's process: it exists
    return True, str(hb.get("state", "running"))


def _rate(hb: dict[str, Any]) -> float:
    rate = hb.get("steps_per_s")
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else 0.0


def estimated_step(hb: dict[str, Any], now_ns: int) -> float:
    """Where the rank probably is now: its last step moved on at its recent rate."""
    return float(hb.get("step", 0)) + _rate(hb) * heartbeat_age_s(hb, now_ns)


def choose_first_step(
    beats: list[dict[str, Any]], now_ns: int, lead_s: float = LEAD_S, warmup: int = WARMUP_STEPS
) -> int:
    """The first step to capture: ``lead_s`` of training past the furthest rank.

    Uses the fastest rank's rate (the safe side) and at least MIN_LEAD_STEPS; a
    lead of 20 steps or more is rounded up to a multiple of 10 for readable
    file names (it costs at most half the lead again).
    """
    furthest = max((estimated_step(hb, now_ns) for hb in beats), default=0.0)
    rate = max((_rate(hb) for hb in beats), default=0.0)
    lead = max(MIN_LEAD_STEPS, math.ceil(rate * lead_s))
    first = math.floor(furthest) + lead + warmup
    if lead >= 20:
        first = math.ceil(first / 10) * 10
    return first


def answer_for(ack: dict[str, Any] | None, request_id: str) -> dict[str, Any] | None:
    """A rank's latest answer to ``request_id`` (its current ack or its history)."""
    if ack is None:
        return None
    if ack.get("id") == request_id:
        return ack
    for old in reversed(ack.get("history") or []):
        if isinstance(old, dict) and old.get("id") == request_id:
            return old
    return None


def new_request_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def _requested_by() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "?"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def missing_ranks(world: int, present: set[int] | dict[int, Any]) -> str:
    """The first ranks below ``world`` not in ``present``, as text (never a set of the world)."""
    missing = [r for r in range(min(world, rundir.MAX_WORLD_SIZE)) if r not in present]
    shown = ", ".join(map(str, missing[:_SHOWN_MISSING]))
    return shown + (f" ... ({len(missing)} in all)" if len(missing) > _SHOWN_MISSING else "")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _steps(answer: dict[str, Any]) -> str:
    return f"{answer.get('first_step')}-{answer.get('last_step')}"


class AttachCommand:
    """Capture a torch.profiler window from a running job (all ranks, the same steps).

    The job must run with rankscope's collector (`rankscope run`, even with
    --profile off, or rankscope.Collector in the code). Every rank records the
    same N steps, starting a little ahead of the furthest rank, and writes its
    trace into the run directory; `rankscope report RUN_DIR` then covers them.
    The run directory may be on a shared filesystem: ranks on other hosts answer
    through it. Exits 1 only if no rank captured.

    examples:
      rankscope attach runs/exp1 --status
      rankscope attach runs/exp1 --steps 3
      rankscope attach runs/exp1 --steps 5 --start-step 12000 --timeout 600
      rankscope attach runs/exp1 --cancel
      rankscope attach runs/exp1 --pid 4242 --steps 3     (Python 3.14+ jobs)
    """

    name = "attach"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR", help="the job's run directory")
        parser.add_argument(
            "--steps",
            type=int,
            metavar="N",
            help=f"steps to capture (1..{rundir.MAX_ATTACH_STEPS})",
        )
        parser.add_argument(
            "--start-step",
            type=int,
            metavar="S",
            help="first step to capture (default: about 2 s of training ahead)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="SEC",
            help="how long to wait for the ranks (default: until the window should have "
            f"ended, plus {EXPORT_SLACK_S:.0f} s)",
        )
        parser.add_argument(
            "--status", action="store_true", help="show the job's ranks, steps and heartbeats"
        )
        parser.add_argument(
            "--cancel",
            action="store_true",
            help="withdraw the current request (ranks whose window has not opened drop it)",
        )
        parser.add_argument(
            "--pid",
            type=int,
            metavar="PID",
            help="first load the collector into this process (Python 3.14+, sys.remote_exec)",
        )

    def run(self, args: argparse.Namespace) -> int:
        run_dir = Path(args.run_dir).absolute()
        if args.pid is not None:
            inject_collector(args.pid, run_dir)
        if not run_dir.is_dir():
            raise RankscopeError(f"{args.run_dir}: no such run directory")
        problem = rundir.control_dir_problem(run_dir)
        if problem is not None:
            raise RankscopeError(f"{args.run_dir}: {problem}", EXIT_BAD_INPUT)
        if args.status:
            return show_status(run_dir, args.run_dir)
        if args.cancel:
            return cancel(run_dir, args.run_dir)
        if args.steps is None:
            if args.pid is not None:
                return 0
            raise RankscopeError("say how many steps to capture (--steps N) or use --status")
        if not 1 <= args.steps <= rundir.MAX_ATTACH_STEPS:
            raise RankscopeError(f"--steps must be 1..{rundir.MAX_ATTACH_STEPS}")
        if args.timeout is not None and args.timeout <= 0:
            raise RankscopeError("--timeout must be positive")
        return capture(run_dir, args.run_dir, args.steps, args.start_step, args.timeout)


# ---------------------------------------------------------------------- status


def _no_live_ranks_reason(run_dir: Path, shown: str, beats: dict[int, dict[str, Any]]) -> str:
    manifest = rundir.read_run_manifest(run_dir)
    if "exit_code" in manifest:
        return f"{shown}: the job has finished (exit code {manifest['exit_code']})"
    if beats and all(hb.get("state") == "stopped" for hb in beats.values()):
        return f"{shown}: every rank's collector has stopped (the job is ending or has ended)"
    if beats:
        return f"{shown}: no rank is running (every heartbeat is stopped or stale)"
    if rundir.is_run_dir(run_dir):
        return (
            f"{shown}: no rank heartbeats: the job has not started collecting yet, or its "
            "collector has attach turned off (control_period_s=0)"
        )
    return f"{shown}: not a run directory (no run.json, no rank manifests, no heartbeats)"


def _progress_records(run_dir: Path, beats: dict[int, dict[str, Any]]) -> dict[int, Any]:
    """Each rank's progress record (``rankscope.profiler.evidence``) of the process
    that beats now; a record that does not decode is left out of --status."""
    from rankscope.profiler import evidence

    records = {}
    for rank in evidence.ranks_with(run_dir, "progress.json"):
        with contextlib.suppress(Exception):
            record = evidence.read_progress(run_dir, rank)
            if record is not None and (rank not in beats or record.pid == beats[rank].get("pid")):
                records[rank] = record
    return records


def show_status(run_dir: Path, shown: str) -> int:
    now_ns = time.time_ns()
    bad: dict[str, str] = {}
    beats = rundir.read_heartbeats(run_dir, bad)
    acks = rundir.read_acks(run_dir)
    if not beats:
        reason = _no_live_ranks_reason(run_dir, shown, beats)
        if bad:
            name, why = next(iter(bad.items()))
            reason += f"; {len(bad)} heartbeat file(s) ignored ({name}: {why})"
        raise RankscopeError(reason, EXIT_NOTHING)
    rows = [["rank", "host", "pid", "state", "step", "steps/s", "heartbeat", "last attach"]]
    live = 0
    progress = _progress_records(run_dir, beats)
    for rank, hb in sorted(beats.items()):
        alive, state = liveness(hb, now_ns)
        if alive and rank in progress and progress[rank].state == "stalled":
            state = "stalled"  # alive (the heartbeat thread beats) but no training progress
        live += alive
        ack = acks.get(rank)
        last = "-"
        if ack is not None:
            last = f"{ack.get('state')} steps {_steps(ack)} ({ack.get('id')})"
        rate = _rate(hb)
        rows.append(
            [
                str(rank),
                str(hb.get("host", "?")),
                str(hb.get("pid", "?")),
                state,
                str(hb.get("step", "?")),
                f"{rate:.1f}" if rate else "-",
                f"{heartbeat_age_s(hb, now_ns):.1f} s ago",
                last,
            ]
        )
    world = max((int(hb.get("world_size") or 0) for hb in beats.values()), default=0)
    missing = missing_ranks(world, beats)
    if live:
        head = f"{shown}: job running, {live} of {max(world, len(beats))} rank(s) live"
    else:
        head = _no_live_ranks_reason(run_dir, shown, beats)
    print(head)
    print(_table(rows))
    if missing:
        print(f"no heartbeat from rank(s) {missing}")
    for name, why in sorted(bad.items()):
        print(f"ignored {rundir.CONTROL_DIR}/{name}: {why}")
    _show_progress(progress, beats, now_ns)
    return 0 if live else EXIT_NOTHING


def _show_progress(records: dict[int, Any], beats: dict[int, dict[str, Any]], now_ns: int) -> None:
    """Progress apart from liveness: stalled ranks and where they stand (progress.py)."""
    from rankscope.profiler.progress import stall_lines

    for line in stall_lines(records, now_ns):
        print(line)
    for rank in sorted(beats):
        alive, _ = liveness(beats[rank], now_ns)
        if not alive and rank in records and records[rank].state != "stopped":
            age = (now_ns - records[rank].ts_ns) / 1e9
            print(f"rank {rank}: dead or frozen (no progress record for {age:.0f} s)")


# ---------------------------------------------------------------------- cancel


def cancel(run_dir: Path, shown: str) -> int:
    """Remove the request file; ranks whose window has not opened answer "cancelled"."""
    previous = rundir.read_request(run_dir)
    path = rundir.request_path(run_dir)
    try:
        os.unlink(path)
    except FileNotFoundError:
        raise RankscopeError(f"{shown}: no attach request to cancel", EXIT_NOTHING) from None
    except OSError as e:
        raise RankscopeError(f"cannot remove {path}: {e.strerror}", EXIT_ENVIRONMENT) from None
    request_id = previous.get("id") if previous is not None else None
    if not isinstance(request_id, str):
        print(f"rankscope attach: removed an unreadable request from {shown}", file=sys.stderr)
        return 0
    now_ns = time.time_ns()
    live = {r for r, hb in rundir.read_heartbeats(run_dir).items() if liveness(hb, now_ns)[0]}
    acks = rundir.read_acks(run_dir)
    before = [answer_for(acks.get(r), request_id) for r in live]
    if before and all(a is not None and a.get("state") in FINAL_STATES for a in before):
        raise RankscopeError(
            f"{shown}: request {request_id} had already ended on every rank; nothing to cancel",
            EXIT_NOTHING,
        )
    print(f"rankscope attach: removed request {request_id}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + CANCEL_WAIT_S
    answers: dict[int, dict[str, Any]] = {}
    while True:
        acks = rundir.read_acks(run_dir)
        answers = {r: a for r in live if (a := answer_for(acks.get(r), request_id)) is not None}
        pending = [r for r, a in answers.items() if a.get("state") == "accepted"]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    rows = [["rank", "state", "steps", "reason"]]
    for rank in sorted(answers):
        a = answers[rank]
        rows.append([str(rank), str(a.get("state")), _steps(a), str(a.get("reason", ""))[:120]])
    if len(rows) > 1:
        print(_table(rows))
    started = sorted(r for r, a in answers.items() if a.get("state") in ("started", "done"))
    if started:
        print(
            f"rank(s) {', '.join(map(str, started))} had already begun the window; "
            f"it ends by itself within {rundir.MAX_ATTACH_STEPS} steps"
        )
    return 0


# ---------------------------------------------------------------------- capture


def _refuse_if_busy(run_dir: Path, live: dict[int, dict[str, Any]], now_ns: int) -> None:
    previous = rundir.read_request(run_dir)
    try:
        validate_request(previous)
    except BadRequest:
        return  # no request, or one no rank acts on: it holds nothing up
    assert previous is not None
    acks = rundir.read_acks(run_dir)
    answers = {r: answer_for(acks.get(r), previous["id"]) for r in live}
    running = sorted(
        r for r, a in answers.items() if a is not None and a.get("state") not in FINAL_STATES
    )
    try:
        steps = f"{previous['first_step']}-{previous['first_step'] + previous['steps'] - 1}"
    except (KeyError, TypeError):
        steps = "?"
    if running:
        raise RankscopeError(
            f"a capture is in progress (request {previous['id']}, steps {steps}, ranks "
            f"{', '.join(map(str, running))}); wait for it to end, see --status",
            EXIT_NOTHING,
        )
    age_s = (now_ns - int(previous.get("created_ns") or 0)) / 1e9
    if all(a is None for a in answers.values()) and 0 <= age_s < 3.0:
        raise RankscopeError(
            f"another attach wrote request {previous['id']} {age_s:.1f} s ago and no rank "
            "has answered yet; try again in a few seconds",
            EXIT_NOTHING,
        )


def capture(
    run_dir: Path, shown: str, steps: int, start_step: int | None, timeout: float | None
) -> int:
    live, beats, now_ns, started = _wait_for_every_rank(run_dir, shown)
    _refuse_if_busy(run_dir, live, now_ns)

    furthest = max(estimated_step(hb, now_ns) for hb in live.values())
    if start_step is None:
        first = choose_first_step(list(live.values()), now_ns, START_LEAD_S if started else LEAD_S)
    else:
        first = start_step
        if first - furthest > rundir.MAX_ATTACH_LEAD_STEPS:
            raise RankscopeError(
                f"--start-step {first} is more than {rundir.MAX_ATTACH_LEAD_STEPS} steps ahead "
                f"of the ranks (at step ~{math.floor(furthest)}); ranks refuse such requests"
            )
        if first - WARMUP_STEPS <= furthest:
            raise RankscopeError(
                f"--start-step {first} is too close: the ranks are at step ~{math.floor(furthest)} "
                f"(a window starts one warm-up step early); choose a step after "
                f"{math.floor(furthest) + WARMUP_STEPS + MIN_LEAD_STEPS}"
            )
    request = AttachRequest(new_request_id(), first, steps, now_ns, _requested_by())
    rate = min((_rate(hb) for hb in live.values() if _rate(hb) > 0), default=0.0)
    expected_s = (request.last_step + 1 - furthest) / rate if rate else None
    if timeout is None:
        timeout = (expected_s if expected_s is not None else 60.0) + EXPORT_SLACK_S
    try:
        rundir.write_json_atomic(rundir.request_path(run_dir), request.to_json())
    except OSError as e:
        raise RankscopeError(
            f"cannot write the request into {shown}: {e.strerror or e}", EXIT_ENVIRONMENT
        ) from e
    when = f", about {expected_s:.1f} s" if expected_s is not None else ""
    print(
        f"rankscope attach: asked {len(live)} rank(s) for steps {first}-{request.last_step} "
        f"(request {request.id}); ranks at step ~{math.floor(furthest)}{when}",
        file=sys.stderr,
        flush=True,
    )
    answers = _wait_for_answers(run_dir, request, set(live), timeout)
    return _print_result(run_dir, shown, request, beats, live, answers, timeout)


def _starting(beats: dict[int, dict[str, Any]], live: dict[int, dict[str, Any]]) -> bool:
    """A job still starting: a rank has no heartbeat yet, or a live one no step rate.

    A rank whose heartbeat went stale or stopped is not starting: it is gone, and
    the others are asked without it (the result names it).
    """
    world = max((int(hb["world_size"]) for hb in beats.values() if "world_size" in hb), default=0)
    return not live or len(beats) < world or not all(_rate(hb) for hb in live.values())


def _job_running(run_dir: Path) -> bool:
    """``rankscope run`` wrote run.json and no end yet: heartbeats may still come."""
    try:
        return "end_ns" not in rundir.read_json(run_dir / rundir.RUN_MANIFEST)
    except (OSError, ValueError, TypeError):
        return False


def _wait_for_every_rank(
    run_dir: Path, shown: str, wait_s: float = START_WAIT_S
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], int, bool]:
    """The live ranks' heartbeats once every rank of a starting job beats with a step rate.

    Right after a job starts some ranks have no heartbeat and the others no rate: a
    first step chosen then comes from the ranks that happen to be up, and ranks that
    start later or race through short steps miss it, so only some ranks capture. Wait
    (at most ``wait_s``) until that settles; otherwise refuse with one line and ask
    no rank at all, so either every rank captures the same steps or none is asked.
    The last value says whether the job was still starting (the rates are then young).
    """
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        now_ns = time.time_ns()
        beats = rundir.read_heartbeats(run_dir)
        live = {r: hb for r, hb in beats.items() if liveness(hb, now_ns)[0]}
        if (beats and not live) or (not beats and not _job_running(run_dir)):
            raise RankscopeError(_no_live_ranks_reason(run_dir, shown, beats), EXIT_NOTHING)
        if not _starting(beats, live):
            return live, beats, now_ns, told
        if time.monotonic() >= deadline:
            break
        if not told:
            print(
                "rankscope attach: waiting for every rank's heartbeat and step rate",
                file=sys.stderr,
                flush=True,
            )
            told = True
        time.sleep(0.25)
    if not beats:
        raise RankscopeError(_no_live_ranks_reason(run_dir, shown, beats), EXIT_NOTHING)
    world = max((int(hb["world_size"]) for hb in beats.values() if "world_size" in hb), default=0)
    absent = missing_ranks(world, beats) if len(beats) < world else ""
    no_rate = sorted(r for r, hb in live.items() if not _rate(hb))
    why = (
        f"no heartbeat yet from rank(s) {absent}"
        if absent
        else f"no step rate yet from rank(s) {', '.join(map(str, no_rate))}"
    )
    raise RankscopeError(
        f"{shown}: the job is still starting ({why} after {wait_s:.0f} s); no rank was asked,"
        " try again once `rankscope attach RUN --status` shows every rank stepping",
        EXIT_NOTHING,
    )


def _wait_for_answers(
    run_dir: Path, request: AttachRequest, ranks: set[int], timeout: float
) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    answers: dict[int, dict[str, Any]] = {}
    while True:
        acks = rundir.read_acks(run_dir)
        for r in ranks:
            a = answer_for(acks.get(r), request.id)
            if a is not None:
                answers[r] = a
        waiting = {r for r in ranks if answers.get(r, {}).get("state") not in FINAL_STATES}
        if not waiting or time.monotonic() >= deadline:
            return answers
        # A rank that stopped will not answer any more: no point waiting for it.
        now_ns = time.time_ns()
        beats = rundir.read_heartbeats(run_dir)
        if all(r in beats and not liveness(beats[r], now_ns)[0] for r in waiting):
            time.sleep(0.5)  # its last answer may be written just after the heartbeat
            acks = rundir.read_acks(run_dir)
            for r in waiting:
                a = answer_for(acks.get(r), request.id)
                if a is not None:
                    answers[r] = a
            return answers
        time.sleep(0.2)


def _print_result(
    run_dir: Path,
    shown: str,
    request: AttachRequest,
    beats: dict[int, dict[str, Any]],
    live: dict[int, dict[str, Any]],
    answers: dict[int, dict[str, Any]],
    timeout: float,
) -> int:
    rows = [["rank", "host", "state", "steps", "trace or reason"]]
    captured: list[int] = []
    silent: list[int] = []
    for rank in sorted(live):
        a = answers.get(rank)
        host = str(live[rank].get("host", "?"))
        if a is None or a.get("state") not in FINAL_STATES:
            silent.append(rank)
            state = "no answer" if a is None else f"{a.get('state')} (timed out)"
            rows.append([str(rank), host, state, "-", ""])
            continue
        if a["state"] == "done":
            captured.append(rank)
            detail = str(run_dir / str(a.get("file", "")))
        else:
            detail = str(a.get("reason", ""))
        rows.append([str(rank), host, str(a["state"]), _steps(a), detail])
    print(_table(rows))
    world = max((int(hb.get("world_size") or 0) for hb in beats.values()), default=0)
    unseen = missing_ranks(world, live)
    if silent:
        print(f"no answer within {timeout:.0f} s from rank(s) {', '.join(map(str, silent))}")
    if unseen:
        print(f"not asked (no live heartbeat): rank(s) {unseen}")
    if not captured:
        raise RankscopeError(
            f"no rank captured steps {request.first_step}-{request.last_step}", EXIT_NOTHING
        )
    spans = sorted({_steps(answers[r]) for r in captured})
    print(
        f"captured steps {', '.join(spans)} on {len(captured)} of {len(live)} rank(s); "
        f"see `rankscope report {shown}`"
    )
    return 0


# ---------------------------------------------------------------------- --pid


_INJECTED = """\
import sys
try:
    if {package_path!r} not in sys.path:
        sys.path.append({package_path!r})
    from rankscope.profiler.collector import Collector
    Collector(
        {run_dir!r},
        steps_from_optimizer=True,
        run_config={{"launcher": "rankscope attach --pid"}},
    ).start()
except Exception as e:
    print(f"rankscope: could not load the collector: {{type(e).__name__}}: {{e}}", file=sys.stderr)
"""


def inject_collector(pid: int, run_dir: Path, wait_s: float = 30.0) -> None:
    """Start a light collector (no window) inside process ``pid``, writing to ``run_dir``."""
    remote_exec = getattr(sys, "remote_exec", None)
    if remote_exec is None:
        raise RankscopeError(
            f"--pid needs Python 3.14 or newer (sys.remote_exec); this is Python "
            f"{sys.version.split()[0]}. Start the job under `rankscope run --profile off` "
            "or with rankscope.Collector instead",
            EXIT_ENVIRONMENT,
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise RankscopeError(f"--pid {pid}: no such process") from None
    except PermissionError:
        raise RankscopeError(f"--pid {pid}: not your process", EXIT_ENVIRONMENT) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    package_path = str(Path(rankscope.__file__).resolve().parent.parent)
    # The target reads the script when it reaches a safe point, so it must outlive
    # this call; it is removed once the rank's heartbeat shows it ran.
    fd, script = tempfile.mkstemp(prefix="rankscope-attach-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(_INJECTED.format(package_path=package_path, run_dir=str(run_dir)))
    os.chmod(script, 0o644)
    try:
        try:
            remote_exec(pid, script)
        except Exception as e:
            raise RankscopeError(
                f"--pid {pid}: sys.remote_exec failed ({type(e).__name__}: {e}); the target "
                "must run the same Python version and allow ptrace",
                EXIT_ENVIRONMENT,
            ) from e
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if any(hb.get("pid") == pid for hb in rundir.read_heartbeats(run_dir).values()):
                print(f"rankscope attach: collector running in pid {pid}", file=sys.stderr)
                return
            time.sleep(0.2)
        raise RankscopeError(
            f"--pid {pid}: no heartbeat within {wait_s:.0f} s (the process must be running "
            "Python code to reach a safe point; see its stderr)",
            EXIT_NOTHING,
        )
    finally:
        with contextlib.suppress(OSError):
            os.unlink(script)
