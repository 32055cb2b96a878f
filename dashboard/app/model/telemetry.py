"""Telemetry over time (NVML/GPM samples of each rank) and the step bands drawn behind it.

``telemetry_frame`` -> rank, t_s (seconds since ``t0_ns``), the numeric telemetry
fields; ``telemetry_long`` -> rank (label), t_s, field (label), value (scaled);
``time_bands`` -> (the profiler window, every other analysed step) in the same seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from rankscope.dashboard.analysis.activity import trace_span
from rankscope.dashboard.app.model.basics import rank_label

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis
    from rankscope.dashboard.ingest.run import Run


def telemetry_frame(run: Run, t0_ns: int) -> pd.DataFrame:
    frames = []
    for rank, rd in sorted(run.ranks.items()):
        tel = rd.telemetry
        if not len(tel) or "ts_ns" not in tel:
            continue
        df = tel.to_pandas().drop(columns=["rank"], errors="ignore")
        df.insert(0, "t_s", (df["ts_ns"] - t0_ns) / 1e9)
        df.insert(0, "rank", rank)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def telemetry_start_ns(run: Run) -> int | None:
    """The first telemetry sample of any rank: time zero of the telemetry charts."""
    starts = [
        int(rd.telemetry["ts_ns"].min())
        for rd in run.ranks.values()
        if len(rd.telemetry) and "ts_ns" in rd.telemetry
    ]
    return min(starts) if starts else None


# Telemetry fields named as a chart legend names them (others keep their field name).
TELEMETRY_LABELS = {
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


def telemetry_long(
    tel: pd.DataFrame, fields: tuple[str, ...], scale: float, labels: dict[str, str]
) -> pd.DataFrame:
    """rank (label), t_s, field (label), value (scaled) of the ``fields`` that were recorded."""
    present = [f for f in fields if f in tel.columns and tel[f].notna().any()]
    if not present:
        return pd.DataFrame(columns=["rank", "t_s", "field", "value"])
    long = (
        tel[["rank", "t_s", *present]]
        .melt(id_vars=["rank", "t_s"], var_name="field", value_name="value")
        .dropna()
    )
    long["value"] = long["value"] * scale
    long["field"] = long["field"].map(lambda f: labels.get(f, f))
    long["rank"] = long["rank"].map(rank_label)
    return long


def time_bands(
    a: Analysis, t0_ns: int, max_steps: int
) -> tuple[tuple[float, float] | None, list[tuple[float, float]]]:
    """(profiler window, every other analysed step) as seconds since ``t0_ns``."""
    spans = [s for s in (trace_span(rd) for rd in a.run.ranks.values()) if s is not None]
    window = None
    if spans:
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        window = ((lo - t0_ns) / 1e9, (hi - t0_ns) / 1e9)
    bands = []
    for i, step in enumerate([s for s in a.steps if s >= 0][:max_steps]):
        starts = [w[step][0] for w in a.windows.values() if step in w]
        ends = [w[step][1] for w in a.windows.values() if step in w]
        if starts and i % 2 == 0:
            bands.append(((min(starts) - t0_ns) / 1e9, (max(ends) - t0_ns) / 1e9))
    return window, bands
