"""Drawing helpers shared by the views: one look for every chart and table, a caption under each.

The figures themselves are built in ``figures`` (no streamlit, so the HTML report
and the notebook API, ``rankscope.load``, draw the same ones); this module puts
them on the page (only ``show``, ``table`` and ``rank_table`` import streamlit):
the chart + caption pair, tables without an index, a missing value shown as an
em dash, a long rank table cut with a toggle to see all. The numbers come from
the analysis engine through ``data`` and ``model``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from rankscope.dashboard.app import model, text
from rankscope.dashboard.app.figures import (
    AUTO_WINDOW_COLOUR,
    BAND_COLOUR,
    BAND_LINE_COLOUR,
    DIVERGING,
    FIELD_COLOURS,
    HEAT,
    MARK_COLOUR,
    MARK_STYLE,
    MISSING,
    OTHER_RANK_COLOUR,
    OUTLIER_RANK_COLOUR,
    STRAGGLER_COLOURS,
    TIMELINE_COLOUR_NAMES,
    TIMELINE_COLOURS,
    WINDOW_COLOUR,
    add_band,
    bars_note,
    column_centres,
    heat_height,
    integer_axes,
    many_ranks_note,
    mark_cells,
    mark_windows,
    per_step_lines,
    rank_heatmap,
    rank_lines,
    tidy,
    timeline_colours_caption,
)
from rankscope.dashboard.app.model import rank_label, short_name

__all__ = [
    "AUTO_WINDOW_COLOUR",
    "BAND_COLOUR",
    "BAND_LINE_COLOUR",
    "DIVERGING",
    "FIELD_COLOURS",
    "HEAT",
    "MARK_COLOUR",
    "MARK_STYLE",
    "MISSING",
    "OTHER_RANK_COLOUR",
    "OUTLIER_RANK_COLOUR",
    "STRAGGLER_COLOURS",
    "TIMELINE_COLOURS",
    "TIMELINE_COLOUR_NAMES",
    "WINDOW_COLOUR",
    "add_band",
    "bars_note",
    "column_centres",
    "heat_height",
    "integer_axes",
    "many_ranks_note",
    "mark_cells",
    "mark_windows",
    "per_step_lines",
    "rank_heatmap",
    "rank_label",
    "rank_lines",
    "short_name",
    "tidy",
    "timeline_colours_caption",
]


def show(fig: go.Figure, caption: str, key: str | None = None) -> None:
    """The chart, then one line saying what to look for.

    A plotly title moves above the chart as text: inside, it collides with the legend.
    Names from a trace or a path in the figure's data are escaped: plotly renders HTML.
    """
    import streamlit as st

    title = fig.layout.title.text
    if title:
        st.markdown(f"**{title}**")
        fig.update_layout(title=None)
    text.plain_figure(fig)
    st.plotly_chart(fig, width="stretch", key=key, config={"displaylogo": False})
    st.caption(caption)


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
    import streamlit as st

    config: dict[str, Any] = dict(column_config or {})
    for column, fmt in (formats or {}).items():
        label = config.get(column)
        if label is None or isinstance(label, str):
            config[column] = st.column_config.NumberColumn(label, format=fmt)
    st.dataframe(df, hide_index=True, placeholder=MISSING, column_config=config, **kwargs)


def rank_table(
    df: pd.DataFrame,
    columns: list[str],
    first: list[int],
    key: str,
    formats: dict[str, str] | None = None,
    column_config: dict[str, Any] | None = None,
    limit: int = model.MAX_TABLE_RANKS,
) -> None:
    """A table of one row per rank (``table``). With more than ``limit`` rows: the
    stragglers and outliers (by ``columns``) first, ``limit`` rows unless the reader
    asks for all of them."""
    import streamlit as st

    if len(df) <= limit:
        table(df, formats, column_config)
        return
    everything = st.toggle(f"All {len(df)} ranks", value=False, key=key)
    shown = model.limit_rank_rows(df, columns, first, len(df) if everything else limit)
    table(shown, formats, column_config)
    if not everything:
        st.caption(many_ranks_note(len(shown), len(df)).strip())
