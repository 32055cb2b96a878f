"""Whole run: every step of every rank from the light layer, trace windows marked.

Lateness per rank and step (a heatmap, max-pooled for long runs), step time and
DataLoader wait, GPU clocks and throttling (host CPU without a GPU). Picking a slow
step moves the sidebar's step range to the trace window over it, or says how to
capture one. Steps rankscope's own capture touched (a window's start, stop, trace
write) are shaded grey and carry no lateness: no verdict is drawn from them.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.wholerun import capture_spans
from rankscope.dashboard.app import charts, data, figures, model

# (title, fields, unit, what to look for); the first with a recorded field is drawn
TELEMETRY_CHARTS = (
    ("SM clock", ("sm_clock_mhz",), "MHz", "A dip at a slow step is the GPU held back."),
    (
        "Throttle reasons",
        ("throttle_reasons",),
        "bitmask",
        "Anything above 1 (1 is idle) means the driver held the clocks down in those steps.",
    ),
    (
        "Host CPU",
        ("host_cpu_pct",),
        "%",
        "No GPU telemetry in this run: a busy host at a slow step points at the input"
        " pipeline or other processes.",
    ),
)


def _pick_key(path: str) -> str:
    return f"rs_wholerun_pick|{path}"


def _jump(path: str, choices: pd.DataFrame, steps: list[int]) -> None:
    """Selectbox callback: move the step range to the window over the chosen step."""
    row = st.session_state.get(_pick_key(path))
    if row is None:
        return
    first, last = choices.loc[row, ["window_first", "window_last"]]
    if pd.isna(first):
        return
    span = model.step_range_within((int(first), int(last)), steps)
    if span is not None:
        data.set_step_range(path, *span)


def _pick_slow_step(sel: data.Selection) -> None:
    choices = data.slow_steps(sel)
    if choices.empty:
        return
    steps, _ = data.run_steps_and_ranks(sel.path)
    row = st.selectbox(
        wording.WHOLE_RUN_PICK,
        list(choices.index),
        index=None,
        format_func=lambda i: choices.loc[i, "label"],
        placeholder="a stall or a slow step…",
        help=wording.WHOLE_RUN_PICK_HELP,
        key=_pick_key(sel.path),
        on_change=_jump,
        args=(sel.path, choices, steps),
    )
    if row is None:
        return
    pick = choices.loc[row]
    first, last = pick["window_first"], pick["window_last"]
    span = None if pd.isna(first) else model.step_range_within((int(first), int(last)), steps)
    if span is None:
        st.info(wording.no_window_covers(int(pick["step"])))
        return
    # Only while the sidebar still holds that window (the reader may have moved it since).
    held = None if span == (steps[0], steps[-1]) else f"{span[0]}:{span[1]}"
    if sel.steps == held:
        st.success(wording.window_chosen(int(pick["step"]), span))


def _heatmap(
    heat: pd.DataFrame,
    width: int,
    windows: pd.DataFrame,
    n_ranks: int,
    spans: list[tuple[int, int]],
) -> None:
    fig = figures.whole_run_heatmap(heat, width, windows, spans)
    charts.show(
        fig,
        wording.heatmap_caption(width, len(heat.index), n_ranks),
        key="wholerun_heatmap",
    )


def _lines(
    frame: pd.DataFrame, columns: dict[str, str], width: int, title: str
) -> go.Figure | None:
    present = {c: name for c, name in columns.items() if frame[c].notna().any()}
    if not present:
        return None
    fig = go.Figure()
    x = charts.column_centres(frame["step"].astype(int).tolist(), width)
    for column, name in present.items():
        fig.add_trace(go.Scatter(x=x, y=frame[column], mode="lines", name=name))
    fig.update_layout(title=title)
    fig.update_xaxes(title="step", tickformat="d")
    fig.update_yaxes(title="ms")
    return fig


def _telemetry(ranks: tuple[int, ...], windows: pd.DataFrame, stragglers: list[int]) -> None:
    """One chart per recorded field: a line per rank up to ``MAX_LINE_RANKS`` ranks,
    beyond that the heatmap's ranks as a median and band, the stragglers as lines."""
    drawn = 0
    for title, fields, unit, caption in TELEMETRY_CHARTS:
        if title == "Host CPU" and drawn:
            break  # host CPU only stands in for missing GPU telemetry
        long = data.whole_run_telemetry(fields, ranks)
        if long.empty:
            continue
        fig, n = charts.rank_lines(
            long, "step", stragglers, bins=model.MAX_TELEMETRY_POINTS // 2, title=title
        )
        fig.update_xaxes(title="step", tickformat="d")
        fig.update_yaxes(title=unit)
        charts.mark_windows(fig, windows, labelled=False)
        if n > model.MAX_LINE_RANKS:
            caption += f" Band: the middle 80% of the heatmap's {n} ranks; line: their median."
        charts.show(charts.tidy(fig, height=260), caption, key=f"wholerun_{fields[0]}")
        drawn += 1


def render() -> None:
    st.title("Whole run")
    sel = data.selection()
    whole = data.whole_run(sel)
    if whole is None:
        light = any(p.source == "light" for p in data.report().pipelines)
        data.stop_with(wording.NO_LIGHT_PIPELINE_ONLY if light else wording.NO_LIGHT_LOG, "info")
    heat = data.whole_run_heatmap(sel=sel)
    n_ranks = len(data.load(sel).ranks)
    st.caption(wording.whole_run_summary(whole.first_step, whole.last_step, whole.n_steps, n_ranks))
    _pick_slow_step(sel)
    windows = data.trace_windows(sel)
    width = model.pool_width(whole.n_steps, model.MAX_HEAT_COLUMNS)
    spans = capture_spans(whole.steps)
    if whole.capture_steps:
        st.caption(wording.capture_steps_left_out(whole.capture_steps))
    _heatmap(heat, width, windows, n_ranks, spans)

    steps = data.whole_run_steps(sel=sel)
    step_fig = _lines(steps, {"step_ms": "step time (median rank)"}, width, "Step time")
    if step_fig is not None:
        charts.mark_windows(step_fig, windows, labelled=False)
        figures.mark_capture(step_fig, spans)
        charts.show(
            charts.tidy(step_fig, height=260),
            "A spike is a step every rank waited through; a plateau, a slow stretch.",
            key="wholerun_step_ms",
        )
    data_fig = _lines(
        steps,
        {"data_max_ms": "slowest rank", "data_median_ms": "median rank"},
        width,
        "DataLoader wait",
    )
    if data_fig is not None:
        charts.mark_windows(data_fig, windows, labelled=False)
        figures.mark_capture(data_fig, spans)
        charts.show(
            charts.tidy(data_fig, height=260),
            "Time in the DataLoader per step: the slowest rank far above the median is one"
            " rank's input pipeline holding everyone back.",
            key="wholerun_data_ms",
        )
    stragglers = [s.rank for s in data.analysis(sel).whole_run_stragglers]
    _telemetry(tuple(int(r) for r in heat.index), windows, stragglers)
    if not windows.empty:
        st.markdown("**Trace windows**")
        charts.table(
            windows,
            column_config={
                "first_step": "first step",
                "last_step": "last step",
                "auto": "auto-captured",
            },
        )


if __name__ == "__main__":
    render()
