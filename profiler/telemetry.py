"""Telemetry samplers: one dict per call to ``sample()``, ready for ``rank{R}.telemetry.jsonl``.

``open_sampler(nvml, device, report)`` gives an ``NvmlSampler`` for this rank's GPU
or, without a usable NVML/GPU, a ``HostSampler`` (host CPU %, process RSS). Every
sample has ``ts_ns`` (CLOCK_REALTIME) and ``source`` ("nvml" | "host"); the other
fields are those listed in ``NVML_FIELDS`` / ``HOST_FIELDS`` that could be read
(``rankscope monitor`` adds ``PROCESS_FIELDS`` to NVML rows). A row is written with
``records.encode_line`` (strict JSON: a NaN or infinite value becomes null) and
read back as ``records.TelemetrySample``.

Where the job's torch has initialised CUDA, ``with_torch_memory`` adds the CUDA
caching allocator's figures (``TORCH_MEMORY_FIELDS``) to a row at most once every
``TORCH_MEMORY_PERIOD_S``: its peaks are high-water marks, so a rare reading
loses none of them.

The NVML module is injected (``pynvml`` from nvidia-ml-py in production, a fake in
tests), so everything here runs without a GPU. A metric whose NVML call fails is
reported once through ``report(part, error)`` and never asked for again: a broken
counter costs one log line, not a stream of exceptions every 100 ms.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

NVML_FIELDS = (
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_b",
    "mem_total_b",
    "power_mw",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temp_c",
    "pcie_tx_kbs",
    "pcie_rx_kbs",
    "throttle_reasons",
    "nvlink_tx_kbs",
    "nvlink_rx_kbs",
    "gpm_sm_activity_pct",
    "gpm_sm_occupancy_pct",
    "gpm_tensor_activity_pct",
    "gpm_dram_bw_pct",
)
HOST_FIELDS = ("host_cpu_pct", "rss_b")
# Per-process fields that ``rankscope monitor`` adds to the device's fields: this
# rank's process's share of the GPU (NVML process utilisation samples) and memory.
PROCESS_FIELDS = ("proc_sm_util_pct", "proc_mem_util_pct", "proc_mem_used_b")
# torch's CUDA caching allocator on this rank's device (``TorchMemory``): bytes in
# tensors and held from the driver, now and at their highest since the process started
# (or since the job last called torch.cuda.reset_peak_memory_stats).
TORCH_MEMORY_FIELDS = (
    "cuda_alloc_b",
    "cuda_alloc_peak_b",
    "cuda_reserved_b",
    "cuda_reserved_peak_b",
)
TORCH_MEMORY_PERIOD_S = 1.0

# NVML field-value scope meaning "all NVLink links together".
_ALL_LINKS = 0xFFFFFFFF
# GPM metric ids (nvml.h), with the telemetry field each one fills.
_GPM_METRICS = (
    (2, "gpm_sm_activity_pct"),  # NVML_GPM_METRIC_SM_UTIL
    (3, "gpm_sm_occupancy_pct"),  # NVML_GPM_METRIC_SM_OCCUPANCY
    (5, "gpm_tensor_activity_pct"),  # NVML_GPM_METRIC_ANY_TENSOR_UTIL
    (10, "gpm_dram_bw_pct"),  # NVML_GPM_METRIC_DRAM_BW_UTIL
)

Report = Callable[[str, "BaseException | str"], None]


class Sampler(Protocol):
    source: str

    def sample(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _error_code(nvml: Any, exc: BaseException) -> str:
    value = getattr(exc, "value", None)
    if value is not None and value == getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4):
        return "no permission"
    if value is not None and value == getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3):
        return "not supported"
    return f"{type(exc).__name__}: {exc}"


def cuda_visible_device(local_index: int, env: dict[str, str] | None = None) -> str:
    """What CUDA device ``local_index`` of this process is in NVML's terms.

    An NVML index as a string ("3") or a UUID prefix ("GPU-8f2a..."), following
    CUDA_VISIBLE_DEVICES like the CUDA runtime does; never initialises CUDA (a
    CUDA context made here would break jobs that fork after importing torch).
    """
    env = dict(os.environ) if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return str(local_index)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if not entries:
        return str(local_index)
    return entries[local_index % len(entries)]


class NvmlSampler:
    """Samples one GPU through an injected pynvml-compatible module."""

    source = "nvml"

    def __init__(self, nvml: Any, device: str, report: Report) -> None:
        self._nvml = nvml
        self._report = report
        self._gpm_samples: list[Any] = []
        nvml.nvmlInit()
        self._initialised = True
        try:
            self._handle = self._open(device)
        except BaseException:
            self.close()
            raise
        self._disabled: set[str] = set()
        self._nvlink_prev: tuple[int, int, int] | None = None  # (ts_ns, tx_kib, rx_kib)
        self._metrics: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
            ("utilization", self._utilization),
            ("memory", self._memory),
            ("power", self._power),
            ("clocks", self._clocks),
            ("temperature", self._temperature),
            ("throttle reasons", self._throttle),
            ("pcie", self._pcie),
        ]
        if self._has_nvlink():
            self._metrics.append(("nvlink", self._nvlink))
        if self._open_gpm():
            self._metrics.append(("gpm", self._gpm))

    def _open(self, device: str) -> Any:
        nvml = self._nvml
        if device.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(device))
        # A UUID (possibly abbreviated, as CUDA_VISIBLE_DEVICES allows): match by prefix.
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            uuid = nvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            if uuid.startswith(device):
                return h
        raise LookupError(f"no GPU with UUID {device}")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"telemetry_source": "nvml"}
        try:
            name = self._nvml.nvmlDeviceGetName(self._handle)
            out["device_name"] = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            pass
        try:
            uuid = self._nvml.nvmlDeviceGetUUID(self._handle)
            out["device_uuid"] = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        except Exception:
            pass
        out["gpm"] = any(name == "gpm" for name, _ in self._metrics)
        out["nvlink"] = any(name == "nvlink" for name, _ in self._metrics)
        return out

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"ts_ns": time.time_ns(), "source": "nvml"}
        for name, read in self._metrics:
            if name in self._disabled:
                continue
            try:
                read(row)
            except Exception as e:
                self._disabled.add(name)
                self._report(f"telemetry {name}", f"disabled ({_error_code(self._nvml, e)})")
        return row

    # --- one function per NVML query; each fills its fields into ``row`` ---

    def _utilization(self, row: dict[str, Any]) -> None:
        u = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        row["gpu_util_pct"] = int(u.gpu)
        row["mem_util_pct"] = int(u.memory)

    def _memory(self, row: dict[str, Any]) -> None:
        m = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        row["mem_used_b"] = int(m.used)
        row["mem_total_b"] = int(m.total)

    def _power(self, row: dict[str, Any]) -> None:
        row["power_mw"] = int(self._nvml.nvmlDeviceGetPowerUsage(self._handle))

    def _clocks(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        row["sm_clock_mhz"] = int(nvml.nvmlDeviceGetClockInfo(self._handle, nvml.NVML_CLOCK_SM))
        row["mem_clock_mhz"] = int(nvml.nvmlDeviceGetClockInfo(self._handle, nvml.NVML_CLOCK_MEM))

    def _temperature(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        row["temp_c"] = int(nvml.nvmlDeviceGetTemperature(self._handle, nvml.NVML_TEMPERATURE_GPU))

    def _throttle(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        # "Clock event reasons" is the newer name of the same bitmask (NVML 12.x renamed it).
        get = (
            getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        row["throttle_reasons"] = int(get(self._handle))

    def _pcie(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        row["pcie_tx_kbs"] = int(
            nvml.nvmlDeviceGetPcieThroughput(self._handle, nvml.NVML_PCIE_UTIL_TX_BYTES)
        )
        row["pcie_rx_kbs"] = int(
            nvml.nvmlDeviceGetPcieThroughput(self._handle, nvml.NVML_PCIE_UTIL_RX_BYTES)
        )

    def _has_nvlink(self) -> bool:
        try:
            (v,) = self._nvml.nvmlDeviceGetFieldValues(
                self._handle, [self._nvml.NVML_FI_DEV_NVLINK_LINK_COUNT]
            )
            return int(v.nvmlReturn) == 0 and int(v.value.uiVal) > 0
        except Exception:
            return False  # no NVLink (PCIe-only GPU) or an NVML too old to say

    def _nvlink(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        tx, rx = nvml.nvmlDeviceGetFieldValues(
            self._handle,
            [
                (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, _ALL_LINKS),
                (nvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, _ALL_LINKS),
            ],
        )
        for v in (tx, rx):
            if int(v.nvmlReturn) != 0:
                raise nvml.NVMLError(int(v.nvmlReturn))
        # The counters are cumulative KiB: a rate needs two samples.
        now = time.time_ns()
        cur = (now, int(tx.value.ullVal), int(rx.value.ullVal))
        prev, self._nvlink_prev = self._nvlink_prev, cur
        if prev is not None and cur[0] > prev[0]:
            seconds = (cur[0] - prev[0]) / 1e9
            row["nvlink_tx_kbs"] = int(max(0, cur[1] - prev[1]) / seconds)
            row["nvlink_rx_kbs"] = int(max(0, cur[2] - prev[2]) / seconds)

    def _open_gpm(self) -> bool:
        nvml = self._nvml
        try:
            support = nvml.nvmlGpmQueryDeviceSupport(self._handle)
            if not support.isSupportedDevice:
                self._report("telemetry gpm", "GPM metrics not available on this GPU (Hopper+)")
                return False
            self._gpm_samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
            nvml.nvmlGpmSampleGet(self._handle, self._gpm_samples[0])
            return True
        except Exception as e:
            self._report("telemetry gpm", f"GPM metrics off ({_error_code(nvml, e)})")
            self._free_gpm()
            return False

    def _gpm(self, row: dict[str, Any]) -> None:
        nvml = self._nvml
        prev, cur = self._gpm_samples
        nvml.nvmlGpmSampleGet(self._handle, cur)
        mg = nvml.c_nvmlGpmMetricsGet_t()
        mg.version = nvml.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(_GPM_METRICS)
        mg.sample1 = prev
        mg.sample2 = cur
        for i, (metric_id, _) in enumerate(_GPM_METRICS):
            mg.metrics[i].metricId = metric_id
        nvml.nvmlGpmMetricsGet(mg)
        for i, (_, field) in enumerate(_GPM_METRICS):
            value = float(mg.metrics[i].value)
            # GPM answers NaN for a metric without data in the interval (issue 26):
            # left out, as null would be, so every telemetry line is strict JSON.
            if int(mg.metrics[i].nvmlReturn) == 0 and math.isfinite(value):
                row[field] = round(value, 2)
        # The metrics describe the interval between the two samples: slide it.
        self._gpm_samples = [cur, prev]

    def _free_gpm(self) -> None:
        for s in self._gpm_samples:
            with contextlib.suppress(Exception):
                self._nvml.nvmlGpmSampleFree(s)
        self._gpm_samples = []

    def close(self) -> None:
        self._free_gpm()
        if getattr(self, "_initialised", False):
            self._initialised = False
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


def _cpu_busy_total(stat_line: bytes) -> tuple[int, int]:
    """(busy, total) jiffies from ``/proc/stat``'s ``cpu`` line, as psutil counts them.

    Total leaves out guest and guest_nice (already inside user and nice); busy is
    total less idle and iowait.
    """
    fields = [int(x) for x in stat_line.split()[1:]]
    total = sum(fields) - sum(fields[8:10])
    return total - sum(fields[3:5]), total


class HostSampler:
    """Host CPU utilisation and this process's RSS: the telemetry of a GPU-less rank.

    On Linux each sample is two ``os.pread`` calls on descriptors kept open
    (``/proc/stat``'s first line and ``/proc/self/statm``), the same figures psutil's
    ``cpu_percent(interval=None)`` and ``memory_info().rss`` give at about a third
    of their cost (this runs ten times a second beside training); elsewhere psutil.
    """

    source = "host"

    def __init__(self) -> None:
        self._fds: tuple[int, int] | None = None
        self._page = 4096
        try:
            stat_fd = os.open("/proc/stat", os.O_RDONLY)
            try:
                statm_fd = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                os.close(stat_fd)
                raise
            self._fds = (stat_fd, statm_fd)
            self._page = os.sysconf("SC_PAGE_SIZE")
            self._last = _cpu_busy_total(self._cpu_line())
            int(os.pread(statm_fd, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            self.close()
            import psutil

            self._psutil = psutil
            self._process = psutil.Process()
            psutil.cpu_percent(interval=None)  # the first reading is meaningless: prime it

    def _cpu_line(self) -> bytes:
        assert self._fds is not None
        # The aggregate "cpu" line comes first; 512 bytes hold it on any machine.
        return os.pread(self._fds[0], 512, 0).split(b"\n", 1)[0]

    def describe(self) -> dict[str, Any]:
        return {"telemetry_source": "host"}

    def sample(self) -> dict[str, Any]:
        if self._fds is None:
            return {
                "ts_ns": time.time_ns(),
                "source": "host",
                "host_cpu_pct": round(float(self._psutil.cpu_percent(interval=None)), 1),
                "rss_b": int(self._process.memory_info().rss),
            }
        busy, total = _cpu_busy_total(self._cpu_line())
        busy0, total0 = self._last
        self._last = (busy, total)
        pct = 0.0
        if total > total0:
            pct = min(100.0, max(0.0, 100.0 * (busy - busy0) / (total - total0)))
        return {
            "ts_ns": time.time_ns(),
            "source": "host",
            "host_cpu_pct": round(pct, 1),
            "rss_b": int(os.pread(self._fds[1], 128, 0).split()[1]) * self._page,
        }

    def close(self) -> None:
        fds, self._fds = self._fds, None
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)


class TorchMemory:
    """The CUDA caching allocator's figures, read from the sampler's thread.

    Never initialises CUDA and never imports anything: it asks the job's own torch
    module, and only once ``torch.cuda.is_initialized()`` (a CUDA context made here
    would break a job that forks later). The device is this rank's by torchrun's
    convention, ``local_rank`` modulo the devices the process sees (the sampler's
    thread has its own current device, so ``current_device()`` would say 0). Any
    failure turns it off for good, said once through ``report``; the row is never
    lost for it.
    """

    def __init__(
        self,
        torch: Any,
        local_rank: int,
        report: Report,
        period_s: float = TORCH_MEMORY_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._torch = torch
        self._local_rank = local_rank
        self._report = report
        self._period_s = period_s
        self._clock = clock
        self._next = 0.0
        self._index: int | None = None
        self.disabled = False

    def read(self, row: dict[str, Any]) -> None:
        """Add ``TORCH_MEMORY_FIELDS`` to ``row`` when due and CUDA is up; never raises."""
        if self.disabled:
            return
        now = self._clock()
        if now < self._next:
            return
        try:
            cuda = self._torch.cuda
            if not cuda.is_initialized():
                return  # asked again at the next sample: the job may initialise it later
            self._next = now + self._period_s
            if self._index is None:
                self._index = self._local_rank % max(int(cuda.device_count()), 1)
            stats = cuda.memory_stats_as_nested_dict(self._index)
            allocated, reserved = stats["allocated_bytes"]["all"], stats["reserved_bytes"]["all"]
            fields = {
                "cuda_alloc_b": int(allocated["current"]),
                "cuda_alloc_peak_b": int(allocated["peak"]),
                "cuda_reserved_b": int(reserved["current"]),
                "cuda_reserved_peak_b": int(reserved["peak"]),
            }
        except Exception as e:
            self.disabled = True
            self._report("telemetry torch memory", f"disabled ({type(e).__name__}: {e})")
            return
        row.update(fields)


class WithTorchMemory:
    """A sampler whose rows also carry ``TorchMemory``'s fields when it has them."""

    def __init__(self, inner: Sampler, memory: TorchMemory) -> None:
        self.source = inner.source
        self._inner = inner
        self._memory = memory

    def sample(self) -> dict[str, Any]:
        row = self._inner.sample()
        self._memory.read(row)
        return row

    def describe(self) -> dict[str, Any]:
        return self._inner.describe()

    def close(self) -> None:
        self._inner.close()


def with_torch_memory(inner: Sampler, torch: Any, local_rank: int, report: Report) -> Sampler:
    """``inner`` with torch's allocator figures added, where the job has torch at all."""
    if torch is None or not hasattr(torch, "cuda"):
        return inner
    return WithTorchMemory(inner, TorchMemory(torch, local_rank, report))


def open_sampler(nvml: Any, device: str | None, report: Report) -> Sampler:
    """An NVML sampler for ``device`` when possible, else a host sampler (said once).

    ``nvml`` None means "import pynvml"; ``device`` None means this rank has no GPU.
    """
    if device is not None:
        try:
            if nvml is None:
                import pynvml as nvml_module

                nvml = nvml_module
            return NvmlSampler(nvml, device, report)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
        else:  # pragma: no cover - the try returns
            reason = ""
    else:
        reason = "no GPU"
    report("telemetry", f"NVML unavailable ({reason}); recording host CPU and RSS instead")
    return HostSampler()
