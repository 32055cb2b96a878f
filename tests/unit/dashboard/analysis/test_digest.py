"""Rank digests: what the cross-rank analysis reads instead of every event.

Checked on the real H200 traces: the digest's precomputed lookups agree with
the interval algebra they replace, a digest survives its encoding, a report
from cached digests equals the report from the events and reads no event, and
a digest that went bad or whose inputs changed is made again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, data_path

from rankscope.dashboard.analysis import digest as dg
from rankscope.dashboard.analysis.activity import rank_activity
from rankscope.dashboard.analysis.analyse import analyse
from rankscope.dashboard.analysis.diagnosis import COMPONENT_NAMES
from rankscope.dashboard.analysis.report import build_report
from rankscope.dashboard.ingest.run import load_run

DDP4 = data_path("reference_runs", "h200_ddp4_straggler")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(d))
    monkeypatch.setenv("RANKSCOPE_CACHE_MIN_BYTES", "0")
    return d


@pytest.mark.parametrize(
    "run_path", [DDP4, data_path("public_traces", "hta", "cpu_only")], ids=["gpu", "cpu_only"]
)
def test_coverage_lookups_equal_the_interval_algebra_on_a_real_trace(
    run_path: Path, cache_dir: Path
) -> None:
    """Random (lo, hi) pairs of the digest's points: the lookup gives the ns the
    interval sets give, for every component, in a GPU run and a CPU-only one."""
    run = load_run(run_path)
    rng = np.random.default_rng(0)
    for rd in run.ranks.values():
        d = dg.compute(rd)
        comps = dg.components(rank_activity(rd), run_has_gpu=d.has_gpu)
        lookup = d.coverage(d.has_gpu)
        assert len(d.cov_points) > 10  # collectives' starts and ends, window starts
        lo = rng.choice(d.cov_points, 500)
        hi = rng.choice(d.cov_points, 500)
        for name in COMPONENT_NAMES:
            assert np.array_equal(lookup.covered(name, lo, hi), comps.covered(name, lo, hi)), name
        assert sum(comps.covered(n, lo, hi).sum() for n in COMPONENT_NAMES) > 0
        # A time the digest does not hold is a KeyError, never a wrong number.
        with pytest.raises(KeyError):
            lookup.covered("ops", lo[:3], lo[:3] + 1)


def test_a_digest_survives_its_encoding(cache_dir: Path) -> None:
    rd = load_run(DDP4).ranks[1]
    d = dg.compute(rd)
    back = dg.decode(dg.encode(d))
    assert back.windows == d.windows and back.source == d.source == "profiler"
    assert back.hta == d.hta and back.profiler_step_names == d.profiler_step_names
    for name in d.breakdown.cols:
        assert np.array_equal(back.breakdown[name], d.breakdown[name])
    assert back.comms.vocab == d.comms.vocab
    for name in d.comms.cols:
        assert np.array_equal(back.comms[name], d.comms[name])
    assert back.kernels.names == d.kernels.names
    assert np.array_equal(back.kernels.dur_ns, d.kernels.dur_ns)
    assert np.array_equal(back.util.stream_busy_ns, d.util.stream_busy_ns)
    with pytest.raises(ValueError):
        dg.decode(dg.encode(d)[:-40])  # truncated: refused, not half-read


def test_a_warm_report_reads_digests_only_and_equals_the_cold_one(cache_dir: Path) -> None:
    cold_run = load_run(DDP4)
    cold = build_report(analyse(cold_run))
    assert len(list((cache_dir / "digests").iterdir())) == 4

    warm_run = load_run(DDP4)
    warm = build_report(analyse(warm_run))
    assert warm == cold
    assert cold.stragglers[0].rank == 1  # the README's ground truth
    # No rank's events were read: the report came from the four digests.
    assert not any(rd.tables_loaded for rd in warm_run.ranks.values())

    # The same with a step range and a subset of ranks, from the same digests.
    a = build_report(analyse(load_run(DDP4, ranks=[0, 1, 3]), "3:5"))
    cache_free = load_run(DDP4, ranks=[0, 1, 3])
    for rd in cache_free.ranks.values():
        rd.digest = dg.compute(rd)
    assert build_report(analyse(cache_free, "3:5")) == a


def test_a_corrupt_digest_is_made_again(cache_dir: Path) -> None:
    first = build_report(analyse(load_run(DDP4)))
    files = sorted((cache_dir / "digests").iterdir())
    files[0].write_bytes(b"\x93not a digest")
    files[1].write_bytes(files[1].read_bytes()[:100])
    again = load_run(DDP4)
    assert build_report(analyse(again)) == first
    for f in files[:2]:
        dg.decode(f.read_bytes())  # rewritten whole


def test_a_digest_follows_its_traces_and_telemetry_stays_current(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A job still running keeps appending to its step timer and telemetry: the digest
    (windows from the trace) stays good, the telemetry figures follow the file, and
    a changed trace makes a new digest."""
    run_dir = tmp_path / "run"
    shutil.copytree(REPO / "sample_traces" / "ddp3_dataloader_straggler", run_dir)
    run = load_run(run_dir)
    first = build_report(analyse(run))
    keys = {r: dg.digest_key(rd) for r, rd in run.ranks.items()}

    (run_dir / "rank1.steps.jsonl").open("a").write("\n")
    tel = run_dir / "rank1.telemetry.jsonl"
    last = tel.read_text().splitlines()[-1]
    tel.open("a").write(last + "\n")
    again = load_run(run_dir)
    assert {r: dg.digest_key(rd) for r, rd in again.ranks.items()} == keys
    second = build_report(analyse(again))
    assert not any(rd.tables_loaded for rd in again.ranks.values())  # digests still good
    samples = {r.rank: r.telemetry.samples for r in second.ranks if r.telemetry}
    assert samples[1] == {r.rank: r.telemetry.samples for r in first.ranks if r.telemetry}[1] + 1
    assert second.stragglers == first.stragglers

    trace = next(run_dir.glob("rank1.*.pt.trace.json.gz"))
    os.utime(trace, ns=(1, 1))
    moved = load_run(run_dir)
    assert dg.digest_key(moved.ranks[1]) != keys[1]
    assert dg.digest_key(moved.ranks[0]) == keys[0]
    assert build_report(analyse(moved)).stragglers == first.stragglers
