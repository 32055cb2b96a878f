"""Plotly figure builders shared by the dashboard and the HTML report: no streamlit here.

Only presentation lives here (colours, layout, integer axes for ranks and steps,
where a stall mark or a trace window goes on a chart, how many ranks a chart draws
past ``model.MAX_LINE_RANKS``); every function takes the tables ``model`` shapes
and returns a ``go.Figure``. ``charts`` puts them on a Streamlit page;
``rankscope.dashboard.render_html`` writes them into one self-contained file.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.timeline import CATEGORY_LABELS
from rankscope.dashboard.app import model
from rankscope.dashboard.app.model import PART_COLOURS, rank_label

TIMELINE_COLOURS = {
    "compute": PART_COLOURS["compute"],
    "comm_wait": "#e57373",
    "comm": PART_COLOURS["exposed communication"],
    "memcpy": PART_COLOURS["memcpy"],
    "data": PART_COLOURS["data loading (exposed)"],
    "host": PART_COLOURS["host only"],
    "idle": "#e0e0e0",
}
# What a caption calls each timeline colour, so it names only colours the legend shows.
TIMELINE_COLOUR_NAMES = {
    "compute": "green",
    "comm_wait": "pink",
    "comm": "red",
    "memcpy": "purple",
    "data": "orange",
    "host": "blue",
    "idle": "grey",
}


def timeline_colours_caption(drawn: set[str]) -> str:
    """How to read the colours, naming only those drawn (and so in the legend)."""
    names = TIMELINE_COLOUR_NAMES
    busy = [f"{names[c]} ({CATEGORY_LABELS[c]})" for c in ("data", "host", "compute") if c in drawn]
    if "comm_wait" not in drawn:
        return "No rank waited inside a collective in this step (nothing is pink)."
    late = f", busy with {' or '.join(busy)} just before," if busy else ""
    return (
        f"Pink ({CATEGORY_LABELS['comm_wait']}) is a rank waiting inside a collective for the"
        f" last one to arrive; the rank without pink{late} is the late arrival."
    )


HEAT = "YlOrRd"
DIVERGING = "RdBu_r"  # later than the others' median: red; earlier: blue
# The per-step chart: the stragglers' lines stand out, the other ranks stay quiet.
STRAGGLER_COLOURS = ("#c62828", "#ef6c00", "#6a1b9a", "#ad1457", "#4e342e")
OTHER_RANK_COLOUR = "#b0bec5"
OUTLIER_RANK_COLOUR = "#37474f"  # many ranks: an outlying rank drawn as a line of its own
BAND_COLOUR = "rgba(96, 125, 139, 0.25)"  # many ranks: the p10-p90 band over all of them
BAND_LINE_COLOUR = "#607d8b"
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


def _rank_trace(
    rows: pd.DataFrame, rank: int, column: str, at: set[int], line: dict[str, Any]
) -> go.Scatter:
    """One rank's per-step line, its stalls (steps in ``at``) as larger diamonds."""
    stalled = [int(s) in at for s in rows["step"]]
    return go.Scatter(
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


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def add_band(
    fig: go.Figure,
    band: pd.DataFrame,
    x: str,
    n: int,
    name: str = "",
    colour: str | None = None,
    band_legend: bool = True,
) -> None:
    """A p10-p90 band and the median line over ``n`` ranks (``model.band``): two legend
    entries, or the median's alone (``band_legend`` false: the caption says what the band is)."""
    prefix = f"{name}: " if name else ""
    line_colour = colour or BAND_LINE_COLOUR
    fill = _rgba(colour, 0.2) if colour else BAND_COLOUR
    fig.add_trace(
        go.Scatter(
            x=band[x],
            y=band["p90"],
            mode="lines",
            line={"width": 0, "color": line_colour},
            showlegend=False,
            hoverinfo="skip",
            legendgroup=f"band{name}",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=band[x],
            y=band["p10"],
            mode="lines",
            line={"width": 0, "color": line_colour},
            fill="tonexty",
            fillcolor=fill,
            name=f"{prefix}p10–p90 of {n} ranks",
            hoverinfo="skip",
            legendgroup=f"band{name}",
            showlegend=band_legend,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=band[x],
            y=band["median"],
            mode="lines",
            line={"width": 2, "color": line_colour},
            name=f"{prefix}median of {n} ranks",
            legendgroup=f"band{name}",
            hovertemplate=f"{prefix}median, %{{x}}: %{{y:.1f}}<extra></extra>",
        )
    )


def per_step_lines(
    frame: pd.DataFrame,
    column: str,
    marks: pd.DataFrame,
    highlighted: list[int],
    max_lines: int = model.MAX_LINE_RANKS,
) -> go.Figure:
    """One line per rank over the steps (``model.per_step_frame``), stragglers highlighted.

    Up to ``max_lines`` ranks, exactly one trace per rank, named "rank N": a stall
    (``marks`` with a step) is a larger diamond on its rank's own line, labelled with
    its lag, so the chart shows where the verdict says the rank stalled. Without
    stragglers every rank keeps a colour of its own.

    With more ranks: the median and the p10-p90 band over all of them, then the
    stragglers (thick, as above) and the ``MAX_EXTRA_LINES`` ranks furthest from the
    median as lines of their own; a stall of a rank without a line is a diamond of
    one "stalls" trace. The legend stays short at any number of ranks.
    """
    fig = go.Figure()
    stalls = marks.dropna(subset=["step"]) if not marks.empty else marks
    ranks = sorted(int(r) for r in frame["rank"].unique())

    def stalled_at(rank: int) -> set[int]:
        return set(stalls["step"][stalls["rank"] == rank].astype(int)) if len(stalls) else set()

    if len(ranks) <= max_lines:
        for rank in ranks:
            line: dict[str, Any] = {"width": 1.5}
            if rank in highlighted:
                colour = STRAGGLER_COLOURS[highlighted.index(rank) % len(STRAGGLER_COLOURS)]
                line = {"width": 4, "color": colour}
            elif highlighted:
                line["color"] = OTHER_RANK_COLOUR
            rows = frame[frame["rank"] == rank]
            fig.add_trace(_rank_trace(rows, rank, column, stalled_at(rank), line))
    else:
        add_band(fig, model.band(frame, "step", column), "step", len(ranks))
        stragglers = [r for r in highlighted if r in set(ranks)][: len(STRAGGLER_COLOURS)]
        matrix = frame.pivot_table(index="rank", columns="step", values=column)
        extra = [r for r in model.outlier_order(matrix) if r not in stragglers]
        extra = extra[: model.MAX_EXTRA_LINES]
        for i, rank in enumerate(stragglers + extra):
            line = (
                {"width": 4, "color": STRAGGLER_COLOURS[i]}
                if rank in stragglers
                else {"width": 1.5, "color": OUTLIER_RANK_COLOUR, "dash": "dot"}
            )
            rows = frame[frame["rank"] == rank]
            fig.add_trace(_rank_trace(rows, rank, column, stalled_at(rank), line))
        lone = stalls[~stalls["rank"].isin(stragglers + extra)] if len(stalls) else stalls
        if len(lone):
            fig.add_trace(
                go.Scatter(
                    x=lone["step"].astype(int),
                    y=lone["value"],
                    mode="markers",
                    name="stalls of other ranks",
                    marker={"size": 14, "symbol": "diamond", "color": MARK_COLOUR},
                    text=[rank_label(int(r)) for r in lone["rank"]],
                    hovertemplate="%{text}, step %{x}: %{y:.1f} ms<extra></extra>",
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


# --- many ranks: heatmaps cut to their outlying rows, tables cut with a way to see all ---

FIELD_COLOURS = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f")


def many_ranks_note(shown: int, total: int) -> str:
    """What a chart or table left out to stay readable ("" when it shows every rank)."""
    if shown >= total:
        return ""
    return (
        f" Showing {shown} of {total} ranks: the stragglers first, then the ranks furthest"
        " from the median; pick ranks in the sidebar to see others."
    )


def bars_note(bars: pd.DataFrame, total: int) -> str:
    """The note under a per-rank bar chart cut by ``model.limit_rank_bars`` ("" when uncut)."""
    shown = model.drawn_ranks(bars)
    if shown >= total:
        return ""
    return many_ranks_note(shown, total) + " The last bar stands for all the others."


def heat_height(rows: int, height: int) -> int:
    """A rank heatmap's height: ``height`` up to 16 rows, then about 12 px a row."""
    return height if rows <= 16 else min(1000, max(height, 100 + 12 * rows))


def rank_heatmap(
    matrix: pd.DataFrame,
    marks: pd.DataFrame | None,
    first: list[int],
    limit: int = model.MAX_TABLE_RANKS,
    text_auto: bool | str = False,
    x_title: str | None = None,
    **imshow: Any,
) -> tuple[go.Figure, int]:
    """A rank x step (or instance) heatmap, marks outlined; (figure, rows drawn).

    Up to ``limit`` rows: every rank by number, as ``px.imshow`` + ``integer_axes``
    + ``mark_cells`` draw it. Beyond: ``limit`` rows in ``model.outlier_order``
    (stragglers on top), named on the axis, without numbers in the cells (the hover
    has them). Cell text is also dropped above 32 rows: it no longer fits.
    """
    marks = marks if marks is not None else pd.DataFrame(columns=model.MARK_COLUMNS)
    if len(matrix) <= limit:
        fig = px.imshow(matrix, text_auto=text_auto if len(matrix) <= 32 else False, **imshow)
        integer_axes(fig, matrix, x_title)
        return mark_cells(fig, matrix, marks), len(matrix)
    shown = model.limit_matrix(matrix, first, limit)
    ranks = [int(r) for r in shown.index]
    at = {r: i for i, r in enumerate(ranks)}
    rows = shown.reset_index(drop=True)  # row i is drawn i-th from the top
    fig = px.imshow(rows, text_auto=False, **imshow)
    fig.update_yaxes(
        tickmode="array",
        tickvals=list(range(len(ranks))),
        ticktext=[rank_label(r) for r in ranks],
    )
    fig.update_xaxes(type="category", **({"title": x_title} if x_title else {}))
    fig.update_traces(
        customdata=[[rank_label(r)] * rows.shape[1] for r in ranks],
        hovertemplate="%{customdata}, %{x}: %{z:.1f}<extra></extra>",
    )
    inside = marks[marks["rank"].isin(at)]
    return mark_cells(fig, rows, inside.assign(rank=inside["rank"].map(at))), len(ranks)


def rank_lines(
    long: pd.DataFrame,
    x: str,
    highlighted: list[int],
    max_lines: int = model.MAX_LINE_RANKS,
    bins: int = model.BAND_BINS,
    **line: Any,
) -> tuple[go.Figure, int]:
    """A line per rank (``long``: rank label, ``x``, field label, value); (figure, ranks).

    Up to ``max_lines`` ranks: ``px.line`` coloured by rank (dashed by field when
    there are several). Beyond: per field the median and p10-p90 band over every
    rank (``bins`` bins of ``x``), then the ``highlighted`` ranks (stragglers) and the
    ``MAX_EXTRA_LINES`` ranks whose mean is furthest from the others as lines.
    """
    labels = list(dict.fromkeys(long["rank"]))
    fields = list(dict.fromkeys(long["field"]))
    if len(labels) <= max_lines:
        dash = "field" if len(fields) > 1 else None
        return px.line(long, x=x, y="value", color="rank", line_dash=dash, **line), len(labels)
    fig = go.Figure()
    several = len(fields) > 1
    for i, field in enumerate(fields):
        part = long[long["field"] == field]
        colour = FIELD_COLOURS[i % len(FIELD_COLOURS)] if several else None
        add_band(
            fig,
            model.band(part, x, "value", bins),
            x,
            len(labels),
            field if several else "",
            colour,
            band_legend=not several,
        )
    means = long.assign(rank=long["rank"].map(model.rank_of)).pivot_table(
        index="rank", columns="field", values="value", aggfunc="mean"
    )
    lead = [r for r in highlighted if r in set(means.index)][: len(STRAGGLER_COLOURS)]
    n_extra = 1 if several else model.MAX_EXTRA_LINES  # a line per rank and field
    extra = [r for r in model.outlier_order(means) if r not in lead][:n_extra]
    for k, rank in enumerate(lead + extra):
        rows = long[long["rank"] == rank_label(rank)]
        for j, field in enumerate(fields):
            part = rows[rows["field"] == field]
            # Several fields: a rank's lines take their field's colour, one legend entry
            # per rank; thick and solid for a straggler, thin and dotted for an outlier.
            colour = (
                FIELD_COLOURS[j % len(FIELD_COLOURS)]
                if several
                else STRAGGLER_COLOURS[k]
                if rank in lead
                else OUTLIER_RANK_COLOUR
            )
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part["value"],
                    mode="lines",
                    name=rank_label(rank),
                    legendgroup=rank_label(rank),
                    showlegend=j == 0,
                    hovertemplate=f"{rank_label(rank)}, {field}: %{{y:.1f}}<extra></extra>",
                    line={
                        "width": 3 if rank in lead else 1.2,
                        "color": colour,
                        "dash": "solid" if rank in lead else "dot",
                    },
                )
            )
    if title := line.get("title"):
        fig.update_layout(title=title)
    axis = line.get("labels") or {}
    fig.update_xaxes(title=axis.get(x, x))
    fig.update_yaxes(title=axis.get("value", "value"))
    return fig, len(labels)


# --- the two heatmaps the Imbalance and Whole run pages open with (and the HTML report) ---

CAPTURE_COLOUR = "rgba(120, 120, 120, 0.35)"
CAPTURE_LABEL = "capture"
EXCESS_TITLE = "Extra work before each step's collectives, beyond the other ranks' median (ms)"
WHOLE_RUN_TITLE = "Lateness per rank and step (ms beyond the others' median)"


def excess_heatmap(
    matrix: pd.DataFrame, marks: pd.DataFrame, first: list[int]
) -> tuple[go.Figure, int]:
    """The diagnosis' own evidence (``model.per_step_matrix(report, "excess_ms")``), rank x
    step, what it found outlined (``model.stall_marks``); (figure, rows drawn)."""
    fig, shown = rank_heatmap(
        matrix,
        marks,
        first,
        text_auto=".0f",
        color_continuous_scale=DIVERGING,
        color_continuous_midpoint=0,
        aspect="auto",
        labels={"x": "step", "y": "rank", "color": "ms"},
        title=EXCESS_TITLE,
    )
    return tidy(fig, height=heat_height(shown, 260)), shown


def mark_capture(fig: go.Figure, spans: list[tuple[int, int]], labelled: bool = False) -> None:
    """Shade the steps rankscope's own capture touched (grey, named "capture")."""
    for first, last in spans:
        fig.add_vrect(
            x0=first - 0.5,
            x1=last + 0.5,
            fillcolor=CAPTURE_COLOUR,
            line_width=0,
            layer="above",
            name=CAPTURE_LABEL,
            **(
                {"annotation_text": CAPTURE_LABEL, "annotation_position": "bottom left"}
                if labelled
                else {}
            ),
        )


def whole_run_heatmap(
    heat: pd.DataFrame, width: int, windows: pd.DataFrame, spans: list[tuple[int, int]]
) -> go.Figure:
    """The light layer's lateness per rank and (pooled) step (``model.whole_run_heatmap``),
    trace windows and capture steps shaded."""
    x = column_centres([int(c) for c in heat.columns], width)
    fig = go.Figure(
        go.Heatmap(
            z=heat.to_numpy(),
            x=x,
            y=[rank_label(int(r)) for r in heat.index],
            coloraxis="coloraxis",
            hovertemplate="%{y}, step %{x:.0f}: %{z:.1f} ms<extra></extra>",
        )
    )
    fig.update_layout(
        title=WHOLE_RUN_TITLE,
        coloraxis={"colorscale": DIVERGING, "cmid": 0},
    )
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(title="step", tickformat="d")
    mark_windows(fig, windows)
    mark_capture(fig, spans, labelled=True)
    return tidy(fig, height=max(220, min(900, 60 + 14 * len(heat.index))))
