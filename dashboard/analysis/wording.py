"""Every sentence a user reads about a run: cause names, verdicts, finding texts.

The one home of this wording, shared by the text/markdown report
(``rankscope.dashboard.render``), the findings and straggler evidence (written
into the report dict) and the dashboard's views. Functions take plain numbers
(or the small result types) and return strings; they decide nothing about the
run, so the report and the dashboard can never word the same fact two ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rankscope.dashboard.analysis.results import LastArrival, Straggler

CONTENTION_EXPLANATION = (
    "the rank was ready to run but not scheduled: another process or CPU throttling on its host"
)


class RankEvidence(Protocol):
    """What the evidence sentences read (``evidence.RankEvidence`` or the report's)."""

    @property
    def rank(self) -> int: ...
    @property
    def used(self) -> list[str]: ...
    @property
    def unused(self) -> list[str]: ...
    @property
    def problems(self) -> list[str]: ...
    @property
    def problem_count(self) -> int: ...


# Why a straggler is late, in the user's words.
CAUSE_NAME = {
    "data_loading": "data loading",
    "host": "host-side work",
    "gpu_compute": "more GPU compute",
    "cpu_compute": "more CPU work",
    "communication": "communication",
    "hardware": "a throttled GPU",
    "host_contention": "host CPU contention",
    "unknown": "unknown cause",
}
# What a cause name leaves unsaid, where the dashboard has room to say it.
CAUSE_EXPLANATION = {
    "communication": "its other collectives are what it was doing",
    "unknown": "see the breakdown of its extra time",
    "host_contention": CONTENTION_EXPLANATION,
    "cpu_compute": (
        "its CPU operators in a trace window; over the whole run, its training thread's CPU"
        " time, operators and Python alike"
    ),
}
UNTRACED_NAME = "host-side work outside any traced op"
# Light layer, no GPU: the lateness is neither CPU time, run-queue wait nor data loading.
OFF_CPU_NAME = "time off the CPU (blocking I/O, a sleep or a lock)"

NO_FINDINGS = "No findings worth a line: nothing would save 5% of the step."


def no_findings(verdict_rank: int | None) -> str:
    """The line where no finding is worth one: under a verdict that names a straggler
    (from the whole run), it must not read as "nothing wrong"."""
    if verdict_rank is None:
        return NO_FINDINGS
    return (
        f"No further findings: the verdict above (rank {verdict_rank}) is the one to act on;"
        " the trace window's steps show nothing else that would save 5% of the step."
    )


# The Overview's waiting tile: every rank's wait, averaged (the per-rank table's wait column).
WAIT_TILE = "Mean wait, all ranks"
WAIT_TILE_HELP = (
    "Each rank's time waiting in collectives per step, averaged over every rank, the"
    ' straggler included (it waits least). The callout\'s "the other ranks wait" is what'
    " the ranks other than the straggler wait for it."
)


def rank_table_summary(n_ranks: int, named: list[int]) -> str:
    """The line above a per-rank table summarised for many ranks."""
    who = f"{ranks_text(named)} (stragglers, then the most unusual ranks), then" if named else ""
    return (
        f"{n_ranks:,} ranks: {who} percentiles over all ranks; --all-ranks prints every rank"
    ).replace(":  ", ": ")


EQUAL_STEPS_PCT = 5.0  # step times this close count as equal in the step-bars caption


def step_bars_caption(shortest_ms: float | None, longest_ms: float | None) -> str:
    """The caption of the step time per rank bars, true for the bars it sits under."""
    if shortest_ms is None or longest_ms is None or not shortest_ms > 0:
        return "How each rank fills its step is on the right."
    spread = 100 * (longest_ms - shortest_ms) / shortest_ms
    if spread < EQUAL_STEPS_PCT:
        return (
            f"The bars are within {spread:.0f}% of each other, as synchronous training makes"
            " them: every rank waits for the others at each collective. What differs is how"
            " each rank fills its step (right)."
        )
    return (
        f"The bars range from {ms(shortest_ms)} to {ms(longest_ms)} ms ({spread:.0f}% apart)."
        " Synchronous training evens steps out over many; over a few steps each rank's own"
        " step marks start and end at different moments (a late rank's step ends late too)."
        " Where each rank's step goes is on the right."
    )


NO_GPU_CPU_ONLY = (
    "No GPU events in these traces: a CPU-only job, so no GPU was busy to measure. This page"
    " needs a run on GPUs: the trace's CUDA kernels (torch.profiler records them whenever the"
    " job uses CUDA) and NVML samples (the collector takes them where nvidia-ml-py finds an"
    " NVIDIA driver). Host CPU telemetry, when recorded, is below."
)
# The one order of every findings list (``findings.finding_order``), as its heading says it.
FINDINGS_ORDER = "most severe first, then the largest saving"
TELEMETRY_ONLY_TEXT = "telemetry only, no profiler trace yet."


def cause_name(cause: str, detail: str | None = None) -> str:
    if cause == "host" and detail == "untraced":
        return UNTRACED_NAME
    if detail == "off_cpu":
        return OFF_CPU_NAME
    return CAUSE_NAME.get(cause, cause.replace("_", " "))


def cause_explained(cause: str, detail: str | None = None) -> str:
    """The cause name with its explanation in brackets, where it has one."""
    why = CAUSE_EXPLANATION.get(cause)
    return f"{cause_name(cause, detail)} ({why})" if why else cause_name(cause, detail)


def stalls_text(steps: list[tuple[int, float]]) -> str:
    """ "stalled ~302 ms at step 11" (or "~300 ms at step 11, ~280 ms at step 15")."""
    parts = [f"~{lag:.0f} ms at step {step}" for step, lag in steps[:5]]
    more = f" and {len(steps) - 5} more step(s)" if len(steps) > 5 else ""
    return "stalled " + ", ".join(parts) + more


# --- the verdict: the report's first sentence and the dashboard's callout ---


def run_scope(n_ranks: int, world_size: int, steps: list[int], step_ms_text: str) -> str:
    """ "4 rank(s) of 4, steps 2-7, 151.2 ms/step on average." (a trace with no step marks
    reads as one window of that length, never as a per-step figure)."""
    if not steps:
        return f"{n_ranks} rank(s) of {world_size}, {whole_trace_window(step_ms_text)}"
    step_txt = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    return f"{n_ranks} rank(s) of {world_size}, {step_txt}, {step_ms_text} ms/step on average."


def whole_trace_window(window_ms_text: str) -> str:
    """What a trace without ProfilerStep ranges or step marks is measured over."""
    return (
        f"no steps marked (no ProfilerStep): the whole trace is one window of"
        f" {window_ms_text} ms, and every ms/step figure below is per that window."
    )


def whole_run_scope(n_ranks: int, world_size: int, first: int, last: int) -> str:
    """The run line of a run without a trace window, read from the light layer."""
    return (
        f"{n_ranks} rank(s) of {world_size}, steps {first}-{last} from the light layer"
        " (no trace window)."
    )


def whole_run_heading(first: int, last: int, n_steps: int) -> str:
    return f"Whole run, from the light layer (steps {first}-{last}, {n_steps} steps):"


def capture_steps_left_out(n_steps: int) -> str:
    """The whole run's steps that rankscope's own profiler windows touched."""
    return (
        f"{n_steps} step(s) left out: rankscope's own profiler window started, stopped or"
        " wrote its trace there (capture, not the job)."
    )


ROTATING_WHOLE_RUN = "Lateness rotates between ranks over the run (no single straggler)."
NO_STRAGGLER_WHOLE_RUN = "No straggler over the whole run."


def telemetry_only(n_ranks: int, world_size: int, light_steps: bool = False) -> str:
    """The run line of a run with no trace window and no whole-run verdict; ``light_steps``:
    its ranks recorded steps, yet the whole run could not be judged (the warnings say why)."""
    if light_steps:
        return (
            f"{n_ranks} rank(s) of {world_size}: the light layer only (step timer, no profiler"
            " trace window), and no whole-run verdict from it (see the warnings for why)."
        )
    return f"{n_ranks} rank(s) of {world_size}: {TELEMETRY_ONLY_TEXT}"


def straggler_verdict(
    rank: int,
    cause: str,
    severity: str,
    caused_wait_ms: float,
    pattern: str = "persistent",
    steps: list[tuple[int, float]] | None = None,
    detail: str | None = None,
) -> str:
    """The report's one-line verdict on the worst straggler."""
    if pattern == "intermittent" and steps:
        return (
            f"Rank {rank} {stalls_text(steps)} ({cause_name(cause, detail)}, {severity}):"
            " the other ranks waited for it there."
        )
    return (
        f"Rank {rank} is the straggler ({cause_name(cause, detail)}, {severity}): the other"
        f" ranks wait ~{caused_wait_ms:.1f} ms/step for it."
    )


def ms(x: float) -> str:
    """A duration in ms: the one rounding rule of every ms figure a user reads (0.1 ms)."""
    return f"{x:.1f}"


def straggler_headline(
    rank: int,
    cause: str,
    excess_ms: float | None,
    caused_wait_ms: float,
    step_ms: float,
    pattern: str = "persistent",
    steps: list[tuple[int, float]] | None = None,
    detail: str | None = None,
) -> str:
    """The dashboard's callout on the worst straggler: the verdict with its size.

    ``excess_ms`` is the straggler's excess (``Straggler.excess_ms_per_step``, the
    straggler table's "excess ms/step" and its finding's evidence) and ``caused_wait_ms``
    what the others wait (``caused_wait_ms_per_step``, "others wait ms/step"), both with
    the ``ms`` rounding, so the callout, the table and the finding print the same figures.
    """
    what = cause_explained(cause, detail)
    if pattern == "intermittent" and steps:
        return f"Rank {rank} {stalls_text(steps)}: {what}; the other ranks waited for it there."
    share = (
        f" ({100 * caused_wait_ms / step_ms:.0f}% of the {ms(step_ms)} ms step)" if step_ms else ""
    )
    wait = f"the other ranks wait {ms(caused_wait_ms)} ms/step for it{share}."
    if excess_ms is None:
        return f"Rank {rank} is the straggler: {what}. {wait[0].upper()}{wait[1:]}"
    return (
        f"Rank {rank} is the straggler: {what}. Its work before each step's collectives takes"
        f" {ms(excess_ms)} ms/step more than the other ranks' median (its excess); {wait}"
    )


def no_straggler_sentence(
    n_ranks: int,
    has_collectives: bool,
    last: LastArrival | None,
    rotating_ranks: list[int] | None = None,
) -> str | None:
    """Why no rank is a straggler, when collectives could tell; None when they cannot.

    Call it only when no rank is a straggler.
    """
    if n_ranks < 2 or not has_collectives:
        return None
    if rotating_ranks:
        return (
            "No single straggler: the lateness rotates between ranks "
            + ", ".join(map(str, rotating_ranks))
            + " (see the rotating finding)."
        )
    if last and last.count > last.of / 2 and last.excess_ms_per_step > 0:
        return (
            f"No straggler: rank {last.rank} arrives last most often"
            f" ({last.count} of {last.of} collectives), but the others wait only"
            f" {last.excess_ms_per_step:.1f} ms/step more for it than for any other rank"
            f" ({last.excess_pct_of_step:.1f}% of the step): not consistently or not by"
            " enough to stand out from the spread between ranks."
        )
    return "No straggler: the ranks arrive at collectives together."


# --- many ranks and nodes (``analysis.nodes``) ---


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def rank_group(ranks: list[int], limit: int = 6) -> str:
    """Many ranks in a few words: "rank 3", "ranks 24-31", "ranks 3, 7, 11, ... (32 ranks,
    every 4th)", "ranks 0-3, 8-11 and 40 (9 ranks)"; at most ``limit`` items listed."""
    rs = sorted(set(ranks))
    if len(rs) == 1:
        return f"rank {rs[0]}"
    if len(rs) > 2 and rs[-1] - rs[0] == len(rs) - 1:
        return f"ranks {rs[0]}-{rs[-1]}"
    strides = {rs[i + 1] - rs[i] for i in range(len(rs) - 1)}
    if len(rs) > limit and len(strides) == 1:
        (stride,) = strides
        head = ", ".join(map(str, rs[:3]))
        return f"ranks {head}, ... ({len(rs)} ranks, every {_ordinal(stride)})"
    runs: list[tuple[int, int]] = []
    for r in rs:
        if runs and runs[-1][1] == r - 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    items = [f"{a}-{b}" if b > a + 1 else (f"{a}, {b}" if b > a else str(a)) for a, b in runs]
    if len(items) <= limit and len(rs) <= 2 * limit:
        if len(items) == 1:
            return f"ranks {items[0]}"
        return "ranks " + ", ".join(items[:-1]) + f" and {items[-1]}"
    shown = ", ".join(items[:limit])
    return f"ranks {shown}, ... ({len(rs)} ranks)"


def node_name(node: int, host: str, ranks: list[int]) -> str:
    """ "node 3 (host gpu-17, ranks 24-31)"."""
    return f"node {node} (host {host}, {rank_group(ranks)})"


def slow_node_sentence(
    node: int,
    host: str,
    ranks: list[int],
    slow_ranks: list[int],
    cause: str,
    excess_ms: float,
    scope: str,
) -> str:
    """The report's one line on a node whose ranks are the stragglers (``scope``: over
    which steps, e.g. "over the whole run")."""
    name = node_name(node, host, ranks)
    which = (
        ("both of its ranks" if len(ranks) == 2 else f"all {len(ranks)} of its ranks")
        if len(slow_ranks) == len(ranks)
        else f"{len(slow_ranks)} of its {len(ranks)} ranks ({rank_group(slow_ranks)})"
    )
    return (
        f"{name[0].upper()}{name[1:]} is slow {scope}: {which} are late"
        f" ({cause_name(cause)}, ~{excess_ms:.1f} ms/step more than the other ranks);"
        " look at that machine before the code."
    )


def alike_stragglers(ranks: list[int], cause: str, pattern: str, excess_ms: float) -> str:
    """One line for many stragglers that are late the same way."""
    return (
        f"{rank_group(ranks)[0].upper()}{rank_group(ranks)[1:]} are late alike"
        f" ({cause_name(cause)}, {pattern}, ~{excess_ms:.1f} ms/step more than the others)."
    )


def group_held_back(
    rank: int, pg: str, desc: str, members: list[int], last: int, instances: int, lag_ms: float
) -> str:
    """One line on a process group a straggler holds back."""
    name = f"process group {pg}" + (f" ({desc})" if desc and desc != pg else "")
    return (
        f"Rank {rank} holds back {name}, {rank_group(members)}: last to arrive (or with"
        f" the last) at {last} of its {instances} collectives, ~{lag_ms:.1f} ms after the"
        " first on average."
    )


# --- an incomplete run: ranks with step timings but no trace ---


def ranks_text(ranks: list[int]) -> str:
    """ "rank 1", "ranks 0 and 2", "ranks 0, 2 and 5"."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return "ranks " + ", ".join(map(str, ranks[:-1])) + f" and {ranks[-1]}"


def incomplete_verdict(missing: list[int], traced: list[int], left_out: bool = False) -> str:
    """The first sentence of a run where some ranks left no trace; ``left_out``: each of
    them had a window that was not used (another run's, unreadable) or is gone (its
    manifest lists it): the warnings say which."""
    has = "has" if len(missing) == 1 else "have"
    why = (
        "its window is gone or was left out: see the warnings"
        if left_out
        else "a crash during the trace export, or an attach that reached only some ranks"
    )
    return (
        f"Incomplete picture: {ranks_text(missing)} {has} step timings but no trace ({why}),"
        " so stragglers"
        f" are measured among {ranks_text(traced)} only and an untraced rank may be the one"
        " the others wait for."
    )


def no_straggler_among_traced(traced: list[int]) -> str:
    return f"No straggler among the traced ranks ({ranks_text(traced)})."


def missing_trace_finding(
    missing_step_ms: dict[int, float],
    traced: list[int],
    traced_step_ms: float | None,
    traced_wait_ms: float,
    in_whole_run: list[int],
) -> tuple[str, str]:
    """The finding that names the ranks without a trace and what their step timer says."""
    missing = sorted(missing_step_ms)
    timers = "; ".join(
        f"rank {r} {v:.1f} ms/step" if v == v else f"rank {r} no step timer"
        for r, v in sorted(missing_step_ms.items())
    )
    vs = f" (the traced ranks: {traced_step_ms:.1f} ms/step)" if traced_step_ms else ""
    wait = (
        f" The traced ranks wait {traced_wait_ms:.1f} ms/step in collectives, and time spent"
        f" waiting for {ranks_text(missing)} counts as transfer among them."
        if traced_wait_ms == traced_wait_ms
        else ""
    )
    whole = (
        f" The light layer's whole-run picture covers {ranks_text(in_whole_run)}."
        if in_whole_run
        else ""
    )
    return (
        f"No trace from {ranks_text(missing)}: the picture is incomplete",
        f"Step timer: {timers}{vs}; what happened inside those steps is unknown.{wait}{whole}"
        " Capture a window on every rank again (`rankscope attach RUN --steps 3`).",
    )


# --- the dashboard's straggler panel: pattern, where to look, the joint what-if ---

PATTERN_MEANING = {
    "persistent": "late at most steps",
    "intermittent": "late by a large margin at a few steps, on time otherwise",
}
PER_STEP_METRICS = {
    "excess_ms": "extra work before the step's collectives (ms)",
    "caused_wait_ms": "the others' wait it caused (ms)",
    "lag_ms": "arrival lag at the step's last collective (ms)",
}


def pattern_legend(patterns: list[str]) -> str:
    """ "persistent: late at most steps." for the patterns a table shows."""
    return "; ".join(f"{p}: {PATTERN_MEANING.get(p, p)}" for p in dict.fromkeys(patterns)) + "."


def straggler_next(hint: str) -> str:
    """ "Where to look next: time with no traced op: ... ." """
    return f"Where to look next: {hint}."


def joint_saving_text(n_stragglers: int, saving_ms: float) -> str:
    """The what-if of fixing every straggler at once; each one's saving is its share of it."""
    return (
        f"Fixing all {n_stragglers} stragglers together would save ~{saving_ms:.1f} ms/step:"
        " one what-if replay of the collectives, so each straggler's saving is its share of"
        " that figure, and the shares add up to it."
    )


def stall_label(rank: int, lag_ms: float) -> str:
    """A chart's mark on one stall: "rank 2: ~302 ms"."""
    return f"rank {rank}: ~{lag_ms:.0f} ms"


# --- straggler evidence (the report's ``stragglers[].evidence``) ---


def evidence_persistent(excess_ms: float, ci_ms: list[float] | tuple[float, float] | None) -> str:
    ci = f" (90% interval {ci_ms[0]:.1f}-{ci_ms[1]:.1f})" if ci_ms else ""
    return (
        f"its work before each step's collectives takes {excess_ms:.1f} ms/step more than the"
        f" other ranks' median{ci}"
    )


def evidence_stalls(steps: list[tuple[int, float]]) -> str:
    return stalls_text(steps) + " beyond the other ranks"


# Components of a straggler's extra time named differently from its causes.
_BREAKDOWN_NAME = {"unknown": "time no record explains"}


def evidence_breakdown(breakdown: dict[str, float], detail: str | None) -> str:
    """ "of which data loading 43.3 ms/step, host-side work 8.0 ms/step" (top three)."""
    top = sorted(((ms, c) for c, ms in breakdown.items() if ms >= 0.05), reverse=True)[:3]
    if not top:
        return ""
    names = [
        f"{_BREAKDOWN_NAME.get(c) or cause_name(c, detail if c == 'host' else None)}"
        f" {ms:.1f} ms/step"
        for ms, c in top
    ]
    return "of which " + ", ".join(names)


def evidence_last_arrivals(count: int, of: int, unit: str = "collectives") -> str:
    if unit == "steps":
        return f"the latest rank at {count} of {of} steps"
    return f"arrives last at {count} of {of} collectives"


def evidence_caused_wait(caused_wait_ms: float) -> str:
    return f"the other ranks wait {caused_wait_ms:.1f} ms/step for it"


# --- findings: (title, detail) per rule in ``findings`` ---


def straggler_finding(
    rank: int,
    cause: str,
    n_others: int,
    caused_wait_ms: float,
    evidence: str,
    pattern: str = "persistent",
    detail: str | None = None,
    hint: str | None = None,
) -> tuple[str, str]:
    name = cause_name(cause, detail)
    tail = f" Evidence: {evidence}." + (f" Next: {hint}." if hint else "")
    if pattern == "intermittent":
        return (
            f"Rank {rank} stalls the others at a few steps: {name}",
            f"Rank {rank} is late by a large margin at a few steps and on time otherwise.{tail}",
        )
    return (
        f"Rank {rank} holds the others back: {name}",
        f"Rank {rank} arrives last at collectives; the other {n_others} rank(s) wait"
        f" {caused_wait_ms:.1f} ms/step for it.{tail}",
    )


def rotating_finding(
    counts: dict[int, int], steps: list[tuple[int, int, float]], wait_pct: float
) -> tuple[str, str]:
    """Lateness with no single culprit; ``steps`` are (step, rank, lag_ms)."""
    per_rank = ", ".join(f"rank {r} at {n} step(s)" for r, n in sorted(counts.items()))
    shown = ", ".join(f"step {s}: rank {r} ~{lag:.0f} ms" for s, r, lag in steps[:6])
    more = f", and {len(steps) - 6} more" if len(steps) > 6 else ""
    return (
        "Lateness rotates between ranks",
        f"No single rank holds the others back, yet the ranks wait {wait_pct:.0f}% of the"
        f" step: a different rank stalls at different steps ({per_rank}; {shown}{more})."
        " Look for work every rank does now and then: periodic logging, checkpointing,"
        " evaluation, garbage collection, or noisy neighbours on shared hosts.",
    )


def exposed_communication_finding(
    exposed_ms: float,
    comm_ms: float,
    transfer_ms: float,
    multi_rank: bool,
    untraced: list[int] | None = None,
) -> tuple[str, str]:
    if untraced:
        split = (
            f"without a trace from {ranks_text(untraced)}, waiting for"
            f" {'it' if len(untraced) == 1 else 'them'} cannot be told from transfer."
        )
    elif multi_rank:
        split = f"{max(transfer_ms, 0):.1f} ms/step of it is transfer, not waiting."
    else:
        split = "with one rank's trace, waiting for peers cannot be told from transfer."
    return (
        "Communication is not overlapped with compute",
        f"{exposed_ms:.1f} ms/step of communication is exposed (of {comm_ms:.1f} ms); "
        + split
        + " Overlap it with compute (bucket sizes, DDP/FSDP prefetch) or shrink it"
        " (compression, fewer collectives).",
    )


def data_loading_finding(exposed_ms: float, total_ms: float) -> tuple[str, str]:
    return (
        "Data loading stalls the step on every rank",
        f"{exposed_ms:.1f} ms/step of data loading with the GPU idle"
        f" ({total_ms:.1f} ms/step in total). More DataLoader workers,"
        " pin_memory, prefetching or moving decoding off the training loop would hide it.",
    )


def host_bound_finding(host_ms: float) -> tuple[str, str]:
    return (
        "The GPU waits on the host",
        f"{host_ms:.1f} ms/step the host works while the GPU has nothing to do (Python"
        " overhead, kernel launches, CPU-side ops). CUDA graphs, torch.compile or larger"
        " batches cut it.",
    )


def compute_imbalance_finding(rank: int, compute_ms: float, median_ms: float) -> tuple[str, str]:
    return (
        f"Rank {rank} computes {compute_ms / median_ms:.1f}x the median",
        f"Rank {rank}: {compute_ms:.1f} ms/step of compute vs {median_ms:.1f} ms median."
        " Uneven batch sizes, sequence lengths or model partitioning;"
        " balance the work.",
    )


def low_gpu_utilisation_finding(busy_pct: float, idle_ms: float) -> tuple[str, str]:
    return (
        f"GPUs are busy only {busy_pct:.0f}% of the step",
        f"On average {idle_ms:.1f} ms/step the GPU does nothing; the findings above say"
        " where that time goes.",
    )


# --- the dashboard's explanations of empty pages ---

NO_KERNELS_CPU_ONLY = (
    "No GPU kernels: this is a CPU-only run, so its compute is host operators, which the"
    " Timeline and Load imbalance pages break down per step and rank."
)
NO_KERNELS_NO_TRACE = (
    "No profiler trace in this run yet, so no kernel was recorded. Capture one with"
    " `rankscope attach RUN --steps 3` while the job runs."
)
NO_KERNELS_IN_STEPS = "No GPU kernel ran in the analysed steps; choose a wider step range."


# --- the dashboard's Whole run page (the light layer: every step of every rank) ---

NO_LIGHT_LOG = (
    "This run has no light-layer log (step times and collectives from at least two"
    " ranks), so there is no whole-run picture; runs recorded with `rankscope run` have one."
)
NO_LIGHT_PIPELINE_ONLY = (
    "This run's light layer holds sends and receives but no collective inside a step, so"
    " there is no per-step picture of who arrives last; the pipeline's stages over the"
    " whole run (busy and blocked time, the bottleneck) are on the Communication page."
)
WHOLE_RUN_PICK = "Look at a slow step"
WHOLE_RUN_PICK_HELP = (
    "choosing one sets the other pages' step range to the trace window that covers it"
)


def _span(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}–{last}"


def trace_window_label(first: int, last: int, trigger: dict[str, object] | None) -> str:
    """How a chart labels a trace window; an auto-captured one says what triggered it."""
    if not trigger:
        return f"trace {_span(first, last)}"
    recent = trigger.get("recent_ms")
    slow = ""
    if isinstance(recent, list) and recent:
        slow = f" {max(float(v) for v in recent):.0f} ms"
    median = trigger.get("median_ms")
    over = f" (median {float(median):.0f} ms)" if isinstance(median, int | float) else ""
    return f"auto-capture {_span(first, last)}: steps slowed to{slow}{over}"


def whole_run_summary(first: int, last: int, n_steps: int, n_ranks: int) -> str:
    return (
        f"Every step of every rank from the light layer: {n_steps} steps"
        f" ({first}–{last}) of {n_ranks} ranks; no trace needed."
    )


def heatmap_caption(width: int, shown: int, n_ranks: int) -> str:
    """What the whole-run heatmap shows, and what it left out to stay readable."""
    parts = [
        "How much longer each rank worked before its last collective than the others'"
        " median, per step: red is a rank the others waited for."
    ]
    if width > 1:
        parts.append(f"Each column is {width} steps, showing the latest of them.")
    if shown < n_ranks:
        parts.append(f"{shown} of {n_ranks} ranks: the stragglers and the latest ranks.")
    return " ".join(parts)


def slow_step_label(step: int, rank: int, excess_ms: float, window: tuple[int, int] | None) -> str:
    where = f"in trace {_span(*window)}" if window else "no trace window"
    return f"step {step}: rank {rank} ~{excess_ms:.0f} ms late ({where})"


def window_chosen(step: int, window: tuple[int, int]) -> str:
    return (
        f"The other pages now show {_span(*window)}, the trace window over step {step}:"
        " open the Overview or the Timeline to see what each rank was doing."
    )


def no_window_covers(step: int) -> str:
    return (
        f"No trace window covers step {step}. While the job runs,"
        " `rankscope attach RUN --steps 3` captures the next steps (a stall that recurs"
        " lands in one); in a new run, `rankscope run --profile A-B` or `--auto-capture`"
        " captures it."
    )


# --- the one verdict (``verdict``): the whole run and the window together ---

CONTENTION_HINT = (
    "the training thread was runnable but waiting for a CPU: look for other processes on"
    " that host (top, pidstat -w), CPU quotas or throttling, and pin ranks to their own cores"
)


def when_text(
    onset_step: int | None,
    end_step: int | None,
    onset_s: float | None = None,
    end_s: float | None = None,
    period_steps: int | None = None,
) -> str:
    """ " every 4th step, from step 15 (~12.0 s in) until step 30", or "" when always."""
    parts = []
    if period_steps:
        parts.append(f"every {_ordinal(period_steps)} step")
    if onset_step is not None:
        at = f" (~{onset_s:.1f} s in)" if onset_s is not None else ""
        parts.append(f"from step {onset_step}{at}")
    if end_step is not None:
        at = f" (~{end_s:.1f} s in)" if end_s is not None else ""
        parts.append(f"until step {end_step}{at}")
    return " " + ", ".join(parts) if parts else ""


def verdict_straggler(s: Straggler) -> str:
    """The one verdict naming a rank: who, why, how bad, and when its pattern holds."""
    when = when_text(s.onset_step, s.end_step, s.onset_s, s.end_s, s.period_steps)
    name = cause_name(s.cause, s.cause_detail)
    if s.cause == "host_contention" and s.shared_contention:
        name += ", as on every rank: the host is loaded"
    if s.period_steps and s.steps:
        lag = sum(st.lag_ms for st in s.steps) / len(s.steps)
        return (
            f"Rank {s.rank} is the straggler{when} ({name}, {s.severity}): ~{lag:.0f} ms"
            f" late at each of {len(s.steps)} steps."
        )
    if s.pattern == "intermittent" and s.steps:
        return straggler_verdict(
            s.rank,
            s.cause,
            s.severity,
            s.caused_wait_ms_per_step,
            s.pattern,
            [(st.step, st.lag_ms) for st in s.steps],
            s.cause_detail,
        )
    if s.hidden_by_queue_ms is not None:
        return (
            f"Rank {s.rank} is the straggler{when} ({name}, {s.severity}): ~"
            f"{s.caused_wait_ms_per_step:.1f} ms/step more work of its own, which the other"
            " ranks wait for on a host with CPU to spare; on this one they also queued ~"
            f"{s.hidden_by_queue_ms:.1f} ms/step for a CPU, which hid part of it."
        )
    return (
        f"Rank {s.rank} is the straggler{when} ({name}, {s.severity}): the other ranks wait"
        f" ~{s.caused_wait_ms_per_step:.1f} ms/step for it."
    )


FEW_STEPS = 3  # diagnosis.MIN_STEPS_FOR_PERSISTENT: fewer steps cannot clear a rank


def verdict_rotating(ranks: list[int]) -> str:
    return (
        "No single straggler: the lateness rotates between "
        + ranks_text(ranks)
        + " over the run (see the rotating finding)."
    )


def verdict_none(wait_share: float | None, p2p: bool = False, n_steps: int | None = None) -> str:
    """No rank holds the others back; a large wait share is said, with why it is no straggler.

    ``p2p``: most of that wait is in point-to-point receives, which name no rank waited
    for (a pipeline stage waits on its neighbour by design). ``n_steps`` below
    ``FEW_STEPS``: too few steps to say nobody is late (a straggler needs three).
    """
    if n_steps is not None and n_steps < FEW_STEPS:
        return (
            f"No straggler seen, but over {n_steps} step(s) only: too few to judge (a"
            f" straggler needs {FEW_STEPS}; see the warnings for the steps left out)."
        )
    if p2p and wait_share is not None and wait_share >= 0.20:
        return (
            f"No straggler at collectives, though the ranks wait {100 * wait_share:.0f}% of the"
            " step blocked in point-to-point receives: a pipeline's bubble, or a slower"
            " neighbouring stage (see the findings for a rank that computes more)."
        )
    if wait_share is not None and wait_share >= 0.20:
        return (
            f"No straggler, though the ranks wait {100 * wait_share:.0f}% of the step in"
            " collectives: the rank they wait for changes from step to step, so no one rank"
            " would save it."
        )
    return "No straggler: no rank holds the others back."


def window_explained_by_rotation(rank: int, first: int, last: int) -> str:
    return (
        f"The trace window (steps {first}-{last}) saw rank {rank} late: over the whole run the"
        " lateness moves between ranks, and those steps were its turn."
    )


def window_outside_pattern(rank: int, first: int, last: int, window_rank: int | None) -> str:
    saw = f"names rank {window_rank}" if window_rank is not None else "names no straggler"
    return (
        f"The trace window (steps {first}-{last}) {saw}: it covers steps where rank {rank}'s"
        " pattern does not apply; capture a window of its late steps"
        " (`rankscope attach RUN --steps N`) to see why."
    )


def window_within_noise(rank: int, first: int, last: int, excess_ms: float | None = None) -> str:
    if excess_ms is None:
        return (
            f"The trace window (steps {first}-{last}) names no straggler: over its few steps"
            f" rank {rank}'s lateness does not stand out from the noise."
        )
    return (
        f"The trace window (steps {first}-{last}) names rank {rank}, but over the whole run it"
        f" was {excess_ms:+.1f} ms/step off the others at those steps: within the run's noise."
    )


def window_contention(rank: int, first: int, last: int, shared: bool) -> str:
    load = " as were the others: the host was loaded" if shared else ""
    return (
        f"The trace window (steps {first}-{last}) saw rank {rank} late because it was waiting"
        f" for a CPU{load} (host contention), not because of its own work."
    )


def window_only(rank: int, first: int, last: int) -> str:
    return (
        f"The trace window (steps {first}-{last}) saw rank {rank} late, but only there: over"
        " the whole run it does not stand out."
    )


def oversized_steps(count: int) -> str:
    """Warning: ``count`` ProfilerStep names whose number is too large to be a step."""
    return (
        f"{count} ProfilerStep range name(s) with a step number beyond 2^53 were"
        " skipped (not a step a job could reach)"
    )


def malformed_steps(names: list[str]) -> str:
    """Warning: ProfilerStep range names whose number is not a step number."""
    shown = ", ".join(repr(n[:40]) for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return (
        f"{len(names)} ProfilerStep range name(s) with no step number ({shown}{more}) were"
        " not read as steps (a step is ProfilerStep#N, N a whole number from 0)"
    )


def evidence_warning(e: RankEvidence) -> str:
    """Warning: what rank ``e.rank``'s verdict could not use (files, records), and why."""
    parts = list(e.unused)
    if e.problem_count:
        # a problem is one record left out, or one line naming many (repeats, a field
        # dropped from some records, a log cut at its byte limit): counted as problems
        parts.append(
            f"{e.problem_count} problem(s) with its records (first: {'; '.join(e.problems)})"
        )
    return f"rank {e.rank} evidence: " + "; ".join(parts)


def evidence_line(evidence: Sequence[RankEvidence]) -> str | None:
    """The report's one line on evidence: ranks whose sources were not all usable."""
    partial = [e for e in evidence if e.unused or e.problem_count]
    if not partial:
        return None
    shown = "; ".join(
        f"rank {e.rank} used {', '.join(e.used) or 'no source'}"
        + (f" but not its {', '.join(u.split(':', 1)[0] for u in e.unused)}" if e.unused else "")
        + (f" ({e.problem_count} problem(s) with its records)" if e.problem_count else "")
        for e in partial[:8]
    )
    more = f" (and {len(partial) - 8} more rank(s))" if len(partial) > 8 else ""
    return f"Evidence: {shown}{more}; see the warnings for why."


NO_WHOLE_RUN = "no whole-run verdict: "


def no_whole_run(why: str, unused: list[str]) -> str:
    """Warning: the run has no whole-run verdict, and the files that could not be used."""
    named = f"; not usable: {'; '.join(unused[:8])}" if unused else ""
    return f"{NO_WHOLE_RUN}{why}{named}"


# --- pipelines (analysis.pipeline) ---


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def pipeline_shape(ranks: list[int], micro_batches: int | None, ring: bool = False) -> str:
    """'ranks 0 -> 1 -> 2 -> 3 (4 stages, 4 micro-batches)'; a looped schedule (``ring``)
    'ranks 0 -> 1 -> 2 -> 3 -> 0 (4 stages, looped)'."""
    shown = [*ranks, ranks[0]] if ring and ranks else ranks
    chain = " -> ".join(map(str, shown)) if len(shown) <= 9 else f"{ranks[0]} -> ... -> {shown[-1]}"
    m = ", looped" if ring else f", {micro_batches} micro-batches" if micro_batches else ""
    return f"ranks {chain} ({len(ranks)} stages{m})"


def ideal_bubble_text(
    stages: int, micro_batches: int | None, ideal: float | None, ring: bool = False
) -> str:
    if ring:
        return (
            "a looped (interleaved) schedule: its ideal depends on the virtual stages each"
            " rank holds, not known here"
        )
    if ideal is None or not micro_batches:
        return "the schedule's ideal is unknown (no sends seen on the first stage)"
    return f"the ideal for {stages} stages and {micro_batches} micro-batches is {_pct(ideal)}"


def pipeline_texts(
    ranks: list[int], micro_batches: int | None, ideal: float | None, order_source: str
) -> tuple[str, str]:
    """A pipeline's shape and its ideal bubble, as the report, findings and dashboard say
    them (``analysis.pipeline.Pipeline``'s fields)."""
    ring = order_source == "ring"
    return (
        pipeline_shape(ranks, micro_batches, ring),
        ideal_bubble_text(len(ranks), micro_batches, ideal, ring),
    )


def verdict_pipeline(
    stage: int, rank: int, cause: str, ratio: float, others_bubble: float, saving_ms: float
) -> str:
    return (
        f"Pipeline stage {stage} (rank {rank}) is the bottleneck ({cause_name(cause)}): it"
        f" is busy {ratio:.1f}x as long as the median stage, and the other stages spend"
        f" {_pct(others_bubble)} of the step blocked waiting on their neighbours;"
        f" rebalancing the stages would save ~{saving_ms:.0f} ms/step."
    )


def late_behind_stage(late: int, stage_rank: int) -> str:
    """Why a rank the collectives name late is not the verdict: it waits on a stage."""
    return (
        f"Rank {late} arrives last at its collectives only because it waits for rank"
        f" {stage_rank} in their pipeline (it is blocked on its neighbours more of the"
        f" step than rank {stage_rank} is)."
    )


def verdict_balanced_pipeline(
    stages: int,
    ratio: float,
    bubble: float,
    ideal: float | None,
    cpu_ratio: float | None = None,
    wall_only: bool = False,
) -> str:
    """No straggler in a pipeline job: its stages are balanced; its bubble against the ideal.
    ``wall_only``: the busiest stage passed the bottleneck's ratio by the wall clock only."""
    against = "" if ideal is None else f" (the schedule's ideal is {_pct(ideal)})"
    cpu = ""
    if cpu_ratio is not None and wall_only:
        cpu = f", {cpu_ratio:.2f}x by CPU time: it waited for a CPU or for I/O, not on more work"
    elif cpu_ratio is not None:
        cpu = f", {cpu_ratio:.2f}x by CPU time"
    return (
        f"No straggler: the pipeline's {stages} stages are balanced (the busiest is busy"
        f" {ratio:.2f}x the median stage{cpu}); they are blocked on their neighbours"
        f" {_pct(bubble)} of the step{against}."
    )


def pipeline_bottleneck_finding(
    stage: int,
    rank: int,
    busy_ms: float,
    median_ms: float,
    shape: str,
    bubble: float,
    ideal: str,
) -> tuple[str, str]:
    return (
        f"Pipeline stage {stage} (rank {rank}) is busy {busy_ms / median_ms:.1f}x as long as"
        " the median stage: the other stages wait for it",
        f"Pipeline {shape}: stage {stage} is busy {busy_ms:.1f} ms/step (all but its time"
        f" blocked on neighbours) against {median_ms:.1f} ms for the median stage. The"
        " stages are blocked in sends and"
        f" receives {_pct(bubble)} of the step on average ({ideal}). Move layers off stage"
        f" {stage} so that each stage computes the same; the saving assumes a GPipe or 1F1B"
        " schedule.",
    )


def pipeline_bubble_finding(
    shape: str, bubble: float, ideal: str, doubled: float | None
) -> tuple[str, str]:
    more = (
        f" With twice the micro-batches per step the ideal would be {_pct(doubled)}."
        if doubled is not None
        else ""
    )
    return (
        f"The pipeline's stages are blocked {_pct(bubble)} of the step (its bubble)",
        f"Pipeline {shape}: no stage holds the others back; the idle time is the"
        f" schedule's fill and drain ({ideal}).{more} An interleaved schedule also shrinks it.",
    )


def light_pipeline_source(first: int | None, last: int | None) -> str:
    """Where a pipeline seen without a trace window comes from (``analysis.pipeline``)."""
    steps = f" over steps {first}-{last}" if first is not None and last is not None else ""
    return (
        f"From the collector's own timing of gloo's sends and receives{steps} (no trace"
        " window): each stage's peers and its time blocked in waits. Capture a window"
        " (`rankscope attach RUN --steps N`) to see one step over time."
    )


def pipeline_line(shape: str, bubble: float, ideal: str, bottleneck: str | None) -> str:
    tail = f"; the bottleneck is {bottleneck}" if bottleneck else "; no stage holds the others back"
    return f"Pipeline {shape}: blocked {_pct(bubble)} of the step ({ideal}){tail}."


def seq_shift(pg: str, rank: int, reference: int, offset: int, steps: int, compared: int) -> str:
    """Warning: rank ``rank``'s collective seq ids in ``pg`` are ``reference``'s + ``offset``."""
    return (
        f"rank{rank}.collectives.jsonl: rank {rank}'s collective sequence numbers in process"
        f" group {pg} are rank {reference}'s {offset:+d} at the same steps ({steps} of"
        f" {compared} shared steps): the logs do not line up (a file altered after the run,"
        " or ranks that issued different collectives); no collective is matched across"
        " ranks by sequence number in the whole-run verdict (each rank's own step timing"
        " instead) or in that group's summary"
    )


def unmatched_collectives(unmatched: int, total: int) -> str:
    """Whole-run line: collective instances only some ranks logged."""
    return (
        f"{unmatched} of {total} collective instance(s) were logged by only some ranks (a"
        " rank that stopped early or died, a flight-recorder ring that overflowed, or a"
        " log cut short): left out of who arrived last"
    )


def collective_mismatch(pg: str, seq: int, names: dict[int, str]) -> str:
    """Warning: the ranks logged different collectives at one (process group, seq)."""
    by_name: dict[str, list[int]] = {}
    for rank, name in sorted(names.items()):
        by_name.setdefault(name, []).append(rank)
    said = "; ".join(f"{ranks_text(r)} {n}" for n, r in sorted(by_name.items(), key=lambda x: x[1]))
    return (
        f"process group {pg}, collective #{seq}: the ranks logged different collectives"
        f" ({said}): they called them in a different order (a desync: such a job hangs,"
        " or on NCCL may compute wrong results), or a log was altered; the timing analysis"
        " still pairs them by number"
    )


def hang_seq_shift(pg: str, rank: int, offset: int) -> str:
    """Warning: the hang verdict pairs ranks by seq, and rank ``rank``'s are off by ``offset``."""
    return (
        f"the hang verdict matches ranks by (process group, sequence number), and rank {rank}'s"
        f" sequence numbers in process group {pg} are off by {offset:+d}: the collective it"
        " names may not be the same one on every rank"
    )


# --- memory (``analysis.memory``) ---

NO_MEMORY_DATA = (
    "No memory data: record with --profile-memory (`rankscope run --profile-memory ...`,"
    " or `profile_memory=True` in torch.profiler) to see each rank's peak allocated and"
    " reserved memory; on a GPU the collector's telemetry also records torch's allocator"
    " peaks once the job has initialised CUDA."
)
MEMORY_SOURCE = {
    "trace": "from the trace's [memory] events over the analysed steps",
    "light_layer": "the CUDA caching allocator's peak over the run so far (light layer)",
}
DEVICE_WORD = {"cuda": "GPU", "cpu": "CPU tensors", "host": "host RSS"}


def memory_size(n_bytes: float) -> str:
    """Bytes the way every memory figure is shown: GiB with one decimal from 1 GiB,
    whole MiB from 10 MiB, else MiB with one decimal (one rounding rule, so the report
    and the dashboard agree)."""
    if abs(n_bytes) >= 1 << 30:
        return f"{n_bytes / (1 << 30):.1f} GiB"
    if abs(n_bytes) >= 10 << 20:
        return f"{n_bytes / (1 << 20):.0f} MiB"
    return f"{n_bytes / (1 << 20):.1f} MiB"


def device_word(device: str) -> str:
    """ "GPU", "CPU tensors" or "host RSS" for "cuda:0", "cpu", "host"."""
    return DEVICE_WORD.get(device.split(":", 1)[0], device)


def memory_imbalance_finding(
    rank: int,
    device: str,
    peak_b: int,
    others_median_b: int,
    ratio: float,
    source: str,
    reserved_pct: float | None,
) -> tuple[str, str]:
    on = device_word(device)
    fullness = (
        f" Its GPU is {reserved_pct:.0f}% reserved at that peak."
        if reserved_pct is not None
        else ""
    )
    times = f"{ratio:.1f}x" if ratio < 10 else f"{ratio:.0f}x"
    return (
        f"Rank {rank} peaks at {memory_size(peak_b)} allocated ({on}), {times} the"
        f" others' median {memory_size(others_median_b)}",
        f"Rank {rank} holds {memory_size(peak_b - others_median_b)} more at its peak than"
        f" the median of the other ranks ({MEMORY_SOURCE.get(source, source)}).{fullness}"
        " The rank with the most memory runs out first: look for uneven sharding or batch"
        " sizes, or extra buffers on that rank (metrics, checkpoints or outputs gathered"
        " there).",
    )


def memory_near_limit_finding(
    ranks: list[int], top_pct: float, reserved_b: int, capacity_b: int, headroom_b: int
) -> tuple[str, str]:
    who = rank_group(ranks)
    return (
        f"GPU memory near the limit on {who}: up to {top_pct:.0f}% reserved",
        f"At its peak the fullest GPU has {memory_size(reserved_b)} reserved of"
        f" {memory_size(capacity_b)} ({memory_size(headroom_b)} headroom). Near the limit"
        " the caching allocator frees its cache and retries (slow steps), and a longer"
        " sequence or larger batch runs out of memory. Activation checkpointing, a smaller"
        " micro-batch or sharded optimizer state make room;"
        " PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True helps against fragmentation.",
    )


def memory_growth_finding(
    rank: int,
    device: str,
    first_step: int,
    last_step: int,
    start_b: int,
    end_b: int,
    rising: int,
    of_steps: int,
) -> tuple[str, str]:
    return (
        f"Rank {rank}'s allocated {device_word(device)} memory grew"
        f" {memory_size(end_b - start_b)} over steps {first_step}-{last_step}",
        f"At the start of each step it held {memory_size(start_b)} first and"
        f" {memory_size(end_b)} last, higher after {rising} of {of_steps} steps: memory kept"
        " from one step to the next (a tensor appended to a list, a loss kept with its graph,"
        " a growing cache) ends in out-of-memory. A longer window shows whether it levels off.",
    )


def live_line(running: int, world_size: int, step: int, read_at: str) -> str:
    """The first line of a report on a job that still runs (``hang.live_run``)."""
    of = f" of {world_size}" if world_size > running else ""
    return (
        f"LIVE: the job is still running ({running}{of} rank(s), at step {step}, {read_at}):"
        " this report covers what was on disk then; steps to come and a trace window still"
        " being written are not in it. Report again later, or follow it with"
        " `rankscope watch RUN`."
    )
