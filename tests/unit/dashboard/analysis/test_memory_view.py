"""The memory view (``analysis.memory``): figures a user checks by hand, and its rules.

Hand-built ``memory`` tables (ns, bytes) with two step windows, torch allocator peaks
from telemetry, and the real H200 reference run (``tests/data``), whose rank 0
trace holds 5,472 ``[memory]`` events.
"""

from __future__ import annotations

import numpy as np
from conftest import DATA

from rankscope.dashboard.analysis import memory as mem
from rankscope.dashboard.analysis.analyse import analyse
from rankscope.dashboard.analysis.findings import RunFacts, memory_rule
from rankscope.dashboard.analysis.results import FieldStats, TelemetrySummary
from rankscope.dashboard.ingest.run import RankData, load_run
from rankscope.dashboard.ingest.table import Table

MiB, GiB = 1 << 20, 1 << 30
WINDOWS = {5: (100, 200), 6: (200, 300), 7: (300, 400)}


def _rank(rows: list[tuple[int, int, int, int]], device: int = 0, rank: int = 0) -> RankData:
    """``rows``: (ts ns, allocated, reserved, bytes) on CUDA ``device``."""
    ts, alloc, res, change = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    n = len(rows)
    rd = RankData(rank, [], {"device_memory": {"0": 80 * GiB}})
    assert rd._tables is not None
    rd._tables["memory"] = Table(
        {
            "ts": ts,
            "device_type": np.ones(n, dtype=np.int64),
            "device_id": np.full(n, device, dtype=np.int64),
            "allocated": alloc,
            "reserved": res,
            "bytes": change,
        }
    )
    return rd


# Before step 5 the level is 1 GiB (the first event adds 1 GiB to it: 2 GiB after it).
# Step 5 peaks at 3 GiB, step 6 begins at 1 GiB and peaks at 2.5 GiB, step 7 begins at
# 1 GiB and sees no event.
STEADY = [
    (110, 2 * GiB, 4 * GiB, 1 * GiB),
    (150, 3 * GiB, 4 * GiB, 1 * GiB),
    (190, 1 * GiB, 4 * GiB, -2 * GiB),
    (250, 5 * GiB // 2, 5 * GiB, 3 * GiB // 2),
    (290, 1 * GiB, 5 * GiB, -3 * GiB // 2),
]


def test_sums_per_window_carry_the_level_in() -> None:
    s = mem.memory_sums(_rank(STEADY), WINDOWS)
    assert s is not None
    assert s.device_type.tolist() == [1] and s.device_id.tolist() == [0]
    assert s.events.tolist() == [[3, 2, 0]]
    assert s.start_allocated.tolist() == [[1 * GiB, 1 * GiB, 1 * GiB]]
    assert s.peak_allocated.tolist() == [[3 * GiB, 5 * GiB // 2, 1 * GiB]]
    assert s.peak_reserved.tolist() == [[4 * GiB, 5 * GiB, 5 * GiB]]


def test_no_memory_events_no_sums() -> None:
    assert mem.memory_sums(RankData(0, [], {}), WINDOWS) is None


def _result(ranks: dict[int, list[tuple[int, int, int, int]]]) -> mem.MemoryResult:
    rds = {r: _rank(rows, rank=r) for r, rows in ranks.items()}
    return mem.memory_result(
        {r: mem.memory_sums(rd, WINDOWS) for r, rd in rds.items()},
        {r: rd.meta for r, rd in rds.items()},
        {},
        list(WINDOWS),
    )


def _scaled(rows: list[tuple[int, int, int, int]], k: float) -> list[tuple[int, int, int, int]]:
    return [(t, int(a * k), int(r * k), int(b * k)) for t, a, r, b in rows]


def test_device_figures_capacity_and_headroom() -> None:
    (d,) = _result({0: STEADY}).devices
    assert (d.rank, d.device, d.source) == (0, "cuda:0", "trace")
    assert (d.peak_allocated_b, d.peak_reserved_b) == (3 * GiB, 5 * GiB)
    assert (d.capacity_b, d.headroom_b, d.reserved_pct) == (80 * GiB, 75 * GiB, 6.2)
    assert (d.growth_b, d.events) == (0, 5)


def test_balanced_ranks_raise_nothing() -> None:
    m = _result({0: STEADY, 1: _scaled(STEADY, 1.1), 2: STEADY, 3: _scaled(STEADY, 0.95)})
    assert (m.imbalance, m.near_limit, m.growth) == ([], [], [])
    assert memory_rule(_facts(m)) == []


def test_a_rank_well_above_the_others_median_is_named() -> None:
    m = _result({0: STEADY, 1: STEADY, 2: _scaled(STEADY, 1.6), 3: STEADY})
    (imb,) = m.imbalance
    assert (imb.rank, imb.peak_allocated_b, imb.others_median_b, imb.ratio) == (
        2,
        int(4.8 * GiB),
        3 * GiB,
        1.6,
    )
    (f,) = memory_rule(_facts(m))
    assert f.kind == "memory_imbalance" and f.ranks == [2] and f.severity == "low"
    assert f.title == "Rank 2 peaks at 4.8 GiB allocated (GPU), 1.6x the others' median 3.0 GiB"


def test_imbalance_needs_both_the_ratio_and_the_floor() -> None:
    small = _scaled(STEADY, 1 / 16)  # peaks of 192 MiB: 2x is only 192 MiB more
    m = _result({0: small, 1: _scaled(small, 2.0)})
    assert m.imbalance == []
    near = _scaled(STEADY, 1.2)  # 600 MiB more, but only 1.2x
    assert _result({0: STEADY, 1: near}).imbalance == []


def test_a_gpu_near_its_limit() -> None:
    full = [(110, 60 * GiB, 74 * GiB, 60 * GiB), (150, 1 * GiB, 74 * GiB, -59 * GiB)]
    m = _result({0: STEADY, 1: full})
    assert [(d.rank, d.reserved_pct, d.headroom_b) for d in m.near_limit] == [(1, 92.5, 6 * GiB)]
    kinds = {f.kind: f for f in memory_rule(_facts(m))}
    near = kinds["memory_near_limit"]
    assert near.ranks == [1] and near.severity == "medium"
    assert near.title == "GPU memory near the limit on rank 1: up to 92% reserved"
    assert "74.0 GiB reserved of 80.0 GiB (6.0 GiB headroom)" in near.detail


def test_growth_from_step_to_step() -> None:
    leak = [(150, 2 * GiB, 4 * GiB, 1 * GiB), (250, 3 * GiB, 4 * GiB, 1 * GiB),
            (350, 4 * GiB, 5 * GiB, 1 * GiB)]  # fmt: skip
    m = _result({0: leak})
    (g,) = m.growth
    assert (g.rank, g.first_step, g.last_step, g.start_b, g.end_b) == (0, 5, 7, 1 * GiB, 3 * GiB)
    assert (g.rising_steps, g.of_steps) == (2, 2)
    (f,) = memory_rule(_facts(m))
    assert f.title == "Rank 0's allocated GPU memory grew 2.0 GiB over steps 5-7"


def test_a_one_off_rise_in_the_first_step_is_not_growth() -> None:
    once = [(150, 3 * GiB, 4 * GiB, 2 * GiB)]  # the optimizer's state, made once
    m = _result({0: once})
    assert m.devices[0].growth_b == 2 * GiB and m.growth == []


def _tel(**maxes: float) -> TelemetrySummary:
    return TelemetrySummary(10, 10, {k: FieldStats(mean=v, max=v) for k, v in maxes.items()})


def test_the_light_layer_judges_when_no_trace_has_memory_events() -> None:
    tel = {
        0: _tel(cuda_alloc_peak_b=10 * GiB, cuda_reserved_peak_b=12 * GiB, mem_total_b=80 * GiB),
        1: _tel(cuda_alloc_peak_b=16 * GiB, cuda_reserved_peak_b=18 * GiB, mem_total_b=80 * GiB),
        2: _tel(rss_b=3 * GiB),
    }
    m = mem.memory_result({}, {}, tel, [5])
    assert m.gpu_source == "light_layer"
    assert [(d.rank, d.device) for d in m.devices] == [(0, "cuda"), (1, "cuda"), (2, "host")]
    (imb,) = m.imbalance
    assert (imb.rank, imb.ratio, imb.source) == (1, 1.6, "light_layer")
    assert m.devices[1].headroom_b == 62 * GiB


def test_rss_alone_is_shown_but_no_memory_data() -> None:
    m = mem.memory_result({}, {}, {0: _tel(rss_b=GiB), 1: _tel(rss_b=9 * GiB)}, [5])
    assert not m.has_data and m.imbalance == []


def _facts(m: mem.MemoryResult) -> RunFacts:
    return RunFacts(
        per_rank={}, stragglers=[], utilisation={}, has_gpu=True, step_ms=10.0, memory=m
    )


def test_the_h200_reference_run() -> None:
    a = analyse(load_run(DATA / "reference_runs" / "h200_ddp2_balanced"))
    m = a.memory
    gpu = {d.rank: d for d in m.devices if d.device == "cuda:0"}
    assert set(gpu) == {0, 1}
    for d in gpu.values():
        assert d.source == "trace" and d.events == 4848  # of 5,472: the rest are CPU events
        assert d.peak_allocated_b == 1_112_335_872 and d.peak_reserved_b == 1_356_857_344
        assert d.capacity_b == 150_109_880_320
        assert d.headroom_b == 150_109_880_320 - 1_356_857_344 and d.reserved_pct == 0.9
    assert (m.imbalance, m.near_limit, m.growth) == ([], [], [])
    assert not [f for f in a.findings if f.kind.startswith("memory")]
