"""NVML/GPM sampling against a fake NVML: values, failures, missing GPM, permissions."""

from __future__ import annotations

import time

import pytest
from fakes.fake_nvml import (
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    FakeNvml,
)

from rankscope.profiler.telemetry import (
    HOST_FIELDS,
    NVML_FIELDS,
    HostSampler,
    NvmlSampler,
    cuda_visible_device,
    open_sampler,
)


class Reports:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, part: str, error: BaseException | str) -> None:
        self.lines.append((part, str(error)))

    def parts(self) -> list[str]:
        return [p for p, _ in self.lines]


def test_all_fields_from_a_healthy_gpu() -> None:
    nvml, reports = FakeNvml(), Reports()
    sampler = open_sampler(nvml, "1", reports)
    assert isinstance(sampler, NvmlSampler)
    assert nvml.opened_index == 1
    first = sampler.sample()
    time.sleep(0.01)
    row = sampler.sample()
    assert row["source"] == "nvml" and isinstance(row["ts_ns"], int)
    assert row["ts_ns"] > first["ts_ns"]
    assert row["gpu_util_pct"] == 87 and row["mem_util_pct"] == 41
    assert row["mem_used_b"] == 10 * 2**30 and row["mem_total_b"] == 80 * 2**30
    assert row["power_mw"] == 412_000
    assert (row["sm_clock_mhz"], row["mem_clock_mhz"], row["temp_c"]) == (1980, 2619, 64)
    assert row["throttle_reasons"] == 0x24
    assert (row["pcie_tx_kbs"], row["pcie_rx_kbs"]) == (1200, 3400)
    assert row["gpm_sm_activity_pct"] == 71.25
    assert row["gpm_sm_occupancy_pct"] == 33.33
    assert row["gpm_tensor_activity_pct"] == 52.5
    assert row["gpm_dram_bw_pct"] == 18.0
    # NVLink counters are cumulative: a rate appears from the second sample on,
    # 1 GiB (tx) and 2 GiB (rx) over ~10 ms.
    assert "nvlink_tx_kbs" not in first
    assert row["nvlink_rx_kbs"] == pytest.approx(2 * row["nvlink_tx_kbs"], rel=0.01)
    assert 2**20 / 1.0 < row["nvlink_tx_kbs"] < 2**20 / 0.005
    assert set(row) <= {"ts_ns", "source", *NVML_FIELDS}
    assert reports.lines == []
    info = sampler.describe()
    assert info["device_name"] == "NVIDIA H100 80GB HBM3" and info["gpm"] and info["nvlink"]
    sampler.close()
    assert nvml.shutdowns == 1 and nvml.gpm_allocated == 0


def test_unsupported_query_is_dropped_once_and_the_rest_goes_on() -> None:
    nvml, reports = FakeNvml(fail={"nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED}), Reports()
    sampler = open_sampler(nvml, "0", reports)
    rows = [sampler.sample() for _ in range(5)]
    assert all("power_mw" not in r and r["gpu_util_pct"] == 87 for r in rows)
    assert reports.lines == [("telemetry power", "disabled (not supported)")]


def test_gpu_lost_mid_run_leaves_timestamps_and_one_line_per_query() -> None:
    nvml, reports = FakeNvml(fail_after=2), Reports()
    sampler = open_sampler(nvml, "0", reports)
    rows = [sampler.sample() for _ in range(6)]
    assert rows[0]["gpu_util_pct"] == 87 and rows[1]["gpu_util_pct"] == 87
    assert all(set(r) == {"ts_ns", "source"} for r in rows[3:])
    parts = reports.parts()
    assert len(parts) == len(set(parts))  # each broken query said once, not every 100 ms
    assert "telemetry utilization" in parts


def test_gpm_unsupported_is_said_once_and_gpm_fields_absent() -> None:
    nvml, reports = FakeNvml(gpm="unsupported", nvlinks=0), Reports()
    sampler = open_sampler(nvml, "0", reports)
    row = sampler.sample()
    assert not any(k.startswith("gpm_") or k.startswith("nvlink_") for k in row)
    assert reports.parts() == ["telemetry gpm"]
    assert "not available" in reports.lines[0][1]
    assert nvml.gpm_allocated == 0


def test_gpm_permission_denied_keeps_basic_telemetry() -> None:
    nvml, reports = FakeNvml(gpm="no permission"), Reports()
    sampler = open_sampler(nvml, "0", reports)
    row = sampler.sample()
    assert row["gpu_util_pct"] == 87 and "gpm_sm_activity_pct" not in row
    assert reports.lines == [("telemetry gpm", "GPM metrics off (no permission)")]


def test_gpm_sampling_failing_later_disables_only_gpm() -> None:
    nvml, reports = FakeNvml(), Reports()
    sampler = open_sampler(nvml, "0", reports)
    assert "gpm_dram_bw_pct" in sampler.sample()
    nvml.fail["nvmlGpmMetricsGet"] = 999
    row = sampler.sample()
    assert "gpm_dram_bw_pct" not in row and row["power_mw"] == 412_000
    assert reports.parts() == ["telemetry gpm"]


def test_no_nvml_falls_back_to_host_and_says_so() -> None:
    reports = Reports()
    sampler = open_sampler(FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND), "0", reports)
    assert isinstance(sampler, HostSampler)
    row = sampler.sample()
    assert row["source"] == "host" and set(row) == {"ts_ns", "source", *HOST_FIELDS}
    assert row["rss_b"] > 10 * 2**20 and 0 <= row["host_cpu_pct"] <= 100 * 64
    assert reports.parts() == ["telemetry"]
    assert "host CPU and RSS" in reports.lines[0][1]


def test_no_gpu_for_this_rank_goes_to_host_mode() -> None:
    reports = Reports()
    assert isinstance(open_sampler(FakeNvml(), None, reports), HostSampler)


def test_missing_device_index_is_host_mode_and_nvml_shut_down() -> None:
    nvml, reports = FakeNvml(devices=1), Reports()
    assert isinstance(open_sampler(nvml, "3", reports), HostSampler)
    assert nvml.shutdowns == 1


def test_cuda_visible_devices_maps_local_rank_to_nvml_device() -> None:
    assert cuda_visible_device(2, {}) == "2"
    assert cuda_visible_device(1, {"CUDA_VISIBLE_DEVICES": "4,5,6"}) == "5"
    # One GPU per process (a scheduler's isolation): local rank 3 still sees its one GPU.
    assert cuda_visible_device(3, {"CUDA_VISIBLE_DEVICES": "7"}) == "7"
    assert cuda_visible_device(0, {"CUDA_VISIBLE_DEVICES": "GPU-00000001"}) == "GPU-00000001"


def test_uuid_prefix_selects_the_device() -> None:
    nvml = FakeNvml(devices=3)
    sampler = open_sampler(nvml, "GPU-00000002", Reports())
    assert isinstance(sampler, NvmlSampler) and nvml.opened_index == 2


@pytest.mark.gpu
def test_real_nvml_sample() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception:
        pytest.skip("no NVIDIA GPU / NVML here")
    if count == 0:
        pytest.skip("no NVIDIA GPU")
    reports = Reports()
    sampler = open_sampler(None, "0", reports)
    assert isinstance(sampler, NvmlSampler)
    sampler.sample()
    time.sleep(0.15)
    row = sampler.sample()
    sampler.close()
    for field in (
        "gpu_util_pct",
        "mem_used_b",
        "mem_total_b",
        "power_mw",
        "sm_clock_mhz",
        "temp_c",
        "throttle_reasons",
    ):
        assert isinstance(row[field], int), field
    assert 0 < row["mem_used_b"] <= row["mem_total_b"]
