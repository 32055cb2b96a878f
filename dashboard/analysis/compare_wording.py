"""Every sentence a user reads about a comparison of two runs (``rankscope compare``).

The one home of this wording, shared by ``analysis.compare`` (sentences written
into the ``rankscope.compare/1`` JSON), the renderer (``compare_render``) and
the dashboard's Compare page. Functions take plain numbers and words and return
strings; they decide nothing. Cause names come from ``wording``.
"""

from __future__ import annotations

from rankscope.dashboard.analysis.wording import cause_name, ranks_text

# A component of the step, in the user's words.
COMPONENT_NAME = {
    "compute": "compute",
    "communication": "exposed communication",
    "waiting": "waiting for other ranks",
    "memcpy": "memory copies",
    "data_loading": "data loading",
    "host": "host-side work",
    "idle": "idle",
    "untraced": "the rest of the step (no trace window)",
}
BASIS_TEXT = {
    "trace": "from the trace windows",
    "light": "from the step timer over every step (no trace window on both sides)",
}
# The dashboard's Compare page: A is BASE, B is NEW.
STEP_CHANGE = "step time"
WATERFALL_CAPTION = (
    "A is BASE, B is NEW. Each bar is how much one part of the step changed (mean over"
    " the ranks both have); they add up to the step-time change, the last bar."
)
VERDICT_TEXT = {
    "slower": "NEW is slower",
    "faster": "NEW is faster",
    "no_significant_change": "No significant change",
}


def component_name(component: str) -> str:
    return COMPONENT_NAME.get(component, component.replace("_", " "))


def _signed(x: float, unit: str = " ms") -> str:
    return f"{x:+.1f}{unit}"


def interval_text(low_ms: float, high_ms: float) -> str:
    return f"90% interval {_signed(low_ms)} to {_signed(high_ms)}"


def headline(
    verdict: str,
    base_ms: float,
    new_ms: float,
    delta_ms: float,
    delta_pct: float | None,
    low_ms: float,
    high_ms: float,
    origin: tuple[int, str, float] | None,
    machine: tuple[int, float, float | None] | None = None,
) -> str:
    """ "NEW is slower: step time 40.1 -> 101.3 ms (+61.2 ms, +153%; 90% interval ...).
    It starts on rank 2: data loading +59.8 ms." """
    pct = f", {delta_pct:+.0f}%" if delta_pct is not None else ""
    noise = "; within noise" if verdict == "no_significant_change" and machine is None else ""
    text = (
        f"{VERDICT_TEXT[verdict]}: step time {base_ms:.1f} -> {new_ms:.1f} ms"
        f" ({_signed(delta_ms)}{pct}; {interval_text(low_ms, high_ms)}{noise})."
    )
    if machine is not None:
        rank, runq, job = machine
        text = (
            f"No significant change in the job: step time {base_ms:.1f} -> {new_ms:.1f} ms"
            f" ({_signed(delta_ms)}{pct}), the machine's load: {_who_waited(rank, runq, job)}"
            " a step for a CPU, with the same CPU time."
        )
    if origin is not None:
        rank, component, d = origin
        if component == "idle":
            text += (
                f" It starts on rank {rank}: time outside any traced op {_signed(d)} (Python or"
                " I/O the profiler does not see), which the other ranks wait for."
            )
        else:
            text += f" It starts on rank {rank}: {component_name(component)} {_signed(d)}."
    return text


def evidence(
    verdict: str,
    components: list[tuple[str, float]],
    ranks: list[tuple[int, float]],
    straggler_sentences: list[str],
) -> list[str]:
    """The verdict's evidence: where the change went, which ranks changed, stragglers."""
    out = []
    moved = sorted((c for c in components if abs(c[1]) >= 0.05), key=lambda c: -abs(c[1]))
    if moved and verdict != "no_significant_change":
        parts = ", ".join(f"{component_name(c)} {_signed(d)}" for c, d in moved[:4])
        out.append(f"Where the change went (mean over ranks): {parts}.")
    if ranks and verdict != "no_significant_change":
        listed = ", ".join(f"rank {r} {_signed(d)}" for r, d in ranks[:8])
        more = f" and {len(ranks) - 8} more" if len(ranks) > 8 else ""
        out.append(f"Ranks whose step time changed beyond noise: {listed}{more}.")
    out.extend(straggler_sentences)
    return out


def _cause(c: tuple[str, str, str | None]) -> str:
    """ "persistent straggler (data loading)": the pattern, then the cause in brackets
    (a cause reads "host-side work outside any traced op", too long to sit inside)."""
    cause, pattern, detail = c
    return f"{pattern} straggler ({cause_name(cause, detail)})"


def _an(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def straggler_change(
    rank: int,
    kind: str,
    base: tuple[str, str, str | None] | None,
    new: tuple[str, str, str | None] | None,
) -> str:
    """ "Rank 3 became a persistent straggler (data loading)." and the like."""
    if kind == "appeared" and new is not None:
        return f"Rank {rank} became {_an(_cause(new))}."
    if kind == "gone" and base is not None:
        return f"The {_cause(base)} on rank {rank} is gone."
    if kind == "changed" and base is not None and new is not None:
        return (
            f"Rank {rank} is still a straggler, now {_an(_cause(new))} (was {_an(_cause(base))})."
        )
    if new is not None:
        return f"Rank {rank} is {_an(_cause(new))} in both runs."
    return f"Rank {rank}: no straggler."


def scope_notes(
    base_world: int,
    new_world: int,
    base_only: list[int],
    new_only: list[int],
    base_steps: int,
    new_steps: int,
    basis: str,
    traced: tuple[bool, bool],
) -> list[str]:
    """What the two runs do not share, so the reader knows what was left out."""
    out = [f"Compared {BASIS_TEXT[basis]}: {base_steps} step(s) in BASE, {new_steps} in NEW."]
    if base_world != new_world:
        out.append(f"World sizes differ: {base_world} in BASE, {new_world} in NEW.")
    if base_only:
        out.append(f"{ranks_text(base_only)} only in BASE: left out.")
    if new_only:
        out.append(f"{ranks_text(new_only)} only in NEW: left out.")
    if basis == "light" and any(traced):
        side = "BASE" if traced[0] else "NEW"
        out.append(
            f"Only {side} has a trace window: the step timer is compared, and collectives"
            " and kernels are not."
        )
    return out


def nothing_to_compare(path: str) -> str:
    return f"{path}: no step times to compare (neither a trace window nor a step timer)"


def no_shared_ranks(base: list[int], new: list[int]) -> str:
    return (
        f"the runs share no rank with step times (BASE: {ranks_text(base)}; "
        f"NEW: {ranks_text(new)}); choose --ranks both have"
    )


def bad_condition(text: str, metrics: list[str]) -> str:
    return (
        f"--fail-if {text!r}: expected METRIC>+N% or METRIC>+Nms (METRIC one of "
        f"{', '.join(metrics)}) or new-straggler"
    )


def condition_not_measured(text: str) -> str:
    return f"{text}: not measured in these runs (does not hold)."


def condition_result(
    text: str, delta_ms: float, low_ms: float, high_ms: float, holds: bool, past: bool
) -> str:
    change = f"{_signed(delta_ms)} ({interval_text(low_ms, high_ms)})"
    if holds:
        return f"FAIL {text}: {change}."
    why = "within noise" if past else "below the threshold"
    return f"ok   {text}: {change}, {why}."


def new_straggler_condition(ranks: list[int], low: list[int] | None = None) -> str:
    """``ranks``: new stragglers above low severity; ``low``: new ones of low severity
    (a few steps' noise on a busy machine), named but not failing the gate."""
    also = (
        f" ({ranks_text(low)} named at low severity only: within a busy machine's noise)"
        if low
        else ""
    )
    if ranks:
        return f"FAIL new-straggler: {ranks_text(ranks)} became straggler(s){also}."
    return f"ok   new-straggler: no new straggler{also}."


def uniform_compute(
    ratio: float, work: list[tuple[str, float, float, float]], traced: bool = True
) -> str:
    """Compute changed the same way on every rank: say what the kernels say it is.

    ``work``: (name, calls a step in BASE, in NEW, ms change) of the kernels whose calls
    changed (``compare.work_changes``); empty where the same kernels ran as often."""
    lead = f"Compute changed x{ratio:.2f} on every rank"
    if work:
        listed = ", ".join(
            f"{name} {calls_text(b)} -> {calls_text(n)} calls a step ({_signed(d)})"
            for name, b, n, d in work[:3]
        )
        return (
            f"{lead}, and so did the work: {listed}. The code or the model changed, not only"
            " the machine."
        )
    if not traced:
        return (
            f"{lead}: the same work on a machine under a different load (CPU contention,"
            " clocks, another job), or a change of the work on every rank. Compare runs made"
            " under the same load before blaming the code."
        )
    return (
        f"{lead}, with the same kernels called as often, each taking longer or shorter:"
        " a machine under a different load (CPU contention, clocks, another job), or"
        " larger inputs to the same kernels (a wider model, a bigger batch; record shapes"
        " to tell). Compare runs made under the same load before blaming the code."
    )


def calls_text(calls: float) -> str:
    return f"{calls:.0f}" if calls >= 10 or calls == int(calls) else f"{calls:.1f}"


def _more_or_less(ms: float) -> str:
    return f"{abs(ms):.1f} ms {'more' if ms >= 0 else 'less'}"


def _by_job(runq_ms: float, job_ms: float | None) -> bool:
    """Whether the job's wait (the longest of any rank at each step) moved further than
    one rank's: the machine's part is then the job's."""
    return job_ms is not None and abs(job_ms) > abs(runq_ms) and job_ms * runq_ms >= 0


def _who_waited(rank: int, runq_ms: float, job_ms: float | None) -> str:
    if job_ms is not None and _by_job(runq_ms, job_ms):
        return (
            f"the ranks waited {_more_or_less(job_ms)} (the longest wait of any rank at each"
            f" step; rank {rank} alone {_more_or_less(runq_ms)})"
        )
    return f"rank {rank} waited {_more_or_less(runq_ms)}"


def machine_sentence(
    verdict: str,
    rank: int,
    runq_ms: float,
    cpu_ms: float,
    step_ms: float,
    discounted: bool,
    job_ms: float | None = None,
) -> str | None:
    """The machine's part of the change: the training threads' wait for a CPU (``job_ms``:
    the job's wait, the longest of any rank at each step, where recorded)."""
    if job_ms is not None and _by_job(runq_ms, job_ms):
        who, ms = _who_waited(rank, runq_ms, job_ms), job_ms
    else:
        who, ms = f"rank {rank}'s training thread waited {_more_or_less(runq_ms)}", runq_ms
    if discounted:
        return (
            f"The step is {_signed(step_ms)} in NEW, but {who} a step for a CPU (run queue)"
            f" while the threads' CPU time moved {_signed(cpu_ms)}: the same work on a"
            " machine under a different load, not a change of the job."
        )
    moved = verdict != "no_significant_change" and ms * step_ms > 0
    if moved and abs(ms) >= 0.25 * abs(step_ms):
        return (
            f"Part of it is the machine: {who} a step for a CPU (run queue); the threads'"
            f" CPU time moved {_signed(cpu_ms)}."
        )
    return None
