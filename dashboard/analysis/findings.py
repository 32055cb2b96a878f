"""Findings: plain-language statements, each with evidence and an estimated saving.

``findings(analysis)`` returns dicts ``{severity, title, detail, ranks,
est_saving_ms_per_step, kind}`` sorted by the step time they would save, worst
first. Severity follows the saving as a share of the step: high from 20%,
medium from 10%, low below. Savings are estimates of what the *step* would
gain, not sums over ranks, so they can be compared with each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rankscope.dashboard.analysis.imbalance import median as imbalance_median
from rankscope.dashboard.analysis.imbalance import severity

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis

_CAUSE_TEXT = {
    "data_loading": "data loading",
    "host": "host-side work",
    "gpu_compute": "more GPU compute",
    "communication": "communication",
}
_MIN_SHARE = 0.05  # findings that would save less than 5% of the step are not worth a line


def _finding(
    kind: str, title: str, detail: str, ranks: list[int], saving: float, step_ms: float
) -> dict[str, Any]:
    return {
        "kind": kind,
        "severity": severity(saving, step_ms),
        "title": title,
        "detail": detail,
        "ranks": ranks,
        "est_saving_ms_per_step": round(saving, 2),
    }


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def findings(a: Analysis) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    step_ms = a.step_ms
    if step_ms <= 0:
        return out
    ranks = sorted(a.per_rank)
    mean = {c: _mean([a.per_rank[r][c] for r in ranks]) for c in next(iter(a.per_rank.values()))}

    for s in a.stragglers:
        n_others = len(ranks) - 1
        out.append(
            _finding(
                "straggler",
                f"Rank {s['rank']} holds the others back: {_CAUSE_TEXT[s['cause']]}",
                f"Rank {s['rank']} arrives last at collectives; the other {n_others} rank(s) wait"
                f" {s['caused_wait_ms_per_step']:.1f} ms/step for it. Evidence: {s['evidence']}.",
                [s["rank"]],
                s["caused_wait_ms_per_step"],
                step_ms,
            )
        )
    straggler_ranks = {s["rank"] for s in a.stragglers}

    # Communication that nothing hides, beyond the waiting a straggler already explains.
    exposed_transfer = mean["comm_exposed_ms"] - mean["comm_wait_ms"]
    if exposed_transfer >= _MIN_SHARE * step_ms:
        out.append(
            _finding(
                "exposed_communication",
                "Communication is not overlapped with compute",
                f"{mean['comm_exposed_ms']:.1f} ms/step of communication is exposed (of"
                f" {mean['comm_ms']:.1f} ms); "
                + (
                    f"{max(exposed_transfer, 0):.1f} ms/step of it is transfer, not waiting."
                    if len(ranks) > 1
                    else "with one rank's trace, waiting for peers cannot be told from transfer."
                )
                + " Overlap it with compute (bucket sizes, DDP/FSDP prefetch) or shrink it"
                " (compression, fewer collectives).",
                ranks,
                exposed_transfer,
                step_ms,
            )
        )

    # Data loading every rank pays (a straggler's own share is reported above).
    others: list[int] = [r for r in ranks if r not in straggler_ranks] or ranks
    data_exposed = float(np.mean([a.per_rank[r]["data_exposed_ms"] for r in others]))
    if data_exposed >= _MIN_SHARE * step_ms:
        out.append(
            _finding(
                "data_loading",
                "Data loading stalls the step on every rank",
                f"{data_exposed:.1f} ms/step of data loading with the GPU idle"
                f" ({mean['data_ms']:.1f} ms/step in total). More DataLoader workers,"
                " pin_memory, prefetching or moving decoding off the training loop would hide it.",
                others,
                data_exposed,
                step_ms,
            )
        )

    host = float(np.mean([a.per_rank[r]["host_ms"] for r in others]))
    if a.has_gpu and host >= _MIN_SHARE * step_ms:
        out.append(
            _finding(
                "host_bound",
                "The GPU waits on the host",
                f"{host:.1f} ms/step the host works while the GPU has nothing to do (Python"
                " overhead, kernel launches, CPU-side ops). CUDA graphs, torch.compile or larger"
                " batches cut it.",
                others,
                host,
                step_ms,
            )
        )

    # Uneven compute: the slowest rank's extra compute is time everyone waits for.
    if len(ranks) > 1:
        comp = {r: a.per_rank[r]["compute_ms"] for r in ranks}
        median = imbalance_median(list(comp.values()))
        worst = max(comp, key=lambda r: comp[r])
        extra = comp[worst] - median
        if median > 0 and extra >= _MIN_SHARE * step_ms and comp[worst] >= 1.2 * median:
            out.append(
                _finding(
                    "compute_imbalance",
                    f"Rank {worst} computes {comp[worst] / median:.1f}x the median",
                    f"Rank {worst}: {comp[worst]:.1f} ms/step of compute vs {median:.1f} ms median."
                    " Uneven batch sizes, sequence lengths or model partitioning;"
                    " balance the work.",
                    [worst],
                    extra,
                    step_ms,
                )
            )

    if a.has_gpu:
        busy = [
            a.utilisation[r]["gpu_busy_pct"]
            for r in ranks
            if a.utilisation[r]["gpu_busy_pct"] is not None
        ]
        if busy and float(np.mean(busy)) < 50.0:
            mean_busy = float(np.mean(busy))
            idle_ms = step_ms * (1 - mean_busy / 100.0)
            out.append(
                _finding(
                    "low_gpu_utilisation",
                    f"GPUs are busy only {mean_busy:.0f}% of the step",
                    f"On average {idle_ms:.1f} ms/step the GPU does nothing; the findings above say"
                    " where that time goes.",
                    ranks,
                    0.0,
                    step_ms,
                )
            )
            out[-1]["severity"] = "medium" if mean_busy >= 20 else "high"

    out.sort(key=lambda f: (-f["est_saving_ms_per_step"], f["title"]))
    return out
