"""Kernels: the top kernels by time, their share of GPU time and their spread across ranks."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.app import charts, data


def render() -> None:
    a = data.analysis()
    st.title("Kernels")
    if not a.kernels:
        st.info("No GPU kernels in the analysed steps (a CPU-only trace).")
        return
    df = pd.DataFrame([asdict(k) for k in a.kernels])
    # Numbered: two long names may share their first characters.
    df["kernel"] = [f"{i}. {charts.short_name(n, 60)}" for i, n in enumerate(df["name"], 1)]
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
    st.dataframe(
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
        hide_index=True,
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
