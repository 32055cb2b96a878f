"""``app.charts``: where the per-step chart and the heatmaps put what the diagnosis found.

Drawn from hand-made tables (no server): a stall is a marker on its own rank's
line at its step, a mark outlines exactly its cell, a persistent straggler its row.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import pytest

from rankscope.dashboard.app import charts

STEPS = [10, 11, 12]


def _per_step() -> pd.DataFrame:
    rows = [
        {
            "rank": rank,
            "step": step,
            "step_ms": 30.0,
            "excess_ms": 300.0 if (rank, step) == (2, 11) else 0.0,
            "caused_wait_ms": 0.0,
            "lag_ms": 0.0,
        }
        for rank in (0, 1, 2)
        for step in STEPS
    ]
    return pd.DataFrame(rows)


def _marks(*rows: tuple[int, int | None, float | None, str, float | None]) -> pd.DataFrame:
    marks = pd.DataFrame(rows, columns=["rank", "step", "lag_ms", "kind", "value"])
    return marks.astype({"rank": "int64", "step": "Int64", "lag_ms": float, "value": float})


def test_per_step_lines_one_trace_per_rank_the_stall_on_its_line() -> None:
    fig = charts.per_step_lines(
        _per_step(), "excess_ms", _marks((2, 11, 302.0, "intermittent", 300.0)), [2]
    )
    assert [t.name for t in fig.data] == ["rank 0", "rank 1", "rank 2"]
    straggler = fig.data[2]
    assert straggler.line.width == 4 and straggler.line.color == charts.STRAGGLER_COLOURS[0]
    assert {t.line.color for t in fig.data[:2]} == {charts.OTHER_RANK_COLOUR}
    assert list(straggler.marker.symbol) == ["circle", "diamond", "circle"]
    assert list(straggler.y) == [0.0, 300.0, 0.0]
    (note,) = fig.layout.annotations
    assert (note.x, note.y, note.text) == (11, 300.0, "rank 2: ~302 ms")
    assert list(fig.layout.xaxis.tickvals) == STEPS


def test_per_step_lines_without_a_straggler_keep_every_rank_distinct() -> None:
    fig = charts.per_step_lines(_per_step(), "excess_ms", _marks(), [])
    assert len(fig.data) == 3
    assert all(t.line.color is None and t.line.width == 1.5 for t in fig.data)
    assert not fig.layout.annotations


def _heatmap(ranks: list[int]) -> tuple[pd.DataFrame, go.Figure]:
    matrix = pd.DataFrame(0.0, index=ranks, columns=STEPS)
    fig = px.imshow(matrix)
    charts.integer_axes(fig, matrix)
    return matrix, fig


def test_mark_cells_outlines_the_stall_cell_and_the_straggler_row() -> None:
    matrix, fig = _heatmap([0, 1, 2])
    charts.mark_cells(
        fig,
        matrix,
        _marks(
            (2, 11, 302.0, "intermittent", 300.0),
            (0, None, None, "persistent", None),
            (1, 99, 50.0, "rotating", None),  # a step outside the matrix: skipped
            (7, 10, 50.0, "rotating", None),  # a rank not shown: skipped
        ),
    )
    cell, row = fig.layout.shapes
    # Steps are categories: step 11 is the second column, its cell spans 0.5..1.5.
    assert (cell.x0, cell.x1, cell.y0, cell.y1) == (0.5, 1.5, 1.5, 2.5)
    assert cell.name == "intermittent: rank 2, step 11"
    assert (row.x0, row.x1, row.y0, row.y1) == (-0.5, 2.5, -0.5, 0.5)
    assert row.name == "persistent: rank 0"


@pytest.mark.parametrize(("rank", "edges"), [(0, (-0.5, 0.5)), (1, (0.5, 2.0)), (3, (2.0, 4.0))])
def test_mark_cells_follows_uneven_rank_rows(rank: int, edges: tuple[float, float]) -> None:
    """Ranks 0, 1, 3 chosen in the sidebar: each row reaches halfway to its neighbours."""
    matrix, fig = _heatmap([0, 1, 3])
    charts.mark_cells(fig, matrix, _marks((rank, 10, 1.0, "intermittent", 1.0)))
    (shape,) = fig.layout.shapes
    assert (shape.y0, shape.y1) == edges


def test_the_timeline_caption_names_only_colours_it_draws() -> None:
    """A CPU step with no host-only time: the caption says nothing of blue."""
    from rankscope.dashboard.app.charts import timeline_colours_caption

    cpu = timeline_colours_caption({"compute", "comm_wait", "data", "idle"})
    assert "blue" not in cpu and "orange (data loading)" in cpu and "green (compute)" in cpu
    assert "blue (host only)" in timeline_colours_caption({"comm_wait", "host"})
    assert "nothing is pink" in timeline_colours_caption({"compute"})
