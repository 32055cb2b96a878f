"""The notebook API: ``rankscope.load(path)`` -> ``RunResults``, a run analysed once.

``load(path, ranks=None, steps=None)`` reads a run as ``rankscope report`` does
(same arguments, same cache, same errors: a ``RankscopeError`` with one line) and
returns a ``RunResults``:

- ``report``: the typed ``Report`` (``rankscope.report/1``: stragglers, findings,
  per-rank rows, ``hang``), the same object the text and JSON reports render;
- DataFrames (pandas; built on first use, then kept):
  ``steps`` (one row per rank and analysed step: the step breakdown in ms, with the
  diagnosis' ``excess_ms``, ``caused_wait_ms`` and ``lag_ms`` where it has them),
  ``step_times`` (the collector's step timer: every recorded step of every rank),
  ``collectives`` (one row per collective instance and rank: wait and transfer),
  ``kernels`` (the top GPU kernels over the analysed steps) and ``telemetry``
  (every NVML/host sample: rank, ``t_s`` since the first sample, ``ts_ns``, fields);
- the dashboard's charts as plotly figures, drawn by ``app.charts`` from the same
  view models (``app.model``), without streamlit: ``step_chart``,
  ``excess_heatmap``, ``telemetry_chart``.

``warnings`` holds the lines ``rankscope report`` would print on stderr.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from rankscope.dashboard.analysis.analyse import Analysis, analyse
from rankscope.dashboard.analysis.digest import store_digest
from rankscope.dashboard.analysis.report import Report, build_report
from rankscope.dashboard.ingest.run import load_run

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["RunResults", "load"]


def load(path: str | Path, ranks: list[int] | None = None, steps: str | None = None) -> RunResults:
    """Load and analyse the run at ``path`` (a run directory, a trace folder or file).

    ``ranks``: only these ranks; ``steps``: only these steps (``"A:B"``, ``"A:"``,
    ``":B"`` or ``"A"``), as ``rankscope report --ranks/--steps``.
    """
    run = load_run(path, ranks=ranks, digest=store_digest)
    return RunResults(analyse(run, steps))


class RunResults:
    """One analysed run (see the module docstring)."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.report: Report = build_report(analysis)
        self.warnings: list[str] = list(analysis.warnings)

    def __repr__(self) -> str:
        r = self.report
        verdict = (
            f"straggler rank {r.stragglers[0].rank} ({r.stragglers[0].cause})"
            if r.stragglers
            else "no straggler"
        )
        return (
            f"<rankscope run {r.run.path!r}: {len(r.run.ranks)} rank(s), steps"
            f" {r.run.steps[:1] + r.run.steps[-1:] if r.run.steps else []}, {verdict}>"
        )

    # ---------------------------------------------------------------- tables

    @cached_property
    def steps(self) -> pd.DataFrame:
        from rankscope.dashboard.app import model

        df = model.steps_frame(self.analysis.breakdown)
        per_step = model.per_step_frame(self.report)
        if not per_step.empty and not df.empty:
            df = df.merge(
                per_step.drop(columns=["step_ms"]), on=["rank", "step"], how="left", sort=True
            )
        return df.sort_values(["rank", "step"], ignore_index=True) if not df.empty else df

    @cached_property
    def step_times(self) -> pd.DataFrame:
        import pandas as pd

        frames = []
        for rank, rd in sorted(self.analysis.run.ranks.items()):
            marks = rd.step_marks
            if not len(marks) or "start_ns" not in marks:
                continue
            df = marks.to_pandas()
            df.insert(0, "rank", rank)
            df["step_ms"] = (df["end_ns"] - df["start_ns"]) / 1e6
            if "data_ns" in df:
                df["data_ms"] = df["data_ns"] / 1e6
            frames.append(df)
        columns = ["rank", "step", "start_ns", "end_ns", "step_ms"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    @cached_property
    def collectives(self) -> pd.DataFrame:
        df = self.analysis.collectives.to_pandas()
        for col in ("name", "pg"):
            if col in df:
                df[col] = df[col].astype(str)
        return df

    @cached_property
    def kernels(self) -> pd.DataFrame:
        import dataclasses

        import pandas as pd

        from rankscope.dashboard.analysis.results import KernelSummary

        rows = [dataclasses.asdict(k) for k in self.analysis.kernels]
        columns = [f.name for f in dataclasses.fields(KernelSummary)]
        return pd.DataFrame(rows, columns=columns)

    @cached_property
    def telemetry(self) -> pd.DataFrame:
        import pandas as pd

        from rankscope.dashboard.app import model

        t0 = model.telemetry_start_ns(self.analysis.run)
        return pd.DataFrame() if t0 is None else model.telemetry_frame(self.analysis.run, t0)

    # ---------------------------------------------------------------- charts

    def step_chart(self, column: str = "excess_ms") -> go.Figure:
        """Each rank step by step (the Overview's chart): ``column`` is one of
        ``excess_ms``, ``step_ms``, ``caused_wait_ms``, ``lag_ms``; stalls marked."""
        from rankscope.dashboard.analysis import wording
        from rankscope.dashboard.app import figures as charts
        from rankscope.dashboard.app import model

        allowed = model.PER_STEP_COLUMNS[2:]
        if column not in allowed:
            raise ValueError(f"column {column!r}: one of {', '.join(allowed)}")
        fig = charts.per_step_lines(
            model.per_step_frame(self.report),
            column,
            model.stall_marks(self.report, column),
            model.straggler_ranks(self.report),
        )
        label = wording.PER_STEP_METRICS.get(column, "step time (ms)")
        title = f"Each rank, step by step: {label}"
        return charts.tidy(fig, height=340, title=title)

    def excess_heatmap(self) -> go.Figure:
        """Rank x step: extra work before each step's collectives beyond the other ranks'
        median (the Imbalance page's heatmap), what the diagnosis found outlined."""
        from rankscope.dashboard.app import figures as charts
        from rankscope.dashboard.app import model

        matrix = model.per_step_matrix(self.report, "excess_ms")
        if matrix.empty:
            raise ValueError("no per-step evidence in this run (one rank, or no collectives)")
        fig, shown = charts.rank_heatmap(
            matrix,
            model.stall_marks(self.report),
            model.straggler_ranks(self.report),
            text_auto=".0f",
            color_continuous_scale=charts.DIVERGING,
            color_continuous_midpoint=0,
            aspect="auto",
            labels={"x": "step", "y": "rank", "color": "ms"},
            title="Extra work before each step's collectives, beyond the other ranks' median (ms)",
        )
        return charts.tidy(fig, height=charts.heat_height(shown, 260))

    def telemetry_chart(
        self, fields: tuple[str, ...] = ("gpu_util_pct",), scale: float = 1.0, unit: str = ""
    ) -> go.Figure:
        """Telemetry ``fields`` over time, a line per rank (the GPU page's charts)."""
        from rankscope.dashboard.app import figures as charts
        from rankscope.dashboard.app import model

        long = model.telemetry_long(self.telemetry, fields, scale, model.TELEMETRY_LABELS)
        if long.empty:
            recorded = [c for c in self.telemetry.columns if c not in ("rank", "t_s", "ts_ns")]
            raise ValueError(
                f"no telemetry field {', '.join(fields)} in this run (recorded:"
                f" {', '.join(recorded) or 'none'})"
            )
        fig, _ = charts.rank_lines(
            long,
            "t_s",
            model.straggler_ranks(self.report),
            labels={"t_s": "seconds since the first sample", "value": unit or "value"},
            title=", ".join(model.TELEMETRY_LABELS.get(f, f) for f in fields),
        )
        return charts.tidy(fig, height=300)
