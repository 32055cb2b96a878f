"""What every view model shares: how a rank is named and how a report number reads.

``rank_label(7)`` is "rank 7" and ``rank_of`` reads it back; ``short_name`` cuts a
long kernel name; ``num`` turns a report's None (not measured) into NaN for a
DataFrame, and ``finite_mean`` averages what was measured.
"""

from __future__ import annotations

import numpy as np


def rank_label(rank: int) -> str:
    return f"rank {rank}"


def rank_of(label: str | int) -> int:
    """The rank of a label from ``rank_label`` ("rank 7" -> 7), or of a rank itself."""
    return label if isinstance(label, int | np.integer) else int(str(label).split()[-1])


def short_name(name: str, limit: int = 70) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def num(x: float | None) -> float:
    """A report number for a DataFrame: None (not measured) as NaN."""
    return float("nan") if x is None else float(x)


def finite_mean(values: list[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")
