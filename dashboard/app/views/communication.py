"""Communication: per-collective table, wait vs transfer per rank, last arrivals, arrival lag."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from rankscope.dashboard.analysis import timeline
from rankscope.dashboard.app import charts, data, model


def render() -> None:
    a = data.analysis()
    report = data.report()
    st.title("Communication")
    if not len(a.collectives):
        st.info(
            "No collectives in the analysed steps (a single-rank trace, or a job without"
            " torch.distributed communication)."
        )
        return

    st.subheader("Per collective")
    rows = [
        {
            "collective": c["name"],
            "process group": c["pg"],
            "count": c["count"],
            "message MB": None if c["bytes"] is None else c["bytes"] / 1e6,
            "transfer ms/step": c["transfer_ms"],
            "wait ms/step/rank": c["wait_ms"],
            "effective GB/s": c["effective_gbps"],
            "last to arrive": ", ".join(
                f"rank {k}: {v}"
                for k, v in sorted(c["last_arrival_counts"].items(), key=lambda kv: -kv[1])
            ),
        }
        for c in report["collectives"]
    ]
    st.dataframe(
        rows,
        hide_index=True,
        column_config={"message MB": st.column_config.NumberColumn(format="%.1f")},
    )
    st.caption(
        "Transfer is the shortest time any rank spent in the collective (the last rank in does not"
        " wait); the rest is waiting. Much more wait than transfer means a straggler, not the"
        " network."
        " Effective bandwidth is message size over transfer time, where sizes are known."
    )

    per_rank = timeline.collective_time_by_rank(a.collectives, len(a.steps)).to_pandas()
    per_rank["rank"] = per_rank["rank"].map(charts.rank_label)
    left, right = st.columns(2)
    with left:
        long = per_rank.melt(
            id_vars="rank", value_vars=["transfer_ms", "wait_ms"], var_name="part", value_name="ms"
        )
        long["part"] = long["part"].map(
            {"transfer_ms": "transfer", "wait_ms": "waiting for the last rank"}
        )
        fig = px.bar(
            long,
            x="rank",
            y="ms",
            color="part",
            color_discrete_map={"transfer": "#c62828", "waiting for the last rank": "#e57373"},
            labels={"ms": "ms per step", "rank": ""},
            title="Time in collectives per rank",
        )
        charts.show(
            charts.tidy(fig, height=340),
            "Transfer is the same for everyone; the rank with the least waiting is the one the"
            " others wait for.",
        )
    with right:
        fig = px.bar(
            per_rank,
            x="rank",
            y="last_arrivals",
            labels={"last_arrivals": "collectives", "rank": ""},
            title="How often each rank arrived last",
        )
        fig.update_traces(marker_color="#ef6c00")
        charts.show(
            charts.tidy(fig, height=340),
            "A rank that is last at most collectives holds the others back every step.",
        )

    st.subheader("Arrival lag per collective")
    lag = timeline.arrival_lag(a.collectives)
    matrix = model.table_matrix(lag, "rank", "instance", "lag_ms")
    fig = px.imshow(
        matrix,
        color_continuous_scale=charts.HEAT,
        aspect="auto",
        labels={"x": "collective (in time order)", "y": "rank", "color": "ms late"},
    )
    fig.update_yaxes(
        tickmode="array", tickvals=list(matrix.index), ticktext=[f"rank {r}" for r in matrix.index]
    )
    charts.show(
        charts.tidy(fig, height=120 + 28 * len(matrix)),
        "How much later than the first rank each rank entered each collective (from waits, so"
        " free of clock skew). A hot row is a late rank; a hot column is one slow step.",
    )


if __name__ == "__main__":
    render()
