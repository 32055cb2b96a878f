"""``rankscope export --format perfetto`` on real runs, read back with a small reader of our own.

Perfetto's trace_processor downloads a binary at first use, so the checks here are
what its JSON importer relies on: strict JSON, a process per rank with named
threads, slices in time order per track, one flow chain per collective instance
through every rank, counters where telemetry exists, the verdict as instants, and
ranks aligned so that a collective's aligned start order is its arrival order.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rankscope.dashboard.analysis.analyse import analyse
from rankscope.dashboard.analysis.report import build_report
from rankscope.dashboard.analysis.timeline import arrival_lag
from rankscope.dashboard.cli import main
from rankscope.dashboard.export.perfetto import write_perfetto
from rankscope.dashboard.ingest.run import load_run

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample_traces" / "ddp3_dataloader_straggler"
REFERENCE = REPO / "tests" / "data" / "reference_runs" / "h200_ddp4_straggler"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Trace:
    """A Chrome JSON trace read back: events grouped the way a viewer groups them."""

    def __init__(self, path: Path) -> None:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="ascii") as f:
            doc = json.load(f, parse_constant=_no_constants)
        self.events: list[dict[str, Any]] = doc["traceEvents"]
        self.meta: dict[str, Any] = doc["metadata"]["rankscope"]
        self.processes = {
            e["pid"]: e["args"]["name"] for e in self.events if e["name"] == "process_name"
        }
        self.threads = {
            (e["pid"], e["tid"]): e["args"]["name"]
            for e in self.events
            if e["ph"] == "M" and e["name"] == "thread_name"
        }
        self.slices: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        self.counters: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        self.flows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for e in self.events:
            if e["ph"] == "X":
                self.slices[(e["pid"], e["tid"])].append(e)
            elif e["ph"] == "C":
                self.counters[(e["pid"], e["name"])].append(e)
            elif e["ph"] in "stf":
                self.flows[e["id"]].append(e)
        self.instants = [e for e in self.events if e["ph"] == "i"]

    def collective(self, rank: int, instance: int) -> dict[str, Any]:
        (hit,) = [
            e
            for (pid, _), track in self.slices.items()
            if pid == rank
            for e in track
            if e["cat"] == "collective" and e["args"]["instance"] == instance
        ]
        return hit


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Trace, Any]]:
    out = {}
    for name, run_path in (("sample", SAMPLE), ("reference", REFERENCE)):
        path = tmp_path_factory.mktemp(name) / "trace.json"
        assert main(["export", str(run_path), "--format", "perfetto", "-o", str(path)]) == 0
        analysis = analyse(load_run(run_path))
        out[name] = (Trace(path), analysis)
    return out


@pytest.mark.parametrize("name", ["sample", "reference"])
def test_a_process_per_rank_with_its_threads(exported: dict, name: str) -> None:
    trace, analysis = exported[name]
    ranks = sorted(analysis.run.ranks)
    assert trace.processes == {r: f"rank {r}" for r in ranks}
    for r in ranks:
        names = {n for (pid, _), n in trace.threads.items() if pid == r}
        assert {"steps", "collectives"} <= names
        assert any(n.startswith("host thread ") for n in names)
        if analysis.has_gpu:
            assert any(n.startswith("GPU 0 stream ") for n in names)
        # every host range and GPU activity of the rank's trace is there
        rd = analysis.run.ranks[r]
        n_slices = sum(len(t) for (pid, _), t in trace.slices.items() if pid == r)
        assert n_slices >= len(rd.cpu) + len(rd.gpu)
        steps = [e["name"] for e in trace.slices[(r, 1_000_000_000)]]
        assert {f"step {s}" for s in analysis.steps} <= set(steps)


@pytest.mark.parametrize("name", ["sample", "reference"])
def test_every_track_is_in_time_order(exported: dict, name: str) -> None:
    trace, _ = exported[name]
    for track in [*trace.slices.values(), *trace.counters.values()]:
        ts = [e["ts"] for e in track]
        assert ts == sorted(ts)
        assert min(ts) >= 0
    assert all(e["dur"] >= 0 for t in trace.slices.values() for e in t)


@pytest.mark.parametrize("name", ["sample", "reference"])
def test_one_flow_chain_per_collective_through_every_rank(exported: dict, name: str) -> None:
    trace, analysis = exported[name]
    matched = analysis.collectives
    instances = sorted(set(matched["instance"].tolist()))
    assert sorted(i - 1 for i in trace.flows) == instances
    assert trace.meta["collective_flows"] == len(instances)
    for inst in instances:
        chain = sorted(trace.flows[inst + 1], key=lambda e: e["ts"])
        ranks = matched["rank"][matched["instance"] == inst]
        assert sorted(e["pid"] for e in chain) == sorted(ranks.tolist())
        assert [e["ph"] for e in chain] == ["s"] + ["t"] * (len(chain) - 2) + ["f"]
        # each point sits on that rank's slice of the instance (where a viewer binds it)
        for e in chain:
            s = trace.collective(e["pid"], inst)
            assert s["tid"] == e["tid"] and s["ts"] <= e["ts"] <= s["ts"] + s["dur"]
        # the chain ends on the rank everyone waited for (or one that arrived within
        # 2 ms of it: aligned clocks are that close, waits are exact)
        m = matched["instance"] == inst
        last = int(matched["last_rank"][m][0])
        waits = dict(zip(matched["rank"][m].tolist(), matched["wait_ms"][m].tolist(), strict=True))
        assert waits[chain[-1]["pid"]] - waits[last] < 2.0


@pytest.mark.parametrize("name", ["sample", "reference"])
def test_aligned_starts_order_ranks_by_arrival(exported: dict, name: str) -> None:
    """After alignment, how much later a rank starts a collective than the first rank
    is its arrival lag, which the analysis measures from waits alone (skew-free)."""
    trace, analysis = exported[name]
    lags = arrival_lag(analysis.collectives)
    residuals, spreads, lateness = [], [], []
    for inst in sorted(set(lags["instance"].tolist())):
        m = lags["instance"] == inst
        ranks, lag_ms = lags["rank"][m].tolist(), lags["lag_ms"][m]
        slices = [trace.collective(r, inst) for r in ranks]
        starts = np.array([s["ts"] for s in slices]) / 1e3
        ends = np.array([s["ts"] + s["dur"] for s in slices]) / 1e3
        residuals.extend((starts - starts.min()) - (lag_ms - lag_ms.min()))
        lateness.append(lag_ms.max() - lag_ms.min())
        # everyone leaves a collective when the last rank arrives: the ends meet
        spreads.append(ends.max() - ends.min())
    # On the H200 run within 2 ms everywhere. The 3-rank sample ran on a loaded
    # 2-core VM, where a descheduled rank leaves a gloo op late now and then (its
    # residual is ~4-5 ms under any alignment, measured ones included): there the
    # aligned starts must still explain the straggler's lateness to within a tenth.
    bound = 2.0 if name == "reference" else 0.1 * float(np.median(lateness))
    assert np.median(np.abs(residuals)) < bound  # ms
    if name == "reference":
        # (the sample's gloo ops end up to ~30 ms apart where a rank was descheduled)
        assert np.max(np.abs(residuals)) < 2.0 and np.max(spreads) < 3.0
    offsets = trace.meta["alignment"]["offsets_ns"]
    assert trace.meta["alignment"]["method"] == "step_start"
    assert set(offsets) == {str(r) for r in analysis.run.ranks} and offsets["0"] == 0


def test_counters_where_telemetry_exists(exported: dict) -> None:
    trace, analysis = exported["reference"]  # NVML samples of every rank
    for r in analysis.run.ranks:
        assert len(trace.counters[(r, "gpu_util_pct")]) == len(analysis.run.ranks[r].telemetry)
        assert len(trace.counters[(r, "power_mw")]) > 10
    sample, _ = exported["sample"]  # host samples (CPU-only run)
    assert {name for _, name in sample.counters} >= {"host_cpu_pct", "rss_b"}


@pytest.mark.parametrize("name", ["sample", "reference"])
def test_the_verdict_as_instants(exported: dict, name: str) -> None:
    trace, analysis = exported[name]
    report = build_report(analysis)
    assert report.stragglers and report.stragglers[0].rank == 1
    marks = {(e["pid"], e["name"]) for e in trace.instants}
    assert {(s.rank, f"straggler: rank {s.rank}") for s in report.stragglers} <= marks
    first = next(e for e in trace.instants if e["pid"] == 1)
    assert first["args"]["verdict"].startswith("Rank 1 is the straggler (data loading")


def test_steps_and_ranks_narrow_the_trace_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    assert (
        main(["export", str(REFERENCE), "-o", str(path), "--ranks", "1,3", "--steps", "4:5"]) == 0
    )
    trace = Trace(path)
    assert sorted(trace.processes) == [1, 3]
    assert trace.meta["steps"] == [4, 5]
    steps = {e["name"] for e in trace.slices[(1, 1_000_000_000)]}
    assert steps == {"step 4", "step 5"}


def test_a_trace_past_the_bound_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "t.json"
    code = main(["export", str(REFERENCE), "-o", str(path), "--max-gb", "0.005"])
    assert code == 2 and not path.exists() and not list(tmp_path.iterdir())
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rankscope export: the trace would be about 0.0")
    assert "--ranks" in err[-1] and "Traceback" not in "\n".join(err)


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "t.json")]) == 2
    assert main(["export", str(SAMPLE), "-o", str(tmp_path / "no" / "t.json")]) == 2
    assert main(["export", str(SAMPLE), "-o", str(tmp_path / "t.json"), "--steps", "x"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("rankscope export: ") >= 3


def test_clock_offset_alignment_uses_the_measured_offsets(tmp_path: Path) -> None:
    run = load_run(SAMPLE)
    analysis = analyse(run)
    summary = write_perfetto(
        analysis, build_report(analysis), tmp_path / "t.json", align="clock_offset"
    )
    measured = {r: rd.meta["manifest"]["clock_offset_ns"] for r, rd in run.ranks.items()}
    assert summary.alignment.offsets_ns == measured
    assert Trace(tmp_path / "t.json").meta["alignment"]["method"] == "clock_offset"
