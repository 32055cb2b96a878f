"""Every sentence a user reads about a run: cause names, verdicts, finding texts.

The one home of this wording, shared by the text/markdown report
(``rankscope.dashboard.render``), the findings and straggler evidence (written
into the report dict) and the dashboard's views. Functions take plain numbers
(or the small result types) and return strings; they decide nothing about the
run, so the report and the dashboard can never word the same fact two ways.
"""

from __future__ import annotations

from rankscope.dashboard.analysis.results import LastArrival

# Why a straggler is late, in the user's words.
CAUSE_NAME = {
    "data_loading": "data loading",
    "host": "host-side work",
    "gpu_compute": "more GPU compute",
    "communication": "communication",
}
# What a cause name leaves unsaid, where the dashboard has room to say it.
CAUSE_EXPLANATION = {"communication": "its collectives start late or run slowly"}
# The breakdown column that measures a cause, named as the straggler evidence names it.
COMPONENT_NAME = {"data_ms": "data loading", "host_ms": "host-only time", "compute_ms": "compute"}

NO_FINDINGS = "No findings worth a line: nothing would save 5% of the step."
TELEMETRY_ONLY_TEXT = "telemetry only, no profiler trace yet."


def cause_name(cause: str) -> str:
    return CAUSE_NAME.get(cause, cause.replace("_", " "))


def cause_explained(cause: str) -> str:
    """The cause name with its explanation in brackets, where it has one."""
    why = CAUSE_EXPLANATION.get(cause)
    return f"{cause_name(cause)} ({why})" if why else cause_name(cause)


# --- the verdict: the report's first sentence and the dashboard's callout ---


def run_scope(n_ranks: int, world_size: int, steps: list[int], step_ms_text: str) -> str:
    """ "4 rank(s) of 4, steps 2-7, 151.2 ms/step on average." """
    if not steps:
        step_txt = "the whole trace"
    elif len(steps) == 1:
        step_txt = f"step {steps[0]}"
    else:
        step_txt = f"steps {steps[0]}-{steps[-1]}"
    return f"{n_ranks} rank(s) of {world_size}, {step_txt}, {step_ms_text} ms/step on average."


def telemetry_only(n_ranks: int, world_size: int) -> str:
    return f"{n_ranks} rank(s) of {world_size}: {TELEMETRY_ONLY_TEXT}"


def straggler_verdict(rank: int, cause: str, severity: str, caused_wait_ms: float) -> str:
    """The report's one-line verdict on the worst straggler."""
    return (
        f"Rank {rank} is the straggler ({cause_name(cause)}, {severity}): the other ranks"
        f" wait ~{caused_wait_ms:.1f} ms/step for it."
    )


def straggler_headline(
    rank: int,
    cause: str,
    cause_excess_ms: float | None,
    caused_wait_ms: float,
    step_ms: float,
) -> str:
    """The dashboard's callout on the worst straggler: the verdict with its size."""
    what = cause_explained(cause)
    if cause_excess_ms is not None:
        what += f", ~{cause_excess_ms:.0f} ms/step more than the other ranks"
    share = (
        f" ({100 * caused_wait_ms / step_ms:.0f}% of the {step_ms:.0f} ms step)" if step_ms else ""
    )
    return (
        f"Rank {rank} is the straggler: {what}; the other ranks wait ~{caused_wait_ms:.0f}"
        f" ms/step for it{share}."
    )


def no_straggler_sentence(
    n_ranks: int, has_collectives: bool, last: LastArrival | None
) -> str | None:
    """Why no rank is a straggler, when collectives could tell; None when they cannot.

    Call it only when no rank is a straggler.
    """
    if n_ranks < 2 or not has_collectives:
        return None
    if last and last.count > last.of / 2 and last.excess_ms_per_step > 0:
        return (
            f"No straggler: rank {last.rank} arrives last most often"
            f" ({last.count} of {last.of} collectives), but the others wait only"
            f" {last.excess_ms_per_step:.1f} ms/step more for it than for any other rank"
            f" ({last.excess_pct_of_step:.1f}% of the step, under the 5% threshold)."
        )
    return "No straggler: the ranks arrive at collectives together."


# --- straggler evidence (the report's ``stragglers[].evidence``) ---


def evidence_excess(column: str, value: float, others_median: float, delta: float) -> str:
    return (
        f"{COMPONENT_NAME[column]} {value:.1f} ms/step vs {others_median:.1f} ms"
        f" median of the other ranks (+{delta:.1f} ms)"
    )


EVIDENCE_COMMUNICATION = (
    "no compute, data-loading or host excess explains it: its collectives start late or run slowly"
)


def evidence_also(column: str, value: float, others_median: float, delta: float) -> str:
    return (
        f"also {COMPONENT_NAME[column]} {value:.1f} ms/step vs {others_median:.1f} ms"
        f" (+{delta:.1f} ms)"
    )


def evidence_last_arrivals(count: int, of: int) -> str:
    return f"arrives last at {count} of {of} collectives"


def evidence_caused_wait(caused_wait_ms: float) -> str:
    return f"the other ranks wait {caused_wait_ms:.1f} ms/step for it"


# --- findings: (title, detail) per rule in ``findings`` ---


def straggler_finding(
    rank: int, cause: str, n_others: int, caused_wait_ms: float, evidence: str
) -> tuple[str, str]:
    return (
        f"Rank {rank} holds the others back: {cause_name(cause)}",
        f"Rank {rank} arrives last at collectives; the other {n_others} rank(s) wait"
        f" {caused_wait_ms:.1f} ms/step for it. Evidence: {evidence}.",
    )


def exposed_communication_finding(
    exposed_ms: float, comm_ms: float, transfer_ms: float, multi_rank: bool
) -> tuple[str, str]:
    return (
        "Communication is not overlapped with compute",
        f"{exposed_ms:.1f} ms/step of communication is exposed (of {comm_ms:.1f} ms); "
        + (
            f"{max(transfer_ms, 0):.1f} ms/step of it is transfer, not waiting."
            if multi_rank
            else "with one rank's trace, waiting for peers cannot be told from transfer."
        )
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
