"""Compare: two runs, or two step windows of one run, with per-metric and per-rank deltas."""

from __future__ import annotations

from pathlib import Path

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis import compare_wording
from rankscope.dashboard.app import charts, data, model, text


def _verdict(sel_a: data.Selection, sel_b: data.Selection) -> None:
    """``rankscope compare``'s verdict on B against A, and a waterfall of where it went."""
    c = data.comparison(sel_a, sel_b)
    if c is None:
        return
    st.markdown(f"**{text.md(c.headline)}**")
    for sentence in c.sentences:
        st.markdown(f"- {text.md(sentence)}")
    names = [compare_wording.component_name(p.component) for p in c.components]
    fig = go.Figure(
        go.Waterfall(
            x=[text.html(n) for n in [*names, compare_wording.STEP_CHANGE]],
            y=[p.delta_ms for p in c.components] + [c.step.delta_ms],
            measure=["relative"] * len(names) + ["total"],
            increasing={"marker": {"color": "#d62728"}},
            decreasing={"marker": {"color": "#1f77b4"}},
        )
    )
    fig.update_yaxes(title="ms per step, B − A")
    charts.show(charts.tidy(fig, height=320), compare_wording.WATERFALL_CAPTION)


def _side(
    label: str, runs: list[str], default_run: str, default_half: str | None
) -> data.Selection:
    run = st.selectbox(
        f"{label}: run",
        runs,
        index=runs.index(default_run),
        format_func=lambda p: Path(p).name,
        key=f"rs_cmp_run_{label}",
    )
    steps, _ = data.run_steps_and_ranks(run)
    step_range = None
    if len(steps) > 1:
        mid = len(steps) // 2
        value = (steps[0], steps[-1])
        if default_half == "first" and run == default_run:
            value = (steps[0], steps[max(mid - 1, 0)])
        elif default_half == "second" and run == default_run:
            value = (steps[mid], steps[-1])
        lo, hi = st.select_slider(
            f"{label}: steps", options=steps, value=value, key=f"rs_cmp_steps_{label}|{run}"
        )
        if (lo, hi) != (steps[0], steps[-1]):
            step_range = f"{lo}:{hi}"
    return data.Selection(run, None, step_range)


def render() -> None:
    current = data.selection()
    root = data.root_path() or current.path
    runs = [e.path for e in data.runs_in(root)]
    if current.path not in runs:
        runs.insert(0, current.path)
    st.title("Compare")
    other = next((r for r in runs if r != current.path), None)
    c1, c2 = st.columns(2)
    with c1:
        sel_a = _side("A", runs, current.path, None if other else "first")
    with c2:
        sel_b = _side("B", runs, other or current.path, None if other else "second")
    st.caption(
        "With one run, A and B default to its first and second half: did something change mid-run?"
        " With several, B is the next newest run."
    )
    _verdict(sel_a, sel_b)
    metrics, long, matrix = data.compare(sel_a, sel_b)
    left, right = st.columns(2)
    with left:
        charts.table(
            metrics,
            {"A": "%.1f", "B": "%.1f", "delta": "%+.1f", "delta_pct": "%+.0f%%"},
            column_config={"delta": "B − A", "delta_pct": "change"},
        )
        st.caption(
            "Means over ranks, ms per step (GPU busy in %)."
            " Negative deltas on time are improvements."
        )
    with right:
        fig = px.bar(
            long,
            y="metric",
            x="value",
            color="side",
            barmode="group",
            orientation="h",
            labels={"value": "", "metric": ""},
        )
        fig.update_yaxes(autorange="reversed")
        charts.show(
            charts.tidy(fig, height=420),
            "Bars that differ most are where the two differ; look there first.",
        )

    st.subheader("Per rank")
    total = len(matrix)
    # Hundreds of ranks: the ranks that changed most (the stragglers of B first).
    matrix = model.limit_matrix(matrix, model.straggler_ranks(data.report(sel_b)))
    cut = len(matrix) < total
    fig = px.imshow(
        matrix.reset_index(drop=True) if cut else matrix,
        text_auto=".1f" if len(matrix) <= 32 else False,
        color_continuous_scale="RdBu_r",
        color_continuous_midpoint=0,
        aspect="auto",
        labels={"x": "", "y": "rank", "color": "B − A"},
    )
    fig.update_yaxes(
        tickmode="array",
        tickvals=list(range(len(matrix))) if cut else list(matrix.index),
        ticktext=[charts.rank_label(r) for r in matrix.index],
    )
    n = len(matrix)
    charts.show(
        charts.tidy(fig, height=140 + 40 * n if n <= 16 else charts.heat_height(n, 400)),
        "Red: B spends more time there than A; blue: less."
        " A single red row is one rank that got worse." + charts.many_ranks_note(n, total),
    )
    f1, f2 = st.columns(2)
    for col, label, sel in ((f1, "A", sel_a), (f2, "B", sel_b)):
        with col:
            st.markdown(f"**Findings in {label}**")
            charts.table(data.findings_frame(sel), {"saving ms/step": "%.1f"})


if __name__ == "__main__":
    render()
