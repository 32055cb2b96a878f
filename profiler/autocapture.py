"""Capture that triggers itself: a profiler window when the light layer sees a slowdown start.

``SlowSteps.observe(step, step_ms, now_s)`` is pure logic (tests drive it with a
fake clock). A slowdown starts when ``consecutive`` steps in a row each take
more than ``median x (1 + margin)`` and ``median + min_excess_ms``, and more
than the 90th percentile + ``min_excess_ms`` (a noisy job needs a larger jump),
where ``median`` and the percentile are those of the ``history`` steps before
them (judged only once ``min_history`` steps are known, so start-up is never
compared with itself). Defaults: 3 steps, 50% and 5 ms above the median of the
50 steps before (and 5 ms above their 90th percentile). It then returns a
``Trigger`` (why it fired) if the rate limit allows: at most ``per_hour``
windows in any hour (3) and ``min_gap_s`` (300 s) apart; a slowdown seen while
the limit holds is counted in ``suppressed``. Once fired, the same slowdown
does not fire again: the detector re-arms only after a step back under the
threshold.

``AutoCapture`` runs on the recorder thread of rank 0 only (in a synchronous job a
slowdown on any rank lengthens every rank's steps, and one rank deciding means
one request). It feeds step records to ``SlowSteps`` and, on a trigger, writes a
request through the same control channel that ``rankscope attach`` uses
(``control/attach.request.json``, with a ``trigger`` field, format in
``rankscope.profiler.rundir``), so every rank captures the same steps, chosen
like attach chooses them (two seconds of training, at the slow steps' rate,
ahead of the furthest rank). A request still pending or running on some rank
is never replaced: the trigger then waits for the next slowdown. Each rank
copies the request's ``trigger`` into its manifest's ``windows`` entry.
Periodic stalls are not predicted: the window starts at the first step the
channel can reach, which for a slowdown that persists is a slow step.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rankscope.profiler import rundir
from rankscope.profiler.control import AttachRequest, ControlChannel, write_json_at
from rankscope.profiler.faults import Faults


@dataclass(frozen=True)
class Policy:
    """When a slowdown counts and how often it may capture (see the module docstring)."""

    margin: float = 0.5
    min_excess_ms: float = 5.0
    consecutive: int = 3
    history: int = 50
    min_history: int = 20
    per_hour: int = 3
    min_gap_s: float = 300.0
    steps: int = 3  # steps in a window

    @classmethod
    def from_json(cls, value: Any) -> Policy:
        """``True`` or a dict of Policy fields (``rankscope run``'s config); else ValueError."""
        if value is True:
            return cls()
        if isinstance(value, Policy):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"auto_capture must be True or a dict, not {type(value).__name__}")
        known = cls.__dataclass_fields__
        unknown = sorted(k for k in value if k not in known)
        if unknown:
            raise ValueError(f"unknown auto_capture field(s): {', '.join(unknown)}")
        policy = cls(**value)
        if not (1 <= policy.steps <= rundir.MAX_ATTACH_STEPS and policy.consecutive >= 1):
            raise ValueError("auto_capture: steps must be 1..100 and consecutive >= 1")
        return policy


@dataclass(frozen=True)
class Trigger:
    """Why a window was requested: what goes into the request and the manifest."""

    step: int  # the last of the slow steps
    median_ms: float
    threshold_ms: float
    recent_ms: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "slow_steps",
            "step": self.step,
            "median_ms": round(self.median_ms, 3),
            "threshold_ms": round(self.threshold_ms, 3),
            "recent_ms": [round(x, 3) for x in self.recent_ms],
        }


@dataclass
class SlowSteps:
    policy: Policy = field(default_factory=Policy)
    fired_at: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    suppressed: int = 0

    def __post_init__(self) -> None:
        self._history: deque[float] = deque(maxlen=self.policy.history)
        self._recent: deque[tuple[int, float]] = deque()
        self._armed = True

    def threshold_ms(self, median: float) -> float:
        p = self.policy
        ordered = sorted(self._history)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        return max(median * (1.0 + p.margin), median + p.min_excess_ms, p90 + p.min_excess_ms)

    def observe(self, step: int, step_ms: float, now_s: float) -> Trigger | None:
        """One finished step; a Trigger when it completes a slowdown that may capture."""
        p = self.policy
        if len(self._history) < p.min_history:
            self._history.append(step_ms)
            return None
        median = statistics.median(self._history)
        threshold = self.threshold_ms(median)
        if step_ms <= threshold:
            # Steps judged slow were held out of the history; they join it now.
            for _, ms in self._recent:
                self._history.append(ms)
            self._recent.clear()
            self._history.append(step_ms)
            self._armed = True
            return None
        self._recent.append((step, step_ms))
        if len(self._recent) < p.consecutive:
            return None
        if len(self._recent) > p.consecutive:
            # A slowdown that lasts: its steps become the new normal, one by one.
            self._history.append(self._recent.popleft()[1])
        if not self._armed:
            return None
        self._armed = False
        if not self.allowed(now_s):
            self.suppressed += 1
            return None
        self.fired_at.append(now_s)
        return Trigger(step, median, threshold, tuple(ms for _, ms in self._recent))

    def allowed(self, now_s: float) -> bool:
        p = self.policy
        if self.fired_at and now_s - self.fired_at[-1] < p.min_gap_s:
            return False
        return sum(1 for t in self.fired_at if now_s - t < 3600.0) < p.per_hour

    def next_allowed_s(self, now_s: float) -> float:
        """Seconds until the rate limit would let a window through (0 when it would now)."""
        p = self.policy
        wait = 0.0
        if self.fired_at:
            wait = max(wait, self.fired_at[-1] + p.min_gap_s - now_s)
        in_hour = sorted(t for t in self.fired_at if now_s - t < 3600.0)
        if len(in_hour) >= p.per_hour:
            wait = max(wait, in_hour[len(in_hour) - p.per_hour] + 3600.0 - now_s)
        return max(0.0, wait)


def new_request_id(rank: int) -> str:
    import secrets

    return f"auto-{time.strftime('%Y%m%dT%H%M%S')}-r{rank}-{secrets.token_hex(2)}"


class AutoCapture:
    """Rank 0's trigger: step records in, attach requests out (recorder thread)."""

    def __init__(
        self,
        run_dir: Any,
        rank: int,
        faults: Faults,
        control: ControlChannel,
        policy: Policy,
        *,
        warmup_steps: int = 1,
        current_step: Any = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.faults = faults
        self.control = control
        self.detector = SlowSteps(policy)
        self.warmup_steps = warmup_steps
        self._current_step = current_step
        self._clock = clock
        self._said_suppressed = -1e18
        self.requests: list[AttachRequest] = []

    @property
    def disabled(self) -> bool:
        return self.faults.disabled("auto-capture") or self.control.disabled

    def feed(self, steps: Sequence[tuple[Any, ...]]) -> None:
        """Step records ``(step, start_ns, end_ns, data_ns, capture)`` in order; never raises.

        Steps a capture touched (``capture`` set) are skipped: a window's own stop must
        not count as a slowdown, nor lift the median the next one is judged against.
        """
        if self.disabled:
            return
        try:
            for record in steps:
                if len(record) > 4 and record[4]:
                    continue  # the collector's own capture cost: neither baseline nor slowdown
                step, start, end = int(record[0]), int(record[1]), int(record[2])
                now = self._clock()
                before = self.detector.suppressed
                trigger = self.detector.observe(step, (end - start) / 1e6, now)
                if trigger is not None:
                    self.fire(trigger)
                elif self.detector.suppressed > before and now - self._said_suppressed >= 60:
                    # At most one line a minute: a job that keeps stalling must not fill the log.
                    self._said_suppressed = now
                    self.faults.log(
                        "auto-capture",
                        f"slowdown at step {step} not captured: at most "
                        f"{self.detector.policy.per_hour} windows an hour, "
                        f"{self.detector.policy.min_gap_s:.0f} s apart (next in "
                        f"{self.detector.next_allowed_s(now):.0f} s)",
                    )
        except Exception as e:
            self.faults.disable("auto-capture", e)

    def fire(self, trigger: Trigger) -> AttachRequest | None:
        from rankscope.profiler.commands.attach import LEAD_S, MIN_LEAD_STEPS, liveness

        now_ns = time.time_ns()
        busy = self._busy(now_ns)
        if busy:
            self.faults.log("auto-capture", f"slowdown at step {trigger.step} not captured: {busy}")
            self.detector.fired_at.pop()  # it did not capture: no rate spent
            return None
        # Like attach: LEAD_S of training past the furthest rank, but counted at the
        # slow steps' rate (the heartbeats' rate still holds the fast steps before,
        # and a lead of fast steps would land the window long after the slowdown).
        heartbeats = rundir.read_heartbeats(self.run_dir).values()
        furthest = max(
            (int(hb.get("step", 0)) for hb in heartbeats if liveness(hb, now_ns)[0]), default=0
        )
        current = trigger.step + 1
        if self._current_step is not None:
            current = max(current, int(self._current_step()))
        rate = 1000.0 / max(min(trigger.recent_ms), 1e-3)
        lead = max(MIN_LEAD_STEPS, math.ceil(rate * LEAD_S))
        first = max(furthest, current) + lead + self.warmup_steps
        request = AttachRequest(
            new_request_id(self.rank),
            first,
            self.detector.policy.steps,
            now_ns,
            f"rankscope auto-capture on rank {self.rank}",
            trigger.to_json(),
        )
        write_json_at(self.control.dir_fd(), rundir.REQUEST_FILE, request.to_json())
        self.requests.append(request)
        self.faults.log(
            "auto-capture",
            f"steps {trigger.step - len(trigger.recent_ms) + 1}-{trigger.step} took "
            f"{', '.join(f'{x:.1f}' for x in trigger.recent_ms)} ms (median "
            f"{trigger.median_ms:.1f} ms): requested steps {request.first_step}-"
            f"{request.last_step} (request {request.id})",
        )
        self.control.flush_wanted = True
        return request

    def _busy(self, now_ns: int) -> str | None:
        """Why a request must not be written now (one pending or running), or None."""
        from rankscope.profiler.commands.attach import FINAL_STATES, answer_for
        from rankscope.profiler.control import BadRequest, validate_request

        previous = rundir.read_request(self.run_dir)
        try:
            old = validate_request(previous)
        except BadRequest:
            return None
        acks = rundir.read_acks(self.run_dir)
        answers = [answer_for(a, old.id) for a in acks.values()]
        if any(a is not None and a.get("state") not in FINAL_STATES for a in answers):
            return f"request {old.id} is still pending or running"
        if all(a is None for a in answers) and 0 <= now_ns - old.created_ns < 5_000_000_000:
            return f"request {old.id} was just written and not answered yet"
        return None
