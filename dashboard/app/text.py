"""Strings from a trace or a path, shown as plain text: never markup.

Streamlit renders markdown in ``st.markdown``, captions, titles, alerts and
button labels, and plotly renders a subset of HTML (``<a href>``, ``<b>``,
``<br>``) in labels, tick labels and hover text. A kernel named
``<a href="http://x">k</a>`` or a run folder named ``[x](http://y)`` must read
as those characters, not as a link. ``md(s)`` escapes a string for markdown,
``html(s)`` for plotly, ``plain_figure(fig)`` escapes every string of data in a
figure (its traces' x, y, text, hover text, names, labels and custom data, and
its axes' tick texts); the views' own markup (hover templates, titles) is left
as it is.
"""

from __future__ import annotations

import html as html_mod
import re
from typing import Any

import numpy as np
import plotly.graph_objects as go

# CommonMark lets a backslash escape any ASCII punctuation; these are the ones that
# start markup in Streamlit's markdown (links, code, emphasis, HTML, LaTeX, :colour[]
# and :icon: directives, tables, headings, lists).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&])")
_TRACE_STRINGS = ("x", "y", "text", "hovertext", "name", "labels", "customdata", "ids")


def md(s: object) -> str:
    """``s`` escaped for Streamlit markdown: it renders as exactly these characters."""
    return _MD_SPECIAL.sub(r"\\\1", str(s))


def html(s: object) -> str:
    """``s`` escaped for plotly text (which decodes entities and renders tags)."""
    return html_mod.escape(str(s), quote=False)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return html(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OUS":
        return np.array([_plain(v) for v in value.tolist()], dtype=object).reshape(value.shape)
    return value


def plain_figure(fig: go.Figure) -> go.Figure:
    """Every data string in ``fig`` escaped for plotly, in place; returns ``fig``."""
    for trace in fig.data:
        for prop in _TRACE_STRINGS:
            if prop in trace and trace[prop] is not None:
                trace[prop] = _plain(trace[prop])
    for axis in fig.layout:
        if (axis.startswith("xaxis") or axis.startswith("yaxis")) and fig.layout[axis].ticktext:
            fig.layout[axis].ticktext = _plain(fig.layout[axis].ticktext)
    return fig
