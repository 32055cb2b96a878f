"""Drawing helpers shared by the views: one look for every chart, a caption under each.

Only presentation lives here (colours, layout, the chart + caption pair); the
numbers come from the analysis engine through ``data`` and ``model``.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.app.model import PART_COLOURS

TIMELINE_COLOURS = {
    "compute": PART_COLOURS["compute"],
    "comm_wait": "#e57373",
    "comm": PART_COLOURS["exposed communication"],
    "memcpy": PART_COLOURS["memcpy"],
    "data": PART_COLOURS["data loading (exposed)"],
    "host": PART_COLOURS["host only"],
    "idle": "#e0e0e0",
}
HEAT = "YlOrRd"


def tidy(fig: go.Figure, height: int | None = None, **layout: Any) -> go.Figure:
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "title": None},
        **({"height": height} if height else {}),
        **layout,
    )
    return fig


def show(fig: go.Figure, caption: str, key: str | None = None) -> None:
    """The chart, then one line saying what to look for.

    A plotly title moves above the chart as text: inside, it collides with the legend.
    """
    title = fig.layout.title.text
    if title:
        st.markdown(f"**{title}**")
        fig.update_layout(title=None)
    st.plotly_chart(fig, width="stretch", key=key, config={"displaylogo": False})
    st.caption(caption)


def rank_label(rank: int) -> str:
    return f"rank {rank}"


def short_name(name: str, limit: int = 70) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
