"""GPU utilisation: trace busy % and SM efficiency beside NVML/GPM, and telemetry timelines."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from rankscope.dashboard.analysis.activity import trace_span
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
FIELD_LABELS = {
    "gpu_util_pct": "NVML utilisation",
    "mem_util_pct": "NVML memory-bus utilisation",
    "gpm_sm_activity_pct": "GPM SM activity",
    "gpm_sm_occupancy_pct": "GPM SM occupancy",
    "gpm_tensor_activity_pct": "GPM tensor activity",
    "gpm_dram_bw_pct": "GPM DRAM bandwidth",
    "sm_clock_mhz": "SM clock",
    "mem_clock_mhz": "memory clock",
    "pcie_tx_kbs": "PCIe tx",
    "pcie_rx_kbs": "PCIe rx",
    "nvlink_tx_kbs": "NVLink tx",
    "nvlink_rx_kbs": "NVLink rx",
}


def _bands(fig: go.Figure, a: object, t0: int) -> None:
    """Shade profiler windows (blue) and analysed steps (grey, alternating)."""
    from rankscope.dashboard.analysis.analyse import Analysis

    assert isinstance(a, Analysis)
    spans = [s for s in (trace_span(rd) for rd in a.run.ranks.values()) if s is not None]
    if spans:
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        fig.add_vrect(
            x0=(lo - t0) / 1e9,
            x1=(hi - t0) / 1e9,
            fillcolor="#90caf9",
            opacity=0.25,
            line_width=0,
            layer="below",
        )
    steps = [s for s in a.steps if s >= 0][:MAX_STEP_BANDS]
    for i, step in enumerate(steps):
        starts = [w[step][0] for w in a.windows.values() if step in w]
        ends = [w[step][1] for w in a.windows.values() if step in w]
        if starts and i % 2 == 0:
            fig.add_vrect(
                x0=(min(starts) - t0) / 1e9,
                x1=(max(ends) - t0) / 1e9,
                fillcolor="#9e9e9e",
                opacity=0.15,
                line_width=0,
                layer="below",
            )


def render() -> None:
    a = data.analysis()
    report = data.report()
    st.title("GPU utilisation")

    st.subheader("How busy each GPU was, measured three ways")
    util = model.utilisation_frame(report)
    if a.has_gpu:
        long = util.melt(id_vars="rank", var_name="measure", value_name="pct").dropna()
        long["rank"] = long["rank"].map(charts.rank_label)
        fig = px.bar(
            long,
            x="rank",
            y="pct",
            color="measure",
            barmode="group",
            labels={"pct": "%", "rank": ""},
        )
        fig.update_yaxes(range=[0, 100])
        charts.show(
            charts.tidy(fig, height=360),
            "Trace busy % is the share of the analysed steps with any GPU work; SM efficiency"
            " estimates how many SMs those kernels could fill; NVML utilisation only says a kernel"
            " was running"
            " during its sample, so it reads high for tiny kernels. Trust the lowest of them.",
        )
    else:
        st.info(
            "No GPU events in these traces: a CPU-only job. Telemetry below, if any, is host-side."
        )
    st.dataframe(util, hide_index=True)

    idle_rows = [
        {"rank": f"rank {r['rank']}", **r["idle_breakdown"]}
        for r in report["ranks"]
        if r.get("idle_breakdown")
    ]
    if idle_rows:
        idle = pd.DataFrame(idle_rows).melt(id_vars="rank", var_name="why", value_name="ms")
        idle["why"] = idle["why"].map(
            {
                "host_wait_ms": "waiting for the host to launch",
                "kernel_wait_ms": "launch gaps",
                "other_ms": "other (syncs, dependencies)",
            }
        )
        fig = px.bar(
            idle,
            x="rank",
            y="ms",
            color="why",
            labels={"ms": "GPU idle ms per step", "rank": ""},
            title="Why the GPU was idle",
        )
        charts.show(
            charts.tidy(fig, height=320),
            "Mostly 'waiting for the host' means the CPU side (Python, data, launches) cannot"
            " feed the GPU.",
        )

    st.subheader("Telemetry over time")
    starts = [
        int(rd.telemetry["ts_ns"].min())
        for rd in a.run.ranks.values()
        if len(rd.telemetry) and "ts_ns" in rd.telemetry
    ]
    if not starts:
        st.info("No telemetry recorded for this run (NVML sampling was off or unavailable).")
        return
    t0 = min(starts)
    tel = model.telemetry_frame(a.run, t0)
    shown = 0
    cols = st.columns(2)
    for title, fields, scale, unit, caption in GROUPS:
        present = [f for f in fields if f in tel.columns and tel[f].notna().any()]
        if not present:
            continue
        long = (
            tel[["rank", "t_s", *present]]
            .melt(id_vars=["rank", "t_s"], var_name="field", value_name="value")
            .dropna()
        )
        long["value"] = long["value"] * scale
        long["field"] = long["field"].map(lambda f: FIELD_LABELS.get(f, f))
        long["rank"] = long["rank"].map(charts.rank_label)
        fig = px.line(
            long,
            x="t_s",
            y="value",
            color="rank",
            line_dash="field" if len(present) > 1 else None,
            labels={"t_s": "seconds since the first sample", "value": unit},
            title=title,
        )
        _bands(fig, a, t0)
        with cols[shown % 2]:
            charts.show(charts.tidy(fig, height=300), caption, key=f"tel-{title}")
        shown += 1
    st.caption(
        "Blue band: the profiler window (where the trace has events). Grey bands: analysed steps."
    )


if __name__ == "__main__":
    render()
