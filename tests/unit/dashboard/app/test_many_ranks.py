"""``model`` and ``charts`` at many ranks: which ranks are drawn one by one, what sums up the rest.

Hand-made frames of 100 ranks where rank 57 is the straggler and rank 3 an outlier:
whatever is cut, the straggler comes first and the outlier next; up to the
thresholds every rank is drawn by number, as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankscope.dashboard.app import charts, model

N = 100
STEPS = [10, 11, 12, 13]


def _per_step(n: int = N) -> pd.DataFrame:
    rows = [
        {
            "rank": rank,
            "step": step,
            "step_ms": 30.0,
            "excess_ms": 50.0 if rank == 57 else (9.0 if rank == 3 else float(rank % 3)),
            "caused_wait_ms": 0.0,
            "lag_ms": 0.0,
        }
        for rank in range(n)
        for step in STEPS
    ]
    return pd.DataFrame(rows)


def _marks(*rows: tuple[int, int | None, float | None, str, float | None]) -> pd.DataFrame:
    marks = pd.DataFrame(rows, columns=model.MARK_COLUMNS)
    return marks.astype({"rank": "int64", "step": "Int64", "lag_ms": float, "value": float})


def test_outlier_order_stragglers_then_furthest_from_the_median() -> None:
    values = pd.DataFrame({"ms": [1.0, 1.0, 9.0, 1.0, -4.0, np.nan]}, index=[0, 1, 2, 3, 4, 5])
    assert model.outlier_order(values, [3]) == [3, 2, 4, 0, 1, 5]
    assert model.shown_ranks(values, [3], 6) == [0, 1, 2, 3, 4, 5]  # within the limit: by rank
    assert model.shown_ranks(values, [3], 2) == [3, 2]


def test_limit_matrix_keeps_small_matrices_and_cuts_large_ones() -> None:
    matrix = _per_step().pivot_table(index="rank", columns="step", values="excess_ms")
    assert model.limit_matrix(matrix.iloc[:64], [57]).equals(matrix.iloc[:64])
    assert list(model.limit_matrix(matrix.iloc[:64], []).index) == list(range(64))
    cut = model.limit_matrix(matrix, [57], 10)
    assert len(cut) == 10 and list(cut.index[:2]) == [57, 3]


def test_limit_rank_bars_top_k_and_one_bar_for_the_rest() -> None:
    long = pd.DataFrame(
        [
            {"rank": model.rank_label(r), "part": p, "ms": v}
            for r in range(N)
            for p, v in (("a", 57.0 if r == 57 else 1.0), ("b", 2.0))
        ]
    )
    bars, total = model.limit_rank_bars(long, "ms", "part", [57], limit=5)
    assert total == N
    labels = list(dict.fromkeys(bars["rank"]))
    assert labels[0] == "rank 57" and len(labels) == 6
    assert labels[-1] == "other 95 ranks (median)"
    rest = bars[bars["rank"] == labels[-1]].set_index("part")["ms"]
    assert rest.to_dict() == {"a": 1.0, "b": 2.0}
    assert model.drawn_ranks(bars) == 5
    small, total = model.limit_rank_bars(
        long[long["rank"].isin(["rank 0", "rank 1"])], "ms", "part", []
    )
    assert total == 2 and len(small) == 4 and model.drawn_ranks(small) == 2


def test_limit_rank_bars_total_for_counts() -> None:
    long = pd.DataFrame({"rank": [model.rank_label(r) for r in range(40)], "n": [1] * 40})
    bars, _ = model.limit_rank_bars(long, "n", None, [], limit=32, how="total")
    assert bars["rank"].iloc[-1] == "other 8 ranks (total)" and bars["n"].iloc[-1] == 8


def test_limit_rank_boxes_pools_the_others() -> None:
    steps = _per_step().assign(rank=lambda d: d["rank"].map(model.rank_label))
    boxes, total = model.limit_rank_boxes(steps, "excess_ms", [57], limit=4)
    assert total == N and model.drawn_ranks(boxes) == 4
    assert list(dict.fromkeys(boxes["rank"]))[:2] == ["rank 57", "rank 3"]
    assert (boxes["rank"] == "other 96 ranks (all steps)").sum() == 96 * len(STEPS)


def test_limit_rank_rows_outliers_first() -> None:
    df = pd.DataFrame({"rank": range(N), "busy": [50.0 if r == 57 else 8.0 for r in range(N)]})
    cut = model.limit_rank_rows(df, ["busy"], [], limit=3)
    assert cut["rank"].iloc[0] == 57 and len(cut) == 3
    assert model.limit_rank_rows(df, ["busy"], [], limit=N) is df


def test_band_quantiles_over_ranks() -> None:
    band = model.band(_per_step(), "step", "excess_ms")
    assert list(band["step"]) == STEPS
    assert band["median"].iloc[0] == pytest.approx(1.0)
    assert (band["p10"] <= band["median"]).all() and (band["median"] <= band["p90"]).all()
    binned = model.band(pd.DataFrame({"t": np.linspace(0, 1, 1000), "v": 1.0}), "t", "v", bins=10)
    assert len(binned) == 10


def test_last_to_arrive_names_a_few_ranks() -> None:
    counts = {r: 1 for r in range(20)} | {7: 30}
    text = model._last_to_arrive(counts)
    assert text.startswith("rank 7: 30, rank 0: 1")
    assert text.endswith("… and 12 more ranks: 12")
    assert model._last_to_arrive({1: 22, 3: 2}) == "rank 1: 22, rank 3: 2"


def test_per_step_lines_many_ranks_band_and_named_straggler() -> None:
    fig = charts.per_step_lines(
        _per_step(), "excess_ms", _marks((57, None, None, "persistent", None)), [57]
    )
    names = [t.name for t in fig.data]
    assert len(fig.data) <= 2 + 1 + model.MAX_EXTRA_LINES + 1
    assert f"median of {N} ranks" in names and f"p10–p90 of {N} ranks" in names
    straggler = fig.data[names.index("rank 57")]
    assert straggler.line.width == 4 and straggler.line.color == charts.STRAGGLER_COLOURS[0]
    assert "rank 3" in names  # the outlier, drawn as a line of its own


def test_per_step_lines_many_ranks_stall_of_a_rank_without_a_line() -> None:
    marks = _marks((20, 11, 300.0, "rotating", 290.0))
    fig = charts.per_step_lines(_per_step(), "excess_ms", marks, [])
    (stalls,) = [t for t in fig.data if t.name == "stalls of other ranks"]
    assert list(stalls.x) == [11] and list(stalls.y) == [290.0]
    (note,) = fig.layout.annotations
    assert note.text == "rank 20: ~300 ms"


def test_rank_heatmap_many_ranks_straggler_on_top_and_marked() -> None:
    matrix = _per_step().pivot_table(index="rank", columns="step", values="excess_ms")
    marks = _marks((57, None, None, "persistent", None))
    fig, shown = charts.rank_heatmap(matrix, marks, [57], limit=64, text_auto=".0f")
    assert shown == 64
    assert list(fig.layout.yaxis.ticktext[:2]) == ["rank 57", "rank 3"]
    assert len(fig.data[0].z) == 64
    (rect,) = fig.layout.shapes
    assert (rect.y0, rect.y1) == (-0.5, 0.5)  # the straggler's row, drawn first
    assert "Showing 64 of 100 ranks" in charts.many_ranks_note(shown, len(matrix))


def test_rank_heatmap_few_ranks_as_before() -> None:
    matrix = _per_step(4).pivot_table(index="rank", columns="step", values="excess_ms")
    fig, shown = charts.rank_heatmap(matrix, None, [], text_auto=".0f")
    assert shown == 4
    assert list(fig.layout.yaxis.tickvals) == [0, 1, 2, 3]
    assert list(fig.layout.yaxis.ticktext) == ["rank 0", "rank 1", "rank 2", "rank 3"]
    assert fig.data[0].texttemplate == "%{z:.0f}"
    assert charts.many_ranks_note(4, 4) == ""


def test_rank_lines_many_ranks_bounded_legend() -> None:
    long = pd.DataFrame(
        [
            {
                "rank": model.rank_label(r),
                "t_s": t / 10,
                "field": f,
                "value": 90.0 + (r == 57) - 5 * (r == 3),
            }
            for r in range(N)
            for t in range(20)
            for f in ("util", "mem")
        ]
    )
    fig, n = charts.rank_lines(long, "t_s", [57], bins=10)
    assert n == N
    names = [t.name for t in fig.data if t.showlegend is not False]
    # a median per field, then a legend entry per rank drawn (the straggler, one outlier)
    assert names == ["util: median of 100 ranks", "mem: median of 100 ranks", "rank 57", "rank 3"]
    assert len(fig.data) == 2 * 3 + 2 * 2
    few, n = charts.rank_lines(long[long["rank"].isin(["rank 0", "rank 1"])], "t_s", [])
    assert n == 2 and len(few.data) == 4  # px.line: a line per rank and field, as before
