"""Drawing helpers shared by the views: one look for every chart and table, a caption under each.

Only presentation lives here (colours, layout, the chart + caption pair, integer
axes for ranks and steps, how a table shows a missing value); the numbers come
from the analysis engine through ``data`` and ``model``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.app.model import PART_COLOURS, rank_label, short_name

__all__ = ["rank_label", "short_name"]

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
MISSING = "—"  # what a table shows where the trace cannot tell (never "None" or "nan")


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


def integer_axes(fig: go.Figure, matrix: pd.DataFrame, x_title: str | None = None) -> go.Figure:
    """A rank x step (or instance) heatmap: one tick per rank, named; whole numbers on x.

    Plotly would otherwise put ticks between cells (-0.5, 0.5) on a small matrix.
    """
    fig.update_yaxes(
        tickmode="array",
        tickvals=list(matrix.index),
        ticktext=[rank_label(int(r)) for r in matrix.index],
    )
    fig.update_xaxes(type="category", **({"title": x_title} if x_title else {}))
    return fig


def table(
    df: pd.DataFrame,
    formats: dict[str, str] | None = None,
    column_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """``st.dataframe`` without the index; a missing value reads as an em dash, never "None".

    ``formats``: column -> printf-style number format (``"%.1f"``); ``column_config``
    as in ``st.dataframe``: a plain label keeps the column's format, a column type
    (a progress bar) replaces it.
    """
    config: dict[str, Any] = dict(column_config or {})
    for column, fmt in (formats or {}).items():
        label = config.get(column)
        if label is None or isinstance(label, str):
            config[column] = st.column_config.NumberColumn(label, format=fmt)
    st.dataframe(df, hide_index=True, placeholder=MISSING, column_config=config, **kwargs)
