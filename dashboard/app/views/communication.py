"""Communication: per-collective table, wait vs transfer per rank, last arrivals, arrival lag;
pipelines (stages, their bubble, one step over time) and process groups."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.app import charts, data, model


def render() -> None:
    a = data.analysis()
    st.title("Communication")
    if not len(a.collectives):
        if data.report().pipelines:  # the light layer's, over the whole run
            _pipelines()
        else:
            st.info(
                "No collectives in the analysed steps (a single-rank trace, or a job without"
                " torch.distributed communication)."
            )
        _groups()
        return
    _pipelines()

    st.subheader("Per collective")
    charts.table(
        data.collectives_frame(),
        {
            "message MB": "%.1f",
            "transfer ms/step": "%.3f",
            "wait ms/step/rank": "%.3f",
            "effective GB/s": "%.2f",
        },
    )
    st.caption(
        "Transfer is the shortest time any rank spent in the collective (the last rank in does not"
        " wait); the rest is waiting. Much more wait than transfer means a straggler, not the"
        " network."
        " Effective bandwidth is message size over transfer time, where sizes are known."
        " A dash: the trace does not record message sizes."
    )

    per_rank = data.collective_time_by_rank()
    first = model.straggler_ranks(data.report())
    left, right = st.columns(2)
    with left:
        bars, total = model.limit_rank_bars(data.collective_time_long(), "ms", "part", first)
        fig = px.bar(
            bars,
            x="rank",
            y="ms",
            color="part",
            color_discrete_map={"transfer": "#c62828", "waiting for the last rank": "#e57373"},
            labels={"ms": "ms per step", "rank": ""},
            title="Time in collectives per rank",
        )
        fig.update_xaxes(type="category")
        charts.show(
            charts.tidy(fig, height=340),
            "Transfer is the same for everyone; the rank with the least waiting is the one the"
            " others wait for." + charts.bars_note(bars, total),
        )
    shared = bool((a.collectives["last_rank"] >= 0).any())
    if not shared:
        with right:
            st.info(
                "Point-to-point only: no operation here is shared by several ranks (each send"
                " and receive is one rank's), so no rank arrives last and there is no arrival"
                " lag. The pipeline section above says which stage the others wait for."
            )
        _groups()
        return
    with right:
        last, total = model.limit_rank_bars(
            per_rank[["rank", "last_arrivals"]], "last_arrivals", None, first, how="total"
        )
        fig = px.bar(
            last,
            x="rank",
            y="last_arrivals",
            labels={"last_arrivals": "collectives", "rank": ""},
            title="How often each rank arrived last",
        )
        fig.update_traces(marker_color="#ef6c00")
        fig.update_xaxes(type="category")
        charts.show(
            charts.tidy(fig, height=340),
            "A rank that is last at most collectives holds the others back every step."
            + charts.bars_note(last, total),
        )

    st.subheader("Arrival lag per collective")
    matrix = data.arrival_lag_matrix()
    fig, shown = charts.rank_heatmap(
        matrix,
        None,
        first,
        color_continuous_scale=charts.HEAT,
        aspect="auto",
        labels={"x": "collective (in time order)", "y": "rank", "color": "ms late"},
    )
    charts.show(
        charts.tidy(
            # a few ranks still get room for a readable colour bar (its title on its side)
            fig,
            height=max(280, 120 + 28 * shown) if shown <= 16 else charts.heat_height(shown, 320),
            coloraxis_colorbar={"title": {"side": "right"}},
        ),
        "How much later than the first rank each rank entered each collective (from waits, so"
        " free of clock skew). A hot row is a late rank; a hot column is one slow step."
        + charts.many_ranks_note(shown, len(matrix)),
        key="heat-arrival-lag",
    )

    _groups()


def _pipelines() -> None:
    """Each pipeline: its stages' busy and blocked time, and one step of it over time."""
    report = data.report()
    steps = [s for s in data.analysis().steps if s >= 0]
    for i, p in enumerate(report.pipelines):
        shape, ideal = wording.pipeline_texts(
            p.ranks, p.micro_batches, p.ideal_bubble, p.order_source
        )
        st.subheader(f"Pipeline {i + 1}" if len(report.pipelines) > 1 else "Pipeline")
        slow = (
            f"stage {p.bottleneck_stage} (rank {p.bottleneck_rank})"
            if p.bottleneck_stage is not None
            else None
        )
        line = wording.pipeline_line(shape, p.bubble, ideal, slow)
        (st.warning if slow else st.info)(line)
        if p.source == "light":
            st.caption(wording.light_pipeline_source(p.first_step, p.last_step))
        left, right = st.columns(2)
        with left:
            stages = data.frame("pipeline_stages", i)
            fig = px.bar(
                stages,
                x="ms",
                y="stage",
                color="part",
                orientation="h",
                color_discrete_map={"busy": "#1565c0", "blocked on a neighbour": "#e57373"},
                labels={"ms": "ms per step", "stage": ""},
                title="Each stage's step",
            )
            fig.update_yaxes(autorange="reversed")
            charts.show(
                charts.tidy(fig, height=120 + 40 * len(p.stages)),
                "Busy: the stage's own work (everything but waiting). Blocked: inside a send"
                " or receive, waiting for a neighbour. The busiest stage sets the pace; the"
                " others' blocked time beyond the schedule's ideal is what it costs.",
            )
        with right:
            if steps:
                blocks = data.frame("pipeline_step", (i, steps[0]))
                fig = go.Figure()
                for kind, colour in (("recv", "#e57373"), ("send", "#ffb74d")):
                    part = blocks[blocks["kind"] == kind]
                    fig.add_bar(
                        x=part["ms"],
                        base=part["start_ms"],
                        y=part["stage"],
                        orientation="h",
                        name=f"blocked in {kind}",
                        marker_color=colour,
                    )
                fig.update_layout(
                    title=f"Step {steps[0]} over time", barmode="overlay", xaxis_title="ms"
                )
                fig.update_yaxes(autorange="reversed")
                charts.show(
                    charts.tidy(fig, height=120 + 40 * len(p.stages)),
                    "Where each stage waited during one step, from its own step start; the gaps"
                    " are its work. The fill at the start and the drain at the end are the"
                    " schedule's bubble.",
                    key=f"pipeline-step-{i}",
                )


def _groups() -> None:
    """The process groups the flight recorder logged: members, and whom each one waits for."""
    report = data.report()
    groups = [g for g in report.process_groups if len(g.ranks) > 1]
    if len(groups) < 2:
        return  # one group is the whole job: the sections above already say it
    st.subheader("Process groups")
    charts.table(data.frame("groups"), {"its lag ms": "%.1f"})
    matrix = data.frame("group_lag_matrix")
    fig = px.imshow(
        matrix,
        color_continuous_scale=charts.HEAT,
        aspect="auto",
        labels={"x": "rank", "y": "process group", "color": "ms late"},
    )
    fig.update_xaxes(type="category")
    charts.show(
        charts.tidy(fig, height=max(240, 100 + 28 * len(matrix))),
        "Each member's mean arrival lag behind its group's first member, from the flight"
        " recorder over the whole run (blank: not a member). A hot cell is the rank that"
        " group waits for.",
        key="heat-group-lag",
    )


if __name__ == "__main__":
    render()
