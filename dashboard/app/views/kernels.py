"""Kernels: the top kernels by time, their share of GPU time and their spread across ranks."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.app import charts, data


def render() -> None:
    a = data.analysis()
    st.title("Kernels")
    if not a.kernels:
        if not a.steps:
            st.info(wording.NO_KERNELS_NO_TRACE)
        elif not a.has_gpu:
            st.info(wording.NO_KERNELS_CPU_ONLY)
        else:
            st.info(wording.NO_KERNELS_IN_STEPS)
        return
    df = data.kernels_frame()
    top = df.iloc[::-1]
    fig = go.Figure(
        go.Bar(
            y=top["kernel"],
            x=top["ms_per_step"],
            orientation="h",
            marker_color="#2e7d32",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": top["max_rank_ms"] - top["ms_per_step"],
                "arrayminus": top["ms_per_step"] - top["min_rank_ms"],
                "color": "#424242",
            },
            hovertext=top["name"],
        )
    )
    fig.update_xaxes(title="ms per step per rank (bar: mean; whiskers: fastest to slowest rank)")
    charts.show(
        charts.tidy(fig, height=120 + 28 * len(top)),
        "Long whiskers mean ranks do different amounts of this kernel's work: uneven inputs,"
        " not a slow GPU.",
    )
    charts.table(
        df[
            [
                "name",
                "ms_per_step",
                "share_pct",
                "calls_per_step",
                "min_rank_ms",
                "max_rank_ms",
                "max_rank",
                "spread_cv",
            ]
        ],
        {
            "ms_per_step": "%.3f",
            "calls_per_step": "%.1f",
            "min_rank_ms": "%.3f",
            "max_rank_ms": "%.3f",
            "spread_cv": "%.2f",
        },
        column_config={
            "name": st.column_config.TextColumn("kernel", width="large"),
            "ms_per_step": "ms/step",
            "share_pct": st.column_config.ProgressColumn(
                "share of kernel time", format="%.1f%%", min_value=0, max_value=100
            ),
            "calls_per_step": "calls/step",
            "min_rank_ms": "fastest rank ms",
            "max_rank_ms": "slowest rank ms",
            "max_rank": "slowest rank",
            "spread_cv": "spread (cv)",
        },
    )
    st.caption(
        "Share is of all kernel time in the analysed steps; spread (cv) near 0 means every"
        " rank runs it alike."
    )


if __name__ == "__main__":
    render()
