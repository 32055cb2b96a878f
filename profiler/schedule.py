"""Which training steps get a torch.profiler window.

``parse_profile_steps(spec)`` turns what a user writes into a ``ProfilePlan``:
``None``/``"off"`` (no windows), ``"5-7"`` / ``"5"`` / ``"5-7,20-22"`` (inclusive
step ranges), an ``int``, a ``range`` (Python semantics: ``range(5, 8)`` is steps
5, 6, 7), a list of those, or a ``ProfileSchedule`` (torch.profiler's
wait/warmup/active/repeat cycle over absolute step numbers). A plan answers two
questions, both in collector step numbers: ``window_at(step)`` (the window whose
warm-up or recording covers ``step``, if any) and ``windows()`` (all of them).

Pure standard library, no torch: the ``rankscope run`` command validates specs
with it before it starts the job.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rankscope.profiler.errors import EXIT_BAD_INPUT, RankscopeError
from rankscope.profiler.layout import MAX_STEP

# Bounds the number of windows a repeat=0 ("forever") schedule is searched for.
_MAX_SCHEDULE_WINDOWS = 1_000_000
# The most steps one window records (or warms up for): a trace of more would not
# fit in memory, let alone a file; and no step number beyond ``layout.MAX_STEP``.
MAX_WINDOW_STEPS = 1000


@dataclass(frozen=True)
class Window:
    """Record steps first..last (inclusive), preceded by ``warmup`` profiler warm-up steps."""

    first: int
    last: int
    warmup: int = 1

    @property
    def begin(self) -> int:
        """The step at whose start the profiler starts (warm-up included)."""
        return max(0, self.first - self.warmup)


@dataclass(frozen=True)
class ProfileSchedule:
    """torch.profiler.schedule's cycle, counted in collector steps from step 0.

    Skip ``skip_first`` steps, then repeat: ``wait`` idle steps, ``warmup``
    warm-up steps, ``active`` recorded steps. ``repeat=0`` repeats until the
    job ends (each window is a file: mind the disk).
    """

    wait: int = 0
    warmup: int = 1
    active: int = 3
    repeat: int = 1
    skip_first: int = 0

    def __post_init__(self) -> None:
        if self.active < 1:
            raise RankscopeError("profile schedule: active must be at least 1", EXIT_BAD_INPUT)
        if min(self.wait, self.warmup, self.repeat, self.skip_first) < 0:
            raise RankscopeError("profile schedule: counts must not be negative", EXIT_BAD_INPUT)
        if max(self.active, self.warmup) > MAX_WINDOW_STEPS:
            raise RankscopeError(
                f"profile schedule: active and warmup must be at most {MAX_WINDOW_STEPS} steps",
                EXIT_BAD_INPUT,
            )
        if max(self.wait, self.repeat, self.skip_first) > MAX_STEP:
            raise RankscopeError(
                f"profile schedule: counts must be at most {MAX_STEP}", EXIT_BAD_INPUT
            )


class ProfilePlan:
    """The windows to record, answered lazily (a schedule may never end)."""

    def __init__(
        self,
        windows: list[Window] | None = None,
        schedule: ProfileSchedule | None = None,
        spec: str = "off",
    ) -> None:
        self._explicit = sorted(windows or [], key=lambda w: w.first)
        self._schedule = schedule
        self.spec = spec
        for w in self._explicit:
            if w.last > MAX_STEP or w.last - w.first + 1 > MAX_WINDOW_STEPS:
                raise RankscopeError(
                    f"bad profile steps {w.first}-{w.last}: a window records at most"
                    f" {MAX_WINDOW_STEPS} steps, each at most {MAX_STEP}",
                    EXIT_BAD_INPUT,
                )
        for a, b in itertools.pairwise(self._explicit):
            if b.begin <= a.last:
                raise RankscopeError(
                    f"profile steps overlap: {a.first}-{a.last} and {b.first}-{b.last} "
                    "(a window needs its warm-up step free)",
                    EXIT_BAD_INPUT,
                )

    @property
    def empty(self) -> bool:
        return not self._explicit and self._schedule is None

    def windows(self) -> Iterator[Window]:
        yield from self._explicit
        s = self._schedule
        if s is None:
            return
        cycle = s.wait + s.warmup + s.active
        count = s.repeat if s.repeat > 0 else _MAX_SCHEDULE_WINDOWS
        for k in range(count):
            first = s.skip_first + k * cycle + s.wait + s.warmup
            yield Window(first, first + s.active - 1, s.warmup)

    def next_window(self, step: int) -> Window | None:
        """The first window that has not begun before ``step`` (begin >= step)."""
        for w in self.windows():
            if w.begin >= step:
                return w
        return None

    def window_at(self, step: int) -> Window | None:
        """The window whose warm-up or recorded steps include ``step``."""
        for w in self.windows():
            if w.begin > step:
                return None
            if w.begin <= step <= w.last:
                return w
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec}
        if self._explicit:
            out["windows"] = [[w.first, w.last] for w in self._explicit]
        if self._schedule is not None:
            s = self._schedule
            out["schedule"] = {
                "wait": s.wait,
                "warmup": s.warmup,
                "active": s.active,
                "repeat": s.repeat,
                "skip_first": s.skip_first,
            }
        return out


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_SCHEDULE_KEYS = ("wait", "warmup", "active", "repeat", "skip_first")


def _parse_text(text: str, warmup: int) -> ProfilePlan:
    text = text.strip()
    if text.lower() in ("", "off", "none", "no"):
        return ProfilePlan(spec="off")
    if "=" in text:
        # "wait=1,warmup=1,active=3,repeat=2": a schedule written on the command line.
        fields: dict[str, int] = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if key not in _SCHEDULE_KEYS or not value.strip().isdigit():
                raise RankscopeError(
                    f"bad profile schedule {text!r}: use e.g. wait=1,warmup=1,active=3,repeat=1",
                    EXIT_BAD_INPUT,
                )
            fields[key] = int(value)
        return ProfilePlan(schedule=ProfileSchedule(**fields), spec=text)
    windows = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if not m:
            raise RankscopeError(
                f"bad profile steps {text!r}: use e.g. 5-7, 5-7,20-22, off", EXIT_BAD_INPUT
            )
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise RankscopeError(f"bad profile steps {part.strip()!r}: end before start")
        windows.append(Window(first, last, warmup))
    return ProfilePlan(windows=windows, spec=text)


def parse_profile_steps(spec: Any, warmup: int = 1) -> ProfilePlan:
    """Turn a user's ``profile_steps`` value into a plan (see the module docstring).

    ``warmup`` is the number of profiler warm-up steps before each explicit range
    (fewer when the range starts near step 0). Raises ``RankscopeError`` on a bad spec.
    """
    if isinstance(spec, ProfilePlan):
        return spec
    if spec is None or spec is False:
        return ProfilePlan(spec="off")
    if isinstance(spec, ProfileSchedule):
        return ProfilePlan(schedule=spec, spec=repr(spec))
    if isinstance(spec, bool):
        raise RankscopeError("profile_steps=True is ambiguous: give steps such as '5-7'")
    if isinstance(spec, int):
        if spec < 0:
            raise RankscopeError(f"bad profile step {spec}: steps start at 0")
        return ProfilePlan(windows=[Window(spec, spec, warmup)], spec=str(spec))
    if isinstance(spec, range):
        if spec.step != 1 or len(spec) == 0 or spec.start < 0:
            raise RankscopeError(f"bad profile range {spec!r}: need a non-empty range with step 1")
        return ProfilePlan(
            windows=[Window(spec.start, spec.stop - 1, warmup)],
            spec=f"{spec.start}-{spec.stop - 1}",
        )
    if isinstance(spec, str):
        return _parse_text(spec, warmup)
    if isinstance(spec, (list, tuple)):
        windows: list[Window] = []
        for item in spec:
            windows.extend(parse_profile_steps(item, warmup)._explicit)
        spec_text = ",".join(f"{w.first}-{w.last}" for w in windows) or "off"
        return ProfilePlan(windows=windows, spec=spec_text)
    raise RankscopeError(f"profile_steps: cannot use a {type(spec).__name__}")
