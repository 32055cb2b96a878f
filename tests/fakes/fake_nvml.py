"""A fake pynvml for telemetry tests: the same names, canned values, injectable failures.

``FakeNvml(...)`` behaves like the ``pynvml`` module for one GPU. ``fail`` maps a
function name to an NVML error code raised on every call; ``fail_after`` makes
every device query raise after that many samples (a GPU lost mid-run).
``processes`` maps a device index to the ``(pid, used_bytes)`` of the compute
processes on it, for ``rankscope monitor``'s per-process queries; each pid's
SM utilisation is ``proc_sm_util.get(pid, 30)`` percent.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIBRARY_NOT_FOUND = 12


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class _GpmMetricsGet:
    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(16)]


class FakeNvml:
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVMLError = NVMLError
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVML_PCIE_UTIL_TX_BYTES = 0
    NVML_PCIE_UTIL_RX_BYTES = 1
    NVML_FI_DEV_NVLINK_LINK_COUNT = 91
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX = 138
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 139
    NVML_GPM_METRICS_GET_VERSION = 1
    c_nvmlGpmMetricsGet_t = _GpmMetricsGet

    def __init__(
        self,
        *,
        devices: int = 2,
        nvlinks: int = 18,
        gpm: str = "ok",  # "ok" | "unsupported" | "no permission"
        fail: dict[str, int] | None = None,
        fail_after: int | None = None,
        init_error: int | None = None,
        processes: dict[int, list[tuple[int, int]]] | None = None,
        proc_sm_util: dict[int, int] | None = None,
    ) -> None:
        self.devices = devices
        self.nvlinks = nvlinks
        self.gpm = gpm
        self.fail = dict(fail or {})
        self.fail_after = fail_after
        self.init_error = init_error
        self.initialised = False
        self.shutdowns = 0
        self.utilization_calls = 0
        self.nvlink_kib = 0
        self.gpm_allocated = 0
        self.opened_index: int | None = None
        self.processes = {d: list(ps) for d, ps in (processes or {}).items()}
        self.proc_sm_util = dict(proc_sm_util or {})
        self.process_util_us = 1_000_000  # NVML's sample clock (microseconds), moves on

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise NVMLError(self.fail[name])
        if self.fail_after is not None and self.utilization_calls > self.fail_after:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        if not 0 <= i < self.devices:
            raise NVMLError(2)  # invalid argument
        self.opened_index = i
        return SimpleNamespace(index=i)

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return f"GPU-0000000{h.index}-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlDeviceGetName(self, h: Any) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        self.utilization_calls += 1
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=87, memory=41)

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        self._check("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(used=10 * 2**30, total=80 * 2**30, free=70 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        self._check("nvmlDeviceGetPowerUsage")
        return 412_000

    def nvmlDeviceGetClockInfo(self, h: Any, kind: int) -> int:
        self._check("nvmlDeviceGetClockInfo")
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        self._check("nvmlDeviceGetTemperature")
        return 64

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        self._check("nvmlDeviceGetCurrentClocksEventReasons")
        return 0x4 | 0x20  # SW power cap | SW thermal slowdown

    def nvmlDeviceGetPcieThroughput(self, h: Any, counter: int) -> int:
        self._check("nvmlDeviceGetPcieThroughput")
        return 1200 if counter == self.NVML_PCIE_UTIL_TX_BYTES else 3400

    def nvmlDeviceGetFieldValues(self, h: Any, fields: list[Any]) -> list[Any]:
        self._check("nvmlDeviceGetFieldValues")
        out = []
        for f in fields:
            field = f[0] if isinstance(f, tuple) else f
            if field == self.NVML_FI_DEV_NVLINK_LINK_COUNT:
                out.append(SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(uiVal=self.nvlinks)))
            else:
                # Cumulative KiB counters; each query moves them on by 1 GiB.
                if field == self.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX:
                    self.nvlink_kib += 2**20
                value = self.nvlink_kib * (
                    1 if field == self.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX else 2
                )
                out.append(SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(ullVal=value)))
        return out

    def nvmlGpmQueryDeviceSupport(self, h: Any) -> Any:
        if self.gpm == "no permission":
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return SimpleNamespace(isSupportedDevice=int(self.gpm == "ok"))

    def nvmlGpmSampleAlloc(self) -> Any:
        self.gpm_allocated += 1
        return SimpleNamespace(taken=0)

    def nvmlGpmSampleFree(self, s: Any) -> None:
        self.gpm_allocated -= 1

    def nvmlGpmSampleGet(self, h: Any, s: Any) -> Any:
        self._check("nvmlGpmSampleGet")
        s.taken += 1
        return s

    def nvmlGpmMetricsGet(self, mg: Any) -> Any:
        self._check("nvmlGpmMetricsGet")
        values = {2: 71.25, 3: 33.333, 5: 52.5, 10: 18.0}
        for i in range(mg.numMetrics):
            mg.metrics[i].value = values[mg.metrics[i].metricId]
        return mg

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used)
            for pid, used in self.processes.get(h.index, [])
        ]

    def nvmlDeviceGetProcessUtilization(self, h: Any, last_seen_us: int) -> list[Any]:
        self._check("nvmlDeviceGetProcessUtilization")
        procs = self.processes.get(h.index, [])
        if not procs:
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # what NVML says when it has no samples
        self.process_util_us += 100_000
        return [
            SimpleNamespace(
                pid=pid,
                timeStamp=self.process_util_us,
                smUtil=self.proc_sm_util.get(pid, 30),
                memUtil=12,
                encUtil=0,
                decUtil=0,
            )
            for pid, _ in procs
        ]
