"""Timeline: one step across all ranks, aligned at step start: a late arrival shows at a glance."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis.timeline import CATEGORIES, CATEGORY_LABELS
from rankscope.dashboard.app import charts, data, model


def render() -> None:
    a = data.analysis()
    st.title("Timeline of one step")
    steps = a.steps
    if not steps:
        st.info(
            "No profiler trace in this run yet, so there is no step to draw. Capture one with"
            " `rankscope attach RUN --steps 3` while the job runs."
        )
        return
    # Start on the slowest step (a straggler shows most there), or where a finding's
    # link asked (the Overview sets the key before the page runs).
    if st.session_state.get("rs_timeline_step") not in steps:
        slowest = data.slowest_step()
        st.session_state["rs_timeline_step"] = slowest if slowest in steps else steps[0]
    step = st.selectbox(
        "Step",
        steps,
        format_func=lambda s: "whole trace" if s < 0 else f"step {s}",
        key="rs_timeline_step",
    )
    focus = [int(r) for r in st.session_state.get("rs_timeline_focus") or []]
    rows = data.step_rows(step)
    first = focus + [r for r in model.straggler_ranks(data.report()) if r not in focus]
    if focus:
        st.caption(
            f"Drawn first: rank(s) {', '.join(map(str, focus))}, from the finding you followed."
        )
    measures = [c for c in rows.columns if c.endswith("_ms")]
    total = len(rows)
    # Hundreds of ranks: a bar each is a page of bars; the stragglers and outliers of this
    # step, chosen from its breakdown before any event is read (only theirs are).
    ranks = model.shown_ranks(rows.set_index("rank")[measures], first, model.MAX_BAR_RANKS)
    drawn = ranks if len(ranks) < total else None
    segments = data.step_timeline(step, drawn=drawn).to_pandas()
    if segments.empty:
        st.info("No rank has this step.")
        return
    ranks = [r for r in ranks if r in set(segments["rank"])]
    if drawn is None:
        ranks = sorted(segments["rank"].unique())
    fig = go.Figure()
    for cat in CATEGORIES:
        part = segments[segments["category"] == cat]
        if part.empty:
            continue
        fig.add_trace(
            go.Bar(
                y=[charts.rank_label(r) for r in part["rank"]],
                x=part["end_ms"] - part["start_ms"],
                base=part["start_ms"],
                orientation="h",
                name=CATEGORY_LABELS[cat],
                marker={"color": charts.TIMELINE_COLOURS[cat], "line": {"width": 0}},
                hovertemplate="%{y}: %{base:.2f}–%{customdata:.2f} ms<extra>"
                + CATEGORY_LABELS[cat]
                + "</extra>",
                customdata=part["end_ms"],
            )
        )
    fig.update_layout(barmode="overlay", bargap=0.25)
    fig.update_yaxes(
        categoryorder="array", categoryarray=[charts.rank_label(r) for r in reversed(ranks)]
    )
    fig.update_xaxes(title="ms since the rank's own start of the step")
    charts.show(
        charts.tidy(fig, height=140 + (60 if len(ranks) <= 16 else 28) * len(ranks)),
        charts.timeline_colours_caption(set(segments["category"]))
        + charts.many_ranks_note(len(ranks), total),
    )
    st.caption(
        f"{len(segments):,} shapes drawn; stretches shorter than about a pixel are merged."
        " Rows are each rank's own clock, aligned at its start of the step."
    )
    charts.rank_table(rows, measures, first, "rs_timeline_all_ranks", {c: "%.1f" for c in measures})
    st.caption("This step's breakdown per rank (ms).")


if __name__ == "__main__":
    render()
