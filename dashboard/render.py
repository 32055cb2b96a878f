"""Render a typed report (``analysis.report.Report``) as text, markdown or JSON.

Text and markdown read like an expert's summary: the verdict and findings
first, then the per-rank table, collectives and GPU utilisation. Each renderer
only formats; every number comes from the report and every sentence from
``rankscope.dashboard.analysis.wording``. ``render_text``, ``render_markdown``
and ``render_json`` take the ``Report`` and return the whole document as a string.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.results import Straggler

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import RankTelemetry, Report

_SEV_MARK = {"high": "!!!", "medium": "!! ", "low": "!  "}


def _fmt(x: Any, digits: int = 1, suffix: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}{suffix}"
    return f"{x}{suffix}"


def _rank_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "rank",
        "step ms",
        "compute",
        "comm",
        "exposed",
        "wait",
        "data",
        "host-only",
        "idle",
        "GPU busy",
        "HTA idle/compute/non-compute %",
    ]
    rows = []
    for r in report.ranks:
        tb = r.temporal_breakdown
        rows.append(
            [
                str(r.rank),
                _fmt(r.step_ms),
                _fmt(r.compute_ms),
                _fmt(r.comm_ms),
                _fmt(r.comm_exposed_ms),
                _fmt(r.comm_wait_ms),
                _fmt(r.data_ms),
                _fmt(r.host_ms),
                _fmt(r.idle_ms),
                _fmt(r.gpu_busy_pct, 1, "%"),
                f"{tb.idle_pct:.2f} / {tb.compute_pct:.2f} / {tb.non_compute_pct:.2f}"
                if tb
                else "-",
            ]
        )
    return header, rows


def _coll_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "collective",
        "count",
        "msg bytes",
        "transfer ms/step",
        "wait ms/step/rank",
        "last to arrive",
    ]
    rows = []
    for c in report.collectives[:10]:
        last = ", ".join(
            f"r{k}: {v}"
            for k, v in sorted(c.last_arrival_counts.items(), key=lambda kv: -kv[1])[:4]
        )
        rows.append(
            [
                c.name + (f" (pg {c.pg})" if c.pg else ""),
                str(c.count),
                _human_bytes(c.bytes),
                _fmt(c.transfer_ms, 2),
                _fmt(c.wait_ms, 2),
                last or "-",
            ]
        )
    return header, rows


def _tel_mean(tel: RankTelemetry | None, field: str, scale: float = 1.0) -> str:
    """A telemetry field's mean in the steps (else over the run), scaled, or "-"."""
    value = tel.in_steps(field) if tel is not None else None
    return "-" if value is None else f"{value / scale:.0f}"


def _tel_pct(tel: RankTelemetry | None, field: str) -> str:
    recorded = tel is not None and field in tel.fields
    return _tel_mean(tel, field) + ("%" if recorded else "")


def _gpu_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "rank",
        "busy (trace)",
        "SM efficiency",
        "occupancy",
        "NVML util",
        "GPM SM active",
        "power W",
    ]
    rows = []
    for r in report.ranks:
        tel = r.telemetry
        rows.append(
            [
                str(r.rank),
                _fmt(r.gpu_busy_pct, 1, "%"),
                _fmt(r.sm_efficiency_pct, 1, "%"),
                _fmt(r.achieved_occupancy_pct, 1, "%"),
                _tel_pct(tel, "gpu_util_pct"),
                _tel_pct(tel, "gpm_sm_activity_pct"),
                _tel_mean(tel, "power_mw", 1000.0),
            ]
        )
    return header, rows


def _show_gpu(report: Report) -> bool:
    return report.run.has_gpu or any(
        r.telemetry is not None and "gpu_util_pct" in r.telemetry.fields for r in report.ranks
    )


_GPU_NOTE = (
    "busy = any kernel/copy running (from the trace); SM efficiency = share of SMs the"
    " kernels could fill; NVML util only says a kernel was running, GPM SM active says how"
    " many SMs were."
)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def incomplete_sentence(report: Report) -> str | None:
    """That some ranks left no trace, naming them; None when every rank has one."""
    missing = report.run.missing_trace
    if not missing:
        return None
    traced = [r for r in report.run.ranks if r not in missing]
    return wording.incomplete_verdict(missing, traced)


def no_straggler_sentence(report: Report) -> str | None:
    """Why no rank is a straggler, when collectives could tell; None when they cannot."""
    if report.stragglers:
        return None
    if missing := report.run.missing_trace:
        return wording.no_straggler_among_traced([r for r in report.run.ranks if r not in missing])
    rotating = report.imbalance.rotating
    return wording.no_straggler_sentence(
        len(report.run.ranks),
        bool(report.collectives),
        report.imbalance.last_arrival,
        sorted(rotating.counts) if rotating else None,
    )


def _top_verdict(s: Straggler) -> str:
    return wording.straggler_verdict(
        s.rank,
        s.cause,
        s.severity,
        s.caused_wait_ms_per_step,
        s.pattern,
        [(st.step, st.lag_ms) for st in s.steps],
        s.cause_detail,
    )


def _verdict(report: Report) -> str:
    run = report.run
    s = report.stragglers
    whole = report.whole_run
    if run.step_source == "none":
        head = wording.telemetry_only(len(run.ranks), run.world_size)
        if whole is None:
            return head
        head = wording.whole_run_scope(
            len(run.ranks), run.world_size, whole.first_step, whole.last_step
        )
    else:
        head = wording.run_scope(len(run.ranks), run.world_size, run.steps, _fmt(run.step_ms))
    if incomplete := incomplete_sentence(report):
        head = f"{incomplete} {head}"
    if s:
        return f"{head} " + _top_verdict(s[0])
    no_straggler = no_straggler_sentence(report)
    return f"{head} {no_straggler}" if no_straggler else head


def _whole_run_lines(report: Report) -> list[str]:
    """The light layer's whole-run picture, when a trace window also exists."""
    whole = report.whole_run
    if whole is None or report.run.step_source == "none":
        return []
    out = [wording.whole_run_heading(whole.first_step, whole.last_step, whole.n_steps)]
    if whole.capture_steps:
        out.append("  - " + wording.capture_steps_left_out(whole.capture_steps))
    for s in whole.stragglers:
        out.append(f"  - {_top_verdict(s)}")
    if whole.rotating:
        out.append("  - " + wording.ROTATING_WHOLE_RUN)
    if not whole.stragglers and not whole.rotating:
        out.append("  - " + wording.NO_STRAGGLER_WHOLE_RUN)
    return out


def _table_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _table_md(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _hang_lines(report: Report, md: bool) -> list[str]:
    """The hang verdict first (``dashboard.analysis.hang``): who stopped, where, who waited."""
    h = report.hang
    if h is None:
        return []
    label = "HUNG" if h.kind != "late_arrival" else "SLOW, NOT HUNG"
    if h.kind in ("crashed", "exited"):
        label = "CRASHED"
    head = f"{label}: {h.headline}"
    out = [f"**{head}**" if md else head]
    bullet = "- " if md else "  "
    out += [f"{bullet}also: {d}" for d in h.details]
    if h.exit_code is not None:
        out.append(f"{bullet}the job exited with code {h.exit_code}")
    for r in h.ranks if h.kind != "late_arrival" else ():
        where = r.where
        text = f"rank {r.rank}: {r.status}, last step {r.last_step}"
        if r.exception:
            text += f"; {r.exception}"
        if where:
            text += f"; in {where.function} ({where.file.rsplit('/', 1)[-1]}:{where.line})"
        out.append(f"{bullet}{text}")
    if h.unfinished_step is not None:
        out.append(f"{bullet}findings below come from the steps before step {h.unfinished_step}")
    return [*out, ""]


def render_text(report: Report) -> str:
    run = report.run
    out = [f"rankscope report: {run.path}", "", *_hang_lines(report, False)]
    out += [_verdict(report), ""]
    if whole := _whole_run_lines(report):
        out += [*whole, ""]
    if report.findings:
        out.append("Findings (worst first, estimated saving per step):")
        for i, f in enumerate(report.findings, 1):
            saving = f.est_saving_ms_per_step
            out.append(
                f"  {i}. [{f.severity}] {f.title}"
                + (f"  (~{saving:.1f} ms/step)" if saving else "")
            )
            out.append(f"     {f.detail}")
        out.append("")
    else:
        out += [wording.NO_FINDINGS, ""]
    if run.step_source != "none":
        out.append("Per rank (ms per step):")
        out.append(_table_text(*_rank_rows(report)))
    if report.collectives:
        out += ["", "Collectives:", _table_text(*_coll_rows(report))]
    if _show_gpu(report):
        out += ["", "GPU utilisation:", _table_text(*_gpu_rows(report)), f"  ({_GPU_NOTE})"]
    if run.warnings:
        out += ["", "Warnings:"] + [f"  - {w}" for w in run.warnings]
    return "\n".join(out) + "\n"


def render_markdown(report: Report) -> str:
    run = report.run
    out = [f"# rankscope report: `{run.path}`", "", *_hang_lines(report, True)]
    out += [f"**{_verdict(report)}**", ""]
    if whole := _whole_run_lines(report):
        out += [whole[0], "", *whole[1:], ""]
    out.append("## Findings")
    if report.findings:
        for f in report.findings:
            saving = f.est_saving_ms_per_step
            tail = f" *(~{saving:.1f} ms/step)*" if saving else ""
            out.append(f"- **[{f.severity}] {f.title}**{tail}  \n  {f.detail}")
    else:
        out.append(wording.NO_FINDINGS)
    out += ["", "## Per rank (ms per step)", "", _table_md(*_rank_rows(report))]
    if report.collectives:
        out += ["", "## Collectives", "", _table_md(*_coll_rows(report))]
    if _show_gpu(report):
        out += ["", "## GPU utilisation", "", _table_md(*_gpu_rows(report)), "", _GPU_NOTE]
    if report.top_kernels:
        out += ["", "## Top kernels", ""]
        rows = [
            [
                k.name[:80],
                _fmt(k.ms_per_step, 3),
                _fmt(k.share_pct, 1, "%"),
                f"r{k.max_rank}",
                _fmt(k.spread_cv, 2),
            ]
            for k in report.top_kernels[:10]
        ]
        out.append(_table_md(["kernel", "ms/step", "share", "max rank", "spread (cv)"], rows))
    if run.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
    return "\n".join(out) + "\n"


def render_json(report: Report) -> str:
    """The report as JSON: NaN and infinities become ``null`` (JSON has neither).

    msgspec encodes the typed report (20x faster than ``json`` on a 1,024-rank
    report: 0.05 s, not 1.1 s); a report with non-ASCII text goes through
    ``json``, which escapes it, so the output is ASCII either way.
    """
    import msgspec

    from rankscope.dashboard.analysis.report import enc_hook

    try:
        text = msgspec.json.format(msgspec.json.encode(report, enc_hook=enc_hook), indent=1)
        if text.isascii():
            return text.decode() + "\n"
    except (TypeError, ValueError, OverflowError):
        pass
    plain = msgspec.to_builtins(report, enc_hook=enc_hook)
    return json.dumps(json_safe(plain), indent=1, allow_nan=False) + "\n"


def json_safe(o: Any) -> Any:
    """``o`` with every non-finite float as None and numpy scalars as Python numbers."""
    if isinstance(o, dict):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    import numpy as np

    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# The HTML renderer (``render_html``) formats the same sentences and rows as text does.
verdict_sentence = _verdict
rank_rows = _rank_rows
collective_rows = _coll_rows
gpu_rows = _gpu_rows
show_gpu = _show_gpu
hang_lines = _hang_lines
whole_run_lines = _whole_run_lines
fmt = _fmt
GPU_NOTE = _GPU_NOTE
