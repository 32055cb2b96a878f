"""Drawing helpers shared by the views: one look for every chart and table, a caption under each.

Only presentation lives here (colours, layout, the chart + caption pair, integer
axes for ranks and steps, how a table shows a missing value, where a stall mark
goes on a chart); the numbers come from the analysis engine through ``data`` and
``model``.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.app import text
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
DIVERGING = "RdBu_r"  # later than the others' median: red; earlier: blue
# The per-step chart: the stragglers' lines stand out, the other ranks stay quiet.
STRAGGLER_COLOURS = ("#c62828", "#ef6c00", "#6a1b9a", "#ad1457", "#4e342e")
OTHER_RANK_COLOUR = "#b0bec5"
MARK_COLOUR = "#000000"
# How a heatmap outlines what the diagnosis found: a straggler's whole row, or one stall.
MARK_STYLE = {
    "persistent": {"width": 2, "dash": "solid"},
    "intermittent": {"width": 3, "dash": "solid"},
    "rotating": {"width": 3, "dash": "dot"},
}
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
    Names from a trace or a path in the figure's data are escaped: plotly renders HTML.
    """
    title = fig.layout.title.text
    if title:
        st.markdown(f"**{title}**")
        fig.update_layout(title=None)
    text.plain_figure(fig)
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


def _edges(values: list[float]) -> list[tuple[float, float]]:
    """Each heatmap cell's extent along a numeric axis: halfway to its neighbours."""
    if len(values) == 1:
        return [(values[0] - 0.5, values[0] + 0.5)]
    mids = [(a + b) / 2 for a, b in pairwise(values)]
    lo = [2 * values[0] - mids[0], *mids]
    hi = [*mids, 2 * values[-1] - mids[-1]]
    return list(zip(lo, hi, strict=True))


def mark_cells(fig: go.Figure, matrix: pd.DataFrame, marks: pd.DataFrame) -> go.Figure:
    """Outline on a rank x step heatmap what the diagnosis found (``model.stall_marks``).

    A persistent straggler's whole row; each stall (intermittent or rotating) as its
    cell. Steps are the category axis of ``integer_axes`` (shapes address a category
    by its position), ranks a numeric axis. Marks outside the matrix are skipped.
    """
    if matrix.empty or marks.empty:
        return fig
    ranks = [float(r) for r in matrix.index]
    rows = dict(zip(matrix.index, _edges(ranks), strict=True))
    columns = {step: i for i, step in enumerate(matrix.columns)}
    for rank, step, kind in zip(marks["rank"], marks["step"], marks["kind"], strict=True):
        if rank not in rows:
            continue
        if pd.isna(step):
            x0, x1 = -0.5, len(columns) - 0.5
        elif step in columns:
            x0, x1 = columns[step] - 0.5, columns[step] + 0.5
        else:
            continue
        y0, y1 = rows[rank]
        fig.add_shape(
            type="rect",
            x0=x0,
            x1=x1,
            y0=y0,
            y1=y1,
            xref="x",
            yref="y",
            line={"color": MARK_COLOUR, **MARK_STYLE.get(kind, MARK_STYLE["intermittent"])},
            name=f"{kind}: rank {rank}" + ("" if pd.isna(step) else f", step {step}"),
        )
    return fig


def per_step_lines(
    frame: pd.DataFrame,
    column: str,
    marks: pd.DataFrame,
    highlighted: list[int],
) -> go.Figure:
    """One line per rank over the steps (``model.per_step_frame``), stragglers highlighted.

    Exactly one trace per rank, named "rank N": a stall (``marks`` with a step) is a
    larger diamond on its rank's own line, labelled with its lag, so the chart shows
    where the verdict says the rank stalled. Without stragglers every rank keeps a
    colour of its own.
    """
    fig = go.Figure()
    stalls = marks.dropna(subset=["step"]) if not marks.empty else marks
    for rank in sorted(int(r) for r in frame["rank"].unique()):
        rows = frame[frame["rank"] == rank]
        at = set(stalls["step"][stalls["rank"] == rank].astype(int)) if len(stalls) else set()
        stalled = [int(s) in at for s in rows["step"]]
        line: dict[str, Any] = {"width": 1.5}
        if rank in highlighted:
            colour = STRAGGLER_COLOURS[highlighted.index(rank) % len(STRAGGLER_COLOURS)]
            line = {"width": 4, "color": colour}
        elif highlighted:
            line["color"] = OTHER_RANK_COLOUR
        fig.add_trace(
            go.Scatter(
                x=rows["step"],
                y=rows[column],
                mode="lines+markers",
                name=rank_label(rank),
                line=line,
                marker={
                    "size": [14 if s else 6 for s in stalled],
                    "symbol": ["diamond" if s else "circle" for s in stalled],
                },
                customdata=rows[["step_ms", "caused_wait_ms", "lag_ms"]].to_numpy(),
                hovertemplate=(
                    f"{rank_label(rank)}, step %{{x}}: %{{y:.1f}} ms<br>"
                    "step %{customdata[0]:.1f} ms · others waited %{customdata[1]:.1f} ms"
                    " · arrival lag %{customdata[2]:.1f} ms<extra></extra>"
                ),
            )
        )
    for rank, step, lag, value in zip(
        stalls["rank"], stalls["step"], stalls["lag_ms"], stalls["value"], strict=True
    ):
        if not pd.isna(value):
            fig.add_annotation(
                x=int(step), y=value, text=wording.stall_label(int(rank), lag), showarrow=True
            )
    fig.add_hline(y=0, line_dash="dot", line_color="#9e9e9e")
    steps = sorted(frame["step"].unique())
    if len(steps) <= 30:
        fig.update_xaxes(tickmode="array", tickvals=steps)
    fig.update_xaxes(title="step", tickformat="d")
    fig.update_yaxes(title="ms")
    return fig


WINDOW_COLOUR = "rgba(21, 101, 192, 0.12)"  # a trace window: a light band over its steps
AUTO_WINDOW_COLOUR = "rgba(239, 108, 0, 0.18)"  # one auto-capture took: it says why


def mark_windows(fig: go.Figure, windows: pd.DataFrame, labelled: bool = True) -> go.Figure:
    """Shade each trace window (``model.trace_windows``) over its steps on a step x axis.

    Every band is a shape named by the window's label; ``labelled`` also writes the
    label above it (once per page is enough: the other charts share the steps).
    """
    for first, last, auto, label in zip(
        windows["first_step"], windows["last_step"], windows["auto"], windows["label"], strict=True
    ):
        fig.add_vrect(
            x0=int(first) - 0.5,
            x1=int(last) + 0.5,
            fillcolor=AUTO_WINDOW_COLOUR if auto else WINDOW_COLOUR,
            line_width=1,
            line_color=AUTO_WINDOW_COLOUR if auto else WINDOW_COLOUR,
            layer="above",
            name=label,
            **({"annotation_text": label, "annotation_position": "top left"} if labelled else {}),
        )
    return fig


def column_centres(first_steps: list[int], width: int) -> list[float]:
    """Where a max-pooled column of ``width`` steps sits on a step axis: its middle."""
    return [s + (width - 1) / 2 for s in first_steps]
