"""Issue 26 item 4: every telemetry line is strict JSON, whatever NVML answers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fakes.fake_nvml import FakeNvml

from rankscope.profiler import rundir
from rankscope.profiler.faults import Faults
from rankscope.profiler.recorder import Recorder
from rankscope.profiler.telemetry import NvmlSampler


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class NanGpm(FakeNvml):
    def nvmlGpmMetricsGet(self, mg: Any) -> Any:
        super().nvmlGpmMetricsGet(mg)
        for i in range(mg.numMetrics):
            if mg.metrics[i].metricId == 10:  # DRAM bandwidth: no data in the interval
                mg.metrics[i].value = float("nan")
        return mg


def test_a_nan_gpm_metric_is_left_out_of_the_sample() -> None:
    sampler = NvmlSampler(NanGpm(), "0", lambda part, error: None)
    try:
        row = sampler.sample()
    finally:
        sampler.close()
    assert "gpm_dram_bw_pct" not in row and row["gpm_sm_activity_pct"] == 71.25


class NanSampler:
    source = "nvml"

    def sample(self) -> dict[str, Any]:
        nan, inf = float("nan"), float("inf")
        return {"ts_ns": time.time_ns(), "source": "nvml", "gpm_dram_bw_pct": nan, "x": inf}

    def describe(self) -> dict[str, Any]:
        return {"telemetry_source": "nvml"}

    def close(self) -> None:
        pass


def test_every_telemetry_line_parses_with_a_strict_parser(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, 0, Faults("rank 0"), NanSampler, 0.01, 0.05, lambda: None, None)
    rec.start()
    try:
        time.sleep(0.2)
        rec.request_flush(5)
    finally:
        rec.stop()
    lines = rundir.telemetry_path(tmp_path, 0).read_text().splitlines()
    rows = [json.loads(line, parse_constant=_refuse) for line in lines]
    assert len(rows) > 2 and rows[0]["schema"] == rundir.TELEMETRY_SCHEMA
    assert all(r["gpm_dram_bw_pct"] is None and r["x"] is None for r in rows[1:])
    for line in rundir.steps_path(tmp_path, 0).read_text().splitlines():
        json.loads(line, parse_constant=_refuse)
