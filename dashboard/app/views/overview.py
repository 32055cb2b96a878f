"""Overview: the verdict first (straggler, ranked findings), then step time and its parts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.express as px
import streamlit as st

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.app import charts, data, model, runs, text
from rankscope.dashboard.render import (
    incomplete_sentence,
    live_lines,
    no_straggler_sentence,
    render_json,
    render_markdown,
    slow_node_lines,
)

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import Report

_SEVERITY = {
    "high": ":red-badge[high]",
    "medium": ":orange-badge[medium]",
    "low": ":blue-badge[low]",
}


def _reader(path: Path, run_root: str) -> Callable[[], bytes]:
    """Read the file only when the user clicks (traces can be large), and then only the
    regular file under the run folder that was opened: never a symlink swapped in since."""
    return lambda: runs.run_file_bytes(path, run_root)


def _trace_buttons(report: Report, rank: int, paths: list[str], cols: Sequence[Any]) -> None:
    for i, p in enumerate(paths):
        path = Path(p)
        cols[i % len(cols)].download_button(
            f"rank {rank}: {text.md(path.name)}",
            data=_reader(path, report.run.path),
            file_name=path.name,
            mime="application/gzip" if path.suffix == ".gz" else "application/json",
            on_click="ignore",
            key=f"trace-{rank}-{path.name}",
        )


def _downloads(report: Report, files: dict[int, list[str]]) -> None:
    with st.expander("Downloads: the report and each rank's raw trace"):
        name = Path(report.run.path).name or "run"
        c1, c2 = st.columns(2)
        c1.download_button(
            "Report (markdown)",
            data=lambda: render_markdown(report),
            file_name=f"{name}.report.md",
            mime="text/markdown",
            on_click="ignore",
        )
        c2.download_button(
            "Report (JSON)",
            data=lambda: render_json(report),
            file_name=f"{name}.report.json",
            mime="application/json",
            on_click="ignore",
        )
        st.caption(
            "Raw traces are standard Kineto JSON: open one in Perfetto at"
            " [ui.perfetto.dev](https://ui.perfetto.dev) → *Open trace file*"
            " (or chrome://tracing, TensorBoard, HTA)."
        )
        cols = st.columns(4)
        if len(files) <= model.MAX_LINE_RANKS:
            i = 0
            for rank, paths in sorted(files.items()):
                for p in paths:
                    _trace_buttons(report, rank, [p], [cols[i % 4]])
                    i += 1
            return
        # Hundreds of ranks: one button per file is a page of buttons; pick the rank.
        stragglers = model.straggler_ranks(report)
        choices = [r for r in stragglers if r in files]
        choices += [r for r in sorted(files) if r not in choices]
        rank = st.selectbox(
            "Rank (stragglers first)",
            choices,
            format_func=charts.rank_label,
            key="rs_overview_download_rank",
        )
        _trace_buttons(report, rank, files[rank], cols)


def _stragglers(report: Report) -> None:
    """Each straggler: how it is late, why, how sure the diagnosis is, what fixing it saves."""
    table = data.stragglers_frame()
    if table.empty:
        return
    st.subheader("Stragglers")
    charts.table(
        table,
        {c: "%.1f" for c in ("saving ms/step", "excess ms/step", "others wait ms/step")},
        {"stalls": "stalls (intermittent)"},
    )
    joint = model.joint_saving_sentence(report)
    st.caption(wording.pattern_legend(list(table["pattern"])) + (f" {joint}" if joint else ""))


def _per_step_chart() -> None:
    """The diagnosis' evidence step by step: a stall is a spike at its step, not a mean."""
    per_step = data.per_step_frame()
    if per_step.empty or per_step["rank"].nunique() < 2:
        return
    st.subheader("Step by step")
    column = st.radio(
        "Per-step measure",
        list(wording.PER_STEP_METRICS),
        format_func=wording.PER_STEP_METRICS.__getitem__,
        horizontal=True,
        key="rs_overview_per_step",
        label_visibility="collapsed",
    )
    fig = charts.per_step_lines(
        per_step,
        column,
        data.stall_marks(column),
        model.straggler_ranks(data.report()),
    )
    fig.update_layout(title=f"Each rank, step by step: {wording.PER_STEP_METRICS[column]}")
    many = per_step["rank"].nunique() > model.MAX_LINE_RANKS
    charts.show(
        charts.tidy(fig, height=340),
        (
            "The median rank (line) and the middle 80% of ranks (band), with the stragglers"
            " (thick) and the ranks furthest from the median (dotted) drawn on their own,"
            if many
            else "One line per rank,"
        )
        + " from the same analysis as the verdict above. A persistent"
        " straggler (thick line) stays above zero at most steps; a stall is a spike at its"
        " step (diamond, labelled with how late it was); noise stays near zero.",
        key="per-step",
    )


TIMELINE_PAGE = "views/timeline.py"  # relative to main.py, as st.navigation lists it


def _timeline_link(i: int, ranks: list[int], step: int) -> None:
    """A button opening the Timeline at ``step`` with ``ranks`` drawn first."""
    shown = ", ".join(map(str, ranks[:4])) + (" ..." if len(ranks) > 4 else "")
    label = f"Timeline: rank{'s' if len(ranks) > 1 else ''} {shown}, step {step}"
    if st.button(label, key=f"rs_finding_timeline_{i}", icon=":material/view_timeline:"):
        st.session_state["rs_timeline_step"] = step
        st.session_state["rs_timeline_focus"] = list(ranks)
        st.switch_page(TIMELINE_PAGE)


def render() -> None:
    report = data.report()
    a = data.analysis()
    run = report.run
    steps = run.steps
    st.title(f"Overview · {text.md(Path(run.path).name)}")
    if steps:
        st.markdown(
            f"{len(report.ranks)} rank(s) of {run.world_size} · steps {steps[0]}–{steps[-1]}"
            f" ({run.step_source} steps)"
            f" · **{wording.ms(run.step_ms or 0.0)} ms/step** on average"
        )
    else:
        window = wording.ms(run.step_ms) if run.step_ms is not None else "–"
        st.markdown(
            f"{len(report.ranks)} rank(s) of {run.world_size} · "
            + wording.whole_trace_window(window).replace("below ", "on these pages ")
        )

    for line in live_lines(report):
        # the job still runs: what follows is what was on disk when it was read
        st.info(text.md(line), icon=":material/sensors:")
    if incomplete := incomplete_sentence(report):
        # first: every figure below was measured without the untraced ranks
        st.warning(incomplete, icon=":material/report:")
    for line in slow_node_lines(report):
        # a machine, not a rank: its ranks are late together
        st.warning(f"**{line}**", icon=":material/dns:")
    sentence = model.straggler_sentence(report)
    one = report.verdict
    # The one verdict (``analysis.verdict``) leads unless it is the window's own straggler,
    # which the callout below words with its size.
    lead = one is not None and not run.missing_trace
    if (
        one is not None
        and lead
        and sentence
        and one.agreement in ("agree", "single")
        and one.source != "whole_run"
    ):
        lead = one.onset_step is not None or one.period_steps is not None
    if one is not None and lead:
        if one.rank is None and one.pattern != "rotating":
            st.success(one.headline, icon=":material/check:")
        else:
            st.warning(f"**{one.headline}**", icon=":material/directions_run:")
        if one.explanation:
            st.caption(one.explanation)
        if hint := model.straggler_next(report):
            st.caption(hint)
    elif sentence:
        st.warning(f"**{sentence}**", icon=":material/directions_run:")
        if hint := model.straggler_next(report):
            st.caption(hint)
    elif rotating := model.rotating_sentence(report):
        st.warning(f"**{rotating}**", icon=":material/autorenew:")
    elif no_straggler := no_straggler_sentence(report):
        st.success(no_straggler, icon=":material/check:")

    ranks = data.ranks_frame()
    figures = model.headline_numbers(report)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Step time", figures["step"])
    c2.metric(
        "Straggler",
        figures["straggler"],
        figures["straggler_cause"],
        delta_color="off",
        delta_arrow="off",
    )
    if len(ranks):
        c3.metric(wording.WAIT_TILE, figures["wait"], help=wording.WAIT_TILE_HELP)
        c4.metric("GPU busy (trace)", figures["busy"])

    _stragglers(report)
    _per_step_chart()

    st.subheader("Findings")
    st.caption(wording.FINDINGS_ORDER.capitalize() + ".")
    if not report.findings:
        st.write(wording.no_findings(report.verdict.rank if report.verdict else None))
    linked = bool(steps) and steps != [-1]  # a step to open the Timeline at
    slowest = data.slowest_step() if linked else -1
    for i, f in enumerate(report.findings, 1):
        saving = f.est_saving_ms_per_step
        st.markdown(
            f"**{i}. {f.title}** {_SEVERITY.get(f.severity, '')}"
            + (f" · saves ~**{saving:.1f} ms/step**" if saving else "")
        )
        st.caption(f.detail)
        if f.ranks and linked:
            _timeline_link(i, f.ranks, model.finding_step(report.per_step, f.ranks, steps, slowest))

    stragglers = model.straggler_ranks(report)
    left, right = st.columns(2)
    with left:
        bars, total = model.limit_rank_bars(
            ranks.assign(rank=ranks["rank"].map(charts.rank_label))[["rank", "step_ms"]],
            "step_ms",
            None,
            stragglers,
        )
        fig = px.bar(
            bars,
            x="rank",
            y="step_ms",
            labels={"step_ms": "ms per step", "rank": ""},
            title="Step time per rank",
        )
        fig.update_traces(marker_color="#455a64")
        fig.update_xaxes(type="category")
        charts.show(
            charts.tidy(fig, height=360),
            wording.step_bars_caption(
                float(ranks["step_ms"].min()) if len(ranks) else None,
                float(ranks["step_ms"].max()) if len(ranks) else None,
            )
            + charts.bars_note(bars, total),
        )
    with right:
        parts, total = model.limit_rank_bars(data.breakdown_long(), "ms", "component", stragglers)
        fig = px.bar(
            parts,
            x="rank",
            y="ms",
            color="component",
            color_discrete_map=model.PART_COLOURS,
            labels={"ms": "ms per step", "rank": ""},
            title="Where each rank's step goes",
        )
        fig.update_xaxes(type="category")
        charts.show(
            charts.tidy(fig, height=360),
            "The six parts add up to the step. A rank with much red (exposed communication) is"
            " waiting for someone; the rank with the least red and the most orange/blue is the one"
            " they wait for." + charts.bars_note(parts, total),
        )

    if a.warnings:
        with st.expander(f"{len(a.warnings)} warning(s) from ingest and analysis"):
            for w in a.warnings:
                st.markdown(f"- {text.md(w)}")  # warnings name files
    _downloads(report, {r: rd.files for r, rd in a.run.ranks.items()})


if __name__ == "__main__":
    render()
