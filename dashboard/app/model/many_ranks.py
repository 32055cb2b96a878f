"""Many ranks: which ranks a chart draws one by one, and what summarises the rest.

Up to these many ranks every chart draws every rank, as it always did; beyond,
the stragglers come first, then the ranks furthest from the others (the outliers
a reader looks for), and the quiet majority is summarised (a median and a
p10-p90 band, one "the other N ranks" bar, a table cut with a way to see all).
Every function takes and returns DataFrames (``rank`` a number or a
``labels.rank_label``); nothing here measures anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankscope.dashboard.app.model.basics import rank_of

MAX_LINE_RANKS = 16  # lines on a chart with one line per rank (its legend names each)
MAX_BAR_RANKS = 32  # bars (or boxes) on a chart with one bar per rank
MAX_TABLE_RANKS = 64  # rows of a table or heatmap with one row per rank
MAX_EXTRA_LINES = 3  # beyond the stragglers: the outlying ranks drawn as lines
BAND_BINS = 200  # points of a median / p10-p90 band over time


def outlier_order(values: pd.DataFrame, first: list[int] | None = None) -> list[int]:
    """Every rank of ``values`` (index: rank, columns: numbers), the outliers first.

    The ranks in ``first`` (the stragglers, worst first) lead; then the others by
    how far they are from the median rank: the largest distance over the columns
    from that column's median, then the summed distance, then the rank. A missing
    value is no distance.
    """
    first = [int(r) for r in first or []]
    ranks = [int(r) for r in values.index]
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if x.ndim == 1:
        x = x[:, None]
    if x.size:
        with np.errstate(all="ignore"):
            median = np.nanmedian(x, axis=0) if len(x) else np.zeros(x.shape[1])
        dist = np.nan_to_num(np.abs(x - median), nan=0.0)
        peak, total = dist.max(axis=1, initial=0.0), dist.sum(axis=1)
    else:
        peak = total = np.zeros(len(ranks))
    order = sorted(range(len(ranks)), key=lambda i: (-peak[i], -total[i], ranks[i]))
    lead = [r for r in dict.fromkeys(first) if r in set(ranks)]
    return lead + [ranks[i] for i in order if ranks[i] not in lead]


def shown_ranks(values: pd.DataFrame, first: list[int] | None, limit: int) -> list[int]:
    """The ranks a per-rank chart draws: all, by number, up to ``limit``; beyond,
    ``limit`` of them in ``outlier_order`` (stragglers first)."""
    if len(values) <= limit:
        return sorted(int(r) for r in values.index)
    return outlier_order(values, first)[:limit]


def limit_matrix(
    matrix: pd.DataFrame, first: list[int] | None, limit: int = MAX_TABLE_RANKS
) -> pd.DataFrame:
    """A rank x something matrix cut to ``limit`` rows, outliers first (``shown_ranks``);
    unchanged (rows by rank) when it has no more rows than that."""
    if len(matrix) <= limit:
        return matrix
    return matrix.loc[shown_ranks(matrix, first, limit)]


def limit_rank_rows(
    df: pd.DataFrame, columns: list[str], first: list[int] | None, limit: int = MAX_TABLE_RANKS
) -> pd.DataFrame:
    """A table of one row per rank (column ``rank``), outliers by ``columns`` first and cut
    to ``limit`` rows; unchanged when it has no more rows than that."""
    if len(df) <= limit:
        return df
    values = df.set_index(df["rank"].map(rank_of))[columns]
    keep = shown_ranks(values, first, limit)
    ranks = df["rank"].map(rank_of)
    return df.set_index(ranks, drop=False).loc[keep].reset_index(drop=True)


def other_ranks_label(n: int, how: str) -> str:
    """The bar that stands for the ranks not drawn one by one: "other 480 ranks (median)"."""
    return f"other {n} ranks ({how})"


def drawn_ranks(long: pd.DataFrame) -> int:
    """How many ranks a cut frame (``limit_rank_bars``, ``limit_rank_boxes``) draws one by one."""
    return sum(1 for r in dict.fromkeys(long["rank"]) if str(r).startswith("rank "))


def limit_rank_bars(
    long: pd.DataFrame,
    value: str,
    part: str | None,
    first: list[int] | None,
    limit: int = MAX_BAR_RANKS,
    how: str = "median",
) -> tuple[pd.DataFrame, int]:
    """A per-rank bar chart's long frame (``rank`` a label, optional ``part``, ``value``)
    cut to ``limit`` ranks, outliers first, and one more bar for the rest.

    The rest's bar holds, per part, the ``how`` ("median" or "total") of the other
    ranks' values. Returns (frame, ranks in the input); the frame is the input
    itself with no more ranks than ``limit``.
    """
    labels = list(dict.fromkeys(long["rank"]))
    if len(labels) <= limit:
        return long, len(labels)
    key = long["rank"].map(rank_of)
    wide = (
        long.assign(rank=key).pivot_table(index="rank", columns=part, values=value, aggfunc="sum")
        if part
        else long.assign(rank=key).groupby("rank")[[value]].sum()
    )
    keep = shown_ranks(wide, first, limit)
    shown = long[key.isin(keep)].copy()
    order = {r: i for i, r in enumerate(keep)}
    shown = shown.iloc[np.argsort(shown["rank"].map(rank_of).map(order).to_numpy(), kind="stable")]
    rest = wide.drop(index=keep)
    agg = rest.median() if how == "median" else rest.sum()
    label = other_ranks_label(len(rest), how)
    if part:
        extra = pd.DataFrame({"rank": label, part: agg.index, value: agg.to_numpy()})
    else:
        extra = pd.DataFrame({"rank": [label], value: [float(agg[value])]})
    return pd.concat([shown, extra], ignore_index=True), len(labels)


def band(long: pd.DataFrame, x: str, value: str, bins: int | None = None) -> pd.DataFrame:
    """x, p10, median, p90 of ``value`` over the ranks at each ``x`` (in ``bins`` bins
    of x when given: samples of different ranks never share a timestamp)."""
    df = long[[x, value]].dropna()
    if df.empty:
        return pd.DataFrame(columns=[x, "p10", "median", "p90"])
    key = df[x]
    if bins:
        lo, hi = float(key.min()), float(key.max())
        width = max((hi - lo) / bins, 1e-12)
        key = lo + ((key - lo) // width).clip(upper=bins - 1) * width + width / 2
    groups = df[value].groupby(key.to_numpy())
    out = pd.DataFrame(
        {
            "p10": groups.quantile(0.1),
            "median": groups.median(),
            "p90": groups.quantile(0.9),
        }
    )
    out.index.name = x
    return out.reset_index()


def limit_rank_boxes(
    steps: pd.DataFrame, column: str, first: list[int] | None, limit: int = MAX_BAR_RANKS
) -> tuple[pd.DataFrame, int]:
    """``steps_by_rank`` cut to ``limit`` ranks for one box each (outliers by their median
    ``column`` first), the other ranks' steps pooled into one more box; (frame, ranks)."""
    labels = list(dict.fromkeys(steps["rank"]))
    if len(labels) <= limit:
        return steps, len(labels)
    key = steps["rank"].map(rank_of)
    medians = steps.assign(rank=key).groupby("rank")[[column]].median()
    keep = shown_ranks(medians, first, limit)
    order = {r: i for i, r in enumerate(keep)}
    inside = key.isin(keep)
    shown = steps[inside].iloc[np.argsort(key[inside].map(order).to_numpy(), kind="stable")]
    rest = steps[~inside].assign(rank=other_ranks_label(len(labels) - len(keep), "all steps"))
    return pd.concat([shown, rest], ignore_index=True), len(labels)
