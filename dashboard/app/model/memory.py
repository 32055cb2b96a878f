"""The memory view's frames: per rank, peak allocated and reserved on the devices judged.

``memory_bars(report)`` is the long frame of the GPU page's memory chart (rank
label, measure, GiB) for the devices the rules judge: GPUs by the report's
``gpu_source``, else the CPU tensors a trace recorded, else each process's RSS;
``memory_capacity_gib`` the GPUs' memory for the chart's limit line (None when
unknown or not the same on every rank).
"""

from __future__ import annotations

import pandas as pd

from rankscope.dashboard.analysis.memory import DeviceMemory
from rankscope.dashboard.analysis.report import Report
from rankscope.dashboard.app.model.basics import rank_label

GIB = float(1 << 30)
# The GPU's memory is drawn as a line when the highest bar reaches this share of it;
# below, the line would flatten the bars (the caption gives the figure instead).
CAPACITY_LINE_SHARE = 0.25


def judged_devices(report: Report) -> list[DeviceMemory]:
    m = report.memory
    if m is None:
        return []
    gpu = [d for d in m.devices if d.device.startswith("cuda") and d.source == m.gpu_source]
    if gpu:
        return gpu
    cpu = [d for d in m.devices if d.device == "cpu"]
    return cpu or [d for d in m.devices if d.device == "host"]


def memory_bars(report: Report) -> pd.DataFrame:
    rows = []
    for d in judged_devices(report):
        label = rank_label(d.rank)
        rows.append({"rank": label, "measure": "peak allocated", "gib": d.peak_allocated_b / GIB})
        if d.peak_reserved_b is not None:
            rows.append({"rank": label, "measure": "peak reserved", "gib": d.peak_reserved_b / GIB})
    return pd.DataFrame(rows, columns=["rank", "measure", "gib"])


def memory_capacity_gib(report: Report) -> float | None:
    caps = {d.capacity_b for d in judged_devices(report)}
    if len(caps) != 1:
        return None
    (cap,) = caps
    return None if cap is None else cap / GIB
