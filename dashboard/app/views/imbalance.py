"""Load imbalance: rank x step heatmaps, per-rank distributions, who arrived last at each step.

Every rank x step heatmap outlines what the diagnosis found: a persistent
straggler's whole row, each stall of an intermittent straggler or of rotating
lateness as its cell (``data.stall_marks``).
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from rankscope.dashboard.app import charts, data, figures, model

HEATMAPS = (
    (
        "compute_ms",
        "Compute (ms)",
        "A row darker than the others computes more every step: uneven batches or work.",
    ),
    (
        "data_ms",
        "Data loading (ms)",
        "A dark row is a rank whose input pipeline is slower; it makes everyone else wait.",
    ),
    (
        "comm_wait_ms",
        "Waiting for the last rank (ms)",
        "Dark rows wait for someone; the light row among dark ones is the rank they wait for.",
    ),
)
DISTRIBUTION_METRICS = {
    "step time": "step_ms",
    "compute": "compute_ms",
    "data loading": "data_ms",
    "host only": "host_ms",
    "waiting in collectives": "comm_wait_ms",
    "communication (all)": "comm_ms",
    "idle": "idle_ms",
}


MARKS_CAPTION = (
    " Outlined: what the diagnosis found (a persistent straggler's row, a stall's cell;"
    " dotted when the stalls rotate between ranks)."
)


def _excess_heatmap(marks: pd.DataFrame, first: list[int]) -> None:
    """The diagnosis' own evidence, rank x step: extra work beyond the others' median."""
    matrix = data.per_step_matrix("excess_ms")
    if matrix.empty or len(matrix) < 2:
        return
    fig, shown = figures.excess_heatmap(matrix, marks, first)
    charts.show(
        fig,
        "Red: a rank that reached the step's collectives later than the others' median, so"
        " they waited; blue: earlier. A red row is a persistent straggler; one deep red cell"
        " is a stall at that step." + MARKS_CAPTION + charts.many_ranks_note(shown, len(matrix)),
        key="heat-excess",
    )


def render() -> None:
    a = data.analysis()
    st.title("Load imbalance")
    if len(a.run.ranks) < 2:
        st.info("One rank only: there is nothing to balance.")

    marks = data.stall_marks()
    first = model.straggler_ranks(data.report())
    _excess_heatmap(marks, first)

    cols = st.columns(len(HEATMAPS))
    for col, (metric, title, caption) in zip(cols, HEATMAPS, strict=True):
        with col:
            matrix = data.rank_step_matrix(metric)
            fig, shown = charts.rank_heatmap(
                matrix,
                marks,
                first,
                text_auto=".0f",
                color_continuous_scale=charts.HEAT,
                aspect="auto",
                labels={"x": "step", "y": "rank", "color": "ms"},
                title=title,
            )
            charts.show(
                charts.tidy(fig, height=charts.heat_height(shown, 300)),
                caption + charts.many_ranks_note(shown, len(matrix)),
                key=f"heat-{metric}",
            )

    st.subheader("Per-rank distribution over steps")
    label = st.selectbox("Metric", list(DISTRIBUTION_METRICS), index=2, key="rs_imbalance_metric")
    metric = DISTRIBUTION_METRICS[label]
    steps, total = model.limit_rank_boxes(data.steps_by_rank(), metric, first)
    cut = model.drawn_ranks(steps) < total
    fig = px.box(
        steps,
        x="rank",
        y=metric,
        points="outliers" if cut else "all",
        labels={metric: "ms"},
    )
    charts.show(
        charts.tidy(fig, height=320),
        ("Each box is one rank's steps." if cut else "Each dot is one step.")
        + " A box higher than the others is a rank that is consistently slower;"
        " a tall box is a rank that is slow only sometimes (stalls, GC, a noisy neighbour)."
        + charts.bars_note(steps, total),
    )

    st.subheader("Who arrived last")
    matrix = data.last_arrival_matrix()
    if matrix.empty:
        st.info(
            "No collective was matched across ranks in these steps, so arrival order is unknown."
        )
    else:
        fig, shown = charts.rank_heatmap(
            matrix,
            marks,
            first,
            text_auto=True,
            color_continuous_scale="Blues",
            aspect="auto",
            labels={"x": "step", "y": "rank", "color": "collectives"},
            title="Collectives each rank arrived last at, per step",
        )
        charts.show(
            charts.tidy(fig, height=charts.heat_height(shown, 280)),
            "One row lit in every column means the same rank is last at every step: a persistent"
            " straggler, not noise." + MARKS_CAPTION + charts.many_ranks_note(shown, len(matrix)),
            key="heat-last",
        )

    st.subheader("Imbalance per metric")
    charts.table(
        data.imbalance_frame(),
        {c: "%.3f" for c in ("mean", "max", "min", "max_over_mean", "cv")},
    )
    st.caption("max/mean near 1 is balanced; cv is the spread across ranks relative to the mean.")


if __name__ == "__main__":
    render()
