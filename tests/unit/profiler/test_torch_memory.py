"""torch's CUDA allocator figures in telemetry rows (``telemetry.TorchMemory``), with a fake torch.

The guard is what matters without a GPU: nothing is asked before the job has
initialised CUDA, the device is this rank's (local rank modulo the visible
devices), a reading comes at most once a period, and any failure turns it off
for good with one report, the row kept.
"""

from __future__ import annotations

from typing import Any

from rankscope.profiler.telemetry import (
    TORCH_MEMORY_FIELDS,
    TorchMemory,
    WithTorchMemory,
    with_torch_memory,
)


class FakeCuda:
    def __init__(self, initialised: bool = False, devices: int = 4) -> None:
        self.initialised = initialised
        self.devices = devices
        self.asked: list[int] = []
        self.fail: Exception | None = None

    def is_initialized(self) -> bool:
        return self.initialised

    def device_count(self) -> int:
        return self.devices

    def memory_stats_as_nested_dict(self, device: int) -> dict[str, Any]:
        self.asked.append(device)
        if self.fail is not None:
            raise self.fail
        return {
            "allocated_bytes": {"all": {"current": 10, "peak": 30, "allocated": 99}},
            "reserved_bytes": {"all": {"current": 40, "peak": 50}},
        }


class FakeTorch:
    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _memory(cuda: FakeCuda, clock: Clock, reports: list[tuple[str, Any]]) -> TorchMemory:
    return TorchMemory(
        FakeTorch(cuda), 6, lambda part, e: reports.append((part, e)), period_s=1.0, clock=clock
    )


def test_nothing_is_asked_before_cuda_is_initialised() -> None:
    cuda, clock, reports = FakeCuda(initialised=False), Clock(), []
    m = _memory(cuda, clock, reports)
    row: dict[str, Any] = {"ts_ns": 1}
    m.read(row)
    assert row == {"ts_ns": 1} and cuda.asked == [] and reports == []
    cuda.initialised = True  # the job initialises CUDA later: the next sample reads it
    m.read(row)
    assert cuda.asked == [2]  # local rank 6 of 4 visible devices
    assert row == {
        "ts_ns": 1,
        "cuda_alloc_b": 10,
        "cuda_alloc_peak_b": 30,
        "cuda_reserved_b": 40,
        "cuda_reserved_peak_b": 50,
    }
    assert set(row) - {"ts_ns"} == set(TORCH_MEMORY_FIELDS)


def test_at_most_once_a_period() -> None:
    cuda, clock, reports = FakeCuda(initialised=True), Clock(), []
    m = _memory(cuda, clock, reports)
    rows: list[dict[str, Any]] = []
    for dt in (0.0, 0.1, 0.5, 1.0, 1.2, 2.0):
        clock.now = 100.0 + dt
        rows.append({})
        m.read(rows[-1])
    assert [bool(r) for r in rows] == [True, False, False, True, False, True]


def test_a_failure_turns_it_off_once_and_keeps_the_row() -> None:
    cuda, clock, reports = FakeCuda(initialised=True), Clock(), []
    cuda.fail = RuntimeError("CUDA error: device-side assert")
    m = _memory(cuda, clock, reports)
    row: dict[str, Any] = {"ts_ns": 1, "rss_b": 5}
    m.read(row)
    clock.now += 10
    m.read(row)
    assert row == {"ts_ns": 1, "rss_b": 5}
    assert m.disabled and len(cuda.asked) == 1
    assert reports == [
        ("telemetry torch memory", "disabled (RuntimeError: CUDA error: device-side assert)")
    ]


def test_a_malformed_answer_is_a_failure_too() -> None:
    cuda, clock, reports = FakeCuda(initialised=True), Clock(), []
    cuda.memory_stats_as_nested_dict = lambda device: {}  # type: ignore[method-assign]
    m = _memory(cuda, clock, reports)
    row: dict[str, Any] = {}
    m.read(row)
    assert row == {} and m.disabled and reports[0][1].startswith("disabled (KeyError")


class Inner:
    source = "host"

    def __init__(self) -> None:
        self.closed = False

    def sample(self) -> dict[str, Any]:
        return {"ts_ns": 1, "source": "host", "rss_b": 5}

    def describe(self) -> dict[str, Any]:
        return {"telemetry_source": "host"}

    def close(self) -> None:
        self.closed = True


def test_the_wrapped_sampler_adds_the_fields_and_passes_the_rest_on() -> None:
    inner = Inner()
    s = with_torch_memory(inner, FakeTorch(FakeCuda(initialised=True)), 0, lambda p, e: None)
    assert isinstance(s, WithTorchMemory) and s.source == "host"
    assert s.sample()["cuda_alloc_peak_b"] == 30
    assert s.describe() == {"telemetry_source": "host"}
    s.close()
    assert inner.closed


def test_no_torch_no_wrapper() -> None:
    inner = Inner()
    assert with_torch_memory(inner, None, 0, lambda p, e: None) is inner
