"""GPU utilisation: trace busy % and SM efficiency beside NVML/GPM, memory per rank, and
telemetry timelines."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.memory import RULES_TEXT as MEMORY_RULES
from rankscope.dashboard.app import charts, data, model

# (title, fields, scale to the unit shown, unit, what to look for)
GROUPS = (
    (
        "Utilisation",
        (
            "gpu_util_pct",
            "gpm_sm_activity_pct",
            "gpm_sm_occupancy_pct",
            "gpm_tensor_activity_pct",
            "gpm_dram_bw_pct",
            "mem_util_pct",
        ),
        1.0,
        "%",
        "NVML utilisation near 100% with low GPM SM activity means kernels run but leave"
        " most SMs idle.",
    ),
    (
        "Memory used",
        ("mem_used_b",),
        1e-9,
        "GB",
        "Steady growth over steps is a leak; a sawtooth is the caching allocator.",
    ),
    (
        "Power",
        ("power_mw",),
        1e-3,
        "W",
        "Power tracks real work better than utilisation: low power in steps means a starved GPU.",
    ),
    (
        "Clocks",
        ("sm_clock_mhz", "mem_clock_mhz"),
        1.0,
        "MHz",
        "A falling SM clock under load is thermal or power throttling.",
    ),
    ("Temperature", ("temp_c",), 1.0, "°C", "Sustained high temperature leads to lower clocks."),
    (
        "PCIe / NVLink",
        ("pcie_tx_kbs", "pcie_rx_kbs", "nvlink_tx_kbs", "nvlink_rx_kbs"),
        1e-3,
        "MB/s",
        "Bursts line up with host-device copies (PCIe) or collectives (NVLink).",
    ),
    (
        "Throttle reasons",
        ("throttle_reasons",),
        1.0,
        "bitmask",
        "Anything above 0 (other than idle) means the driver held clocks down.",
    ),
    (
        "Host CPU",
        ("host_cpu_pct",),
        1.0,
        "%",
        "A busy host CPU with an idle GPU means the input pipeline or Python is the bottleneck.",
    ),
    (
        "Host memory (RSS)",
        ("rss_b",),
        1e-9,
        "GB",
        "Resident memory of the training process: steady growth is a leak.",
    ),
)
MAX_STEP_BANDS = 200


def _bands(fig: go.Figure, t0: int) -> None:
    """Shade profiler windows (blue) and analysed steps (grey, alternating)."""
    window, steps = data.time_bands(t0, MAX_STEP_BANDS)
    if window:
        fig.add_vrect(
            x0=window[0],
            x1=window[1],
            fillcolor="#90caf9",
            opacity=0.25,
            line_width=0,
            layer="below",
        )
    for x0, x1 in steps:
        fig.add_vrect(x0=x0, x1=x1, fillcolor="#9e9e9e", opacity=0.15, line_width=0, layer="below")


def render() -> None:
    a = data.analysis()
    st.title("GPU utilisation")

    first = model.straggler_ranks(data.report())
    if a.has_gpu:
        st.subheader("How busy each GPU was, measured three ways")
        bars, total = model.limit_rank_bars(data.utilisation_long(), "pct", "measure", first)
        fig = px.bar(
            bars,
            x="rank",
            y="pct",
            color="measure",
            barmode="group",
            labels={"pct": "%", "rank": ""},
        )
        fig.update_yaxes(range=[0, 100])
        fig.update_xaxes(type="category")
        charts.show(
            charts.tidy(fig, height=360),
            "Trace busy % is the share of the analysed steps with any GPU work; SM efficiency"
            " estimates how many SMs those kernels could fill; NVML utilisation only says a kernel"
            " was running"
            " during its sample, so it reads high for tiny kernels. Trust the lowest of them."
            + charts.bars_note(bars, total),
        )
    else:
        st.info(wording.NO_GPU_CPU_ONLY)
    util = data.utilisation_frame()
    measures = [c for c in util.columns if c != "rank"]
    if measures:  # a table of rank numbers alone would say nothing
        charts.rank_table(util, measures, first, "rs_gpu_all_ranks")

    idle = data.idle_long()
    if not idle.empty:
        bars, total = model.limit_rank_bars(idle, "ms", "why", first)
        fig = px.bar(
            bars,
            x="rank",
            y="ms",
            color="why",
            labels={"ms": "GPU idle ms per step", "rank": ""},
            title="Why the GPU was idle",
        )
        fig.update_xaxes(type="category")
        charts.show(
            charts.tidy(fig, height=320),
            "Mostly 'waiting for the host' means the CPU side (Python, data, launches) cannot"
            " feed the GPU." + charts.bars_note(bars, total),
        )

    _memory(first)

    st.subheader("Telemetry over time")
    t0 = data.telemetry_start_ns()
    if t0 is None:
        st.info("No telemetry recorded for this run (NVML sampling was off or unavailable).")
        return
    shown = 0
    cols = st.columns(2)
    n_ranks = 0
    for title, fields, scale, unit, caption in GROUPS:
        long = data.telemetry_long(t0, fields, scale)
        if long.empty:
            continue
        fig, n_ranks = charts.rank_lines(
            long,
            "t_s",
            first,
            labels={"t_s": "seconds since the first sample", "value": unit},
            title=title,
        )
        _bands(fig, t0)
        with cols[shown % 2]:
            charts.show(charts.tidy(fig, height=300), caption, key=f"tel-{title}")
        shown += 1
    many = (
        f" {n_ranks} ranks: each chart draws the median rank (a line per measure) and the"
        " middle 80% of ranks (the band around it), the stragglers (thick) and the ranks"
        " furthest from the median (dotted)."
        if n_ranks > model.MAX_LINE_RANKS
        else ""
    )
    st.caption(
        "Blue band: the profiler window (where the trace has events). Grey bands: analysed steps."
        + many
    )


def _memory(first: list[int]) -> None:
    """Peak allocated and reserved per rank, the GPU's memory as a line, and the findings."""
    report = data.report()
    st.subheader("Memory per rank")
    bars = model.memory_bars(report)
    if report.memory is None or not report.memory.has_data:
        st.info(wording.NO_MEMORY_DATA)  # RSS alone, if any, is drawn below it
    if bars.empty:
        return
    bars, total = model.limit_rank_bars(bars, "gib", "measure", first)
    fig = px.bar(
        bars, x="rank", y="gib", color="measure", barmode="group", labels={"gib": "GiB", "rank": ""}
    )
    fig.update_xaxes(type="category")
    capacity = model.memory_capacity_gib(report)
    limit = ""
    if capacity is not None and float(bars["gib"].max()) >= model.CAPACITY_LINE_SHARE * capacity:
        fig.add_hline(
            y=capacity, line_dash="dash", annotation_text=f"GPU memory {capacity:.1f} GiB"
        )
    elif capacity is not None:
        # Far below the limit: a line at the GPU's memory would flatten the bars that
        # show the ranks' differences; the caption gives it.
        limit = f" Each GPU has {capacity:.1f} GiB, off the chart's scale."
    m = report.memory
    assert m is not None
    sources = sorted({d.source for d in m.devices if d.device != "host"})
    caption = "; ".join(wording.MEMORY_SOURCE[s] for s in sources) or "process RSS (light layer)"
    caption += "." + limit
    charts.show(
        charts.tidy(fig, height=340),
        f"Peaks {caption} {MEMORY_RULES}" + charts.bars_note(bars, total),
    )
    for f in report.findings:
        if f.kind.startswith("memory"):
            st.warning(f"**{f.title}**  \n{f.detail}")


if __name__ == "__main__":
    render()
