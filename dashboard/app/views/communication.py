"""Communication: per-collective table, wait vs transfer per rank, last arrivals, arrival lag."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from rankscope.dashboard.app import charts, data, model


def render() -> None:
    a = data.analysis()
    st.title("Communication")
    if not len(a.collectives):
        st.info(
            "No collectives in the analysed steps (a single-rank trace, or a job without"
            " torch.distributed communication)."
        )
        return

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


if __name__ == "__main__":
    render()
