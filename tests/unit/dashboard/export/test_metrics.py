"""``rankscope metrics``' exposition on a small hand-built run, checked by hand.

Two ranks of four steps, written with the collector's own record Structs: rank 0's
steps take 100, 100, 100, 110 ms, rank 1's 100, 100, 100, 120 ms (20 ms of it in
the DataLoader); one all_reduce a step, rank 1 issuing it 5 ms after rank 0 on rank
0's clock (its own clock runs 1 ms ahead: ``clock_offset_ns``). The exposition is
parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rankscope.dashboard.cli import main
from rankscope.dashboard.export import prometheus
from rankscope.dashboard.export.live import RunTail, TailFile
from rankscope.profiler import evidence, exporter, records, rundir
from rankscope.profiler.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT

parser = pytest.importorskip("prometheus_client.parser")

MS = 1_000_000
T0 = 1_735_732_800 * 1_000_000_000
STEP_MS = {0: [100, 100, 100, 110], 1: [100, 100, 100, 120]}
OFFSET = {0: 0, 1: 1 * MS}
REPO = Path(__file__).resolve().parents[4]


def _steps(rank: int, durations: list[int], first: int = 0) -> bytes:
    rows = []
    for k, ms in enumerate(durations, first):
        start = T0 + k * 200 * MS + OFFSET[rank]
        data = 20 * MS if rank == 1 and k == 3 else 1 * MS
        rows.append(records.StepRecord(k, start, start + ms * MS, data_ns=data))
    return b"".join(records.encode_line(r) for r in rows)


def _colls(rank: int, seqs: range) -> bytes:
    rows = []
    for k in seqs:
        enqueue = T0 + k * 200 * MS + 90 * MS + (5 * MS if rank == 1 else 0) + OFFSET[rank]
        rows.append(
            records.CollectiveRecord(
                k, "0", "default_pg", "all_reduce", False, 4000, enqueue, None, None, None, "done"
            )
        )
    return b"".join(records.encode_line(r) for r in rows)


def _progress(rank: int, state: str) -> evidence.Progress:
    return evidence.Progress(
        schema=evidence.PROGRESS_SCHEMA, rank=rank, world_size=2, pid=1, host=f"node{rank}",
        attempt=0, collector_start_ns=T0, ts_ns=T0, state=state,  # type: ignore[arg-type]
        threshold_s=60.0, step=evidence.StepState(last_step=3),
    )  # fmt: skip


def make_run(run: Path) -> Path:
    run.mkdir()
    rundir.write_json_atomic(
        run / rundir.RUN_MANIFEST, {"schema": rundir.RUN_SCHEMA, "world_size": 2}
    )
    for rank in (0, 1):
        meta = records.RankMeta(rank, world_size=2, host=f"node{rank}")
        rundir.write_json_atomic(
            rundir.rank_meta_path(run, rank),
            {**records.as_dict(meta), "clock_offset_ns": OFFSET[rank], "device_name": "cpu"},
        )
        header = records.encode_line(records.Header(rundir.STEPS_SCHEMA, rank))
        rundir.steps_path(run, rank).write_bytes(header + _steps(rank, STEP_MS[rank]))
        rundir.collectives_path(run, rank).write_bytes(_colls(rank, range(4)))
        evidence.write_progress(
            evidence.progress_path(run, rank), _progress(rank, "stalled" if rank else "running")
        )
    sample = records.TelemetrySample(
        T0, source="nvml", gpu_util_pct=50, mem_used_b=2_000_000_000, throttle_reasons=4
    )
    rundir.telemetry_path(run, 0).write_bytes(records.encode_line(sample))
    return run


def scrape(run: Path, job: str = "exp", host: str = "node") -> dict[tuple[str, str], float]:
    """(sample name, rank or "") -> value, from the parsed exposition."""
    text = prometheus.exposition(prometheus.registry_for(run, job, verdict_every_s=0))
    out: dict[tuple[str, str], float] = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            assert s.labels["job"] == job
            if "rank" in s.labels:
                assert s.labels["host"] in (host, f"{host}{s.labels['rank']}")
            name = s.name
            if name == "rankscope_rank_state":
                if not s.value:
                    continue
                name += ":" + s.labels["rankscope_rank_state"]
            out[(name, s.labels.get("rank", ""))] = s.value
    return out


def test_exposition_holds_the_hand_checked_values(tmp_path: Path) -> None:
    m = scrape(make_run(tmp_path / "run"))
    assert m[("rankscope_last_step", "0")] == m[("rankscope_last_step", "1")] == 3
    assert m[("rankscope_step_seconds", "0")] == pytest.approx(0.110)
    assert m[("rankscope_step_seconds", "1")] == pytest.approx(0.120)
    assert m[("rankscope_step_median_seconds", "1")] == pytest.approx(0.100)
    assert m[("rankscope_data_wait_seconds", "1")] == pytest.approx(0.020)
    assert m[("rankscope_data_wait_median_seconds", "1")] == pytest.approx(0.001)
    # rank 1 arrives 5 ms after rank 0 once its clock's 1 ms lead is taken off
    assert m[("rankscope_collective_lag_seconds", "0")] == 0.0
    assert m[("rankscope_collective_lag_seconds", "1")] == pytest.approx(0.005)
    assert m[("rankscope_collective_lag_median_seconds", "1")] == pytest.approx(0.005)
    assert m[("rankscope_rank_state:running", "0")] == 1
    assert m[("rankscope_rank_state:stalled", "1")] == 1
    assert m[("rankscope_gpu_utilization_ratio", "0")] == pytest.approx(0.5)
    assert m[("rankscope_gpu_memory_used_bytes", "0")] == 2e9
    assert m[("rankscope_gpu_throttle_reasons", "0")] == 4
    assert m[("rankscope_gpu_throttled", "0")] == 1
    assert ("rankscope_gpu_utilization_ratio", "1") not in m  # rank 1 wrote no telemetry
    assert m[("rankscope_world_size", "")] == 2
    assert m[("rankscope_ranks_reporting", "")] == 2
    assert m[("rankscope_job_finished", "")] == 0
    assert ("rankscope_job_exit_code", "") not in m


def test_refresh_reads_only_complete_new_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    tail = RunTail(run, verdict_every_s=0)
    assert {r.rank: r.last_step for r in tail.refresh().ranks} == {0: 3, 1: 3}
    more = _steps(0, [130, 140], first=4)
    with rundir.steps_path(run, 0).open("ab") as f:
        f.write(more[:-10])  # step 5's line is still being written
    snap = tail.refresh()
    assert snap.ranks[0].last_step == 4 and snap.ranks[0].step_s == pytest.approx(0.130)
    with rundir.steps_path(run, 0).open("ab") as f:
        f.write(more[-10:])
    snap = tail.refresh()
    assert snap.ranks[0].last_step == 5 and snap.ranks[0].step_s == pytest.approx(0.140)
    # the median counts every step kept: 100, 100, 100, 110, 130, 140
    assert snap.ranks[0].step_median_s == pytest.approx(0.105)


def test_a_file_grown_past_its_tail_is_read_from_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "rank0.steps.jsonl"
    path.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(100)))  # 10-11 bytes a line
    tf = TailFile(path, tail=50)
    lines = tf.read()
    assert lines[-1] == b'{"n": 99}' and 3 <= len(lines) <= 5
    assert all(ln.startswith(b'{"n": ') for ln in lines)  # the torn first line dropped
    path.write_bytes(b'{"n": 0}\n')  # replaced (rankscope run --overwrite): read again
    assert tf.read() == [b'{"n": 0}']


def test_finished_run_and_the_recorded_straggler(tmp_path: Path) -> None:
    """The sample run in the repository: rank 1 waits on its DataLoader every step."""
    m = scrape(REPO / "sample_traces" / "ddp3_dataloader_straggler", job="ddp3", host="vm")
    stragglers = {rank for (name, rank), v in m.items() if name == "rankscope_straggler" and v}
    assert stragglers == {"1"}
    assert m[("rankscope_straggler", "0")] == 0
    assert m[("rankscope_job_finished", "")] == 1
    assert m[("rankscope_job_exit_code", "")] == 0
    assert all(m[("rankscope_rank_state:stopped", r)] == 1 for r in ("0", "1", "2"))


def test_once_prints_the_exposition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run")
    assert main(["metrics", str(run), "--once", "--job", "exp"]) == 0
    text = capsys.readouterr().out
    names = {f.name for f in parser.text_string_to_metric_families(text)}
    assert {"rankscope_step_seconds", "rankscope_rank_state", "rankscope_straggler"} <= names


def test_bad_input_and_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["metrics", str(tmp_path / "nope"), "--once"]) == EXIT_BAD_INPUT
    assert main(["metrics", str(tmp_path)]) == EXIT_BAD_INPUT  # no --port
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    assert main(["metrics", str(tmp_path), "--once"]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "rankscope metrics: prometheus_client is not installed: pip install 'rankscope[metrics]'"
    )


def test_launcher_side_warns_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr(exporter.importlib.util, "find_spec", lambda name: None)
    assert exporter.start(tmp_path, 9464, said.append, who="test") is None
    assert len(said) == 1 and "prometheus_client" in said[0]


def test_docs_and_grafana_dashboard_name_only_served_metrics() -> None:
    import json
    import re

    served = {prometheus.PREFIX + name for name in prometheus.METRICS}
    doc = (REPO / "docs" / "metrics.md").read_text()
    assert {m for m in served if f"`{m}`" not in doc} == set()
    dash = json.loads((REPO / "docs" / "grafana-rankscope.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    used = {m for e in exprs for m in re.findall(r"\brankscope_[a-z_]+", e)}
    assert used and used <= served | {"rankscope_rank_state"}, used - served
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_a_failing_refresh_serves_the_last_figures_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    collector = prometheus.LiveCollector(
        RunTail(make_run(tmp_path / "run")), "exp", min_refresh_s=0
    )
    first = {f.name: f for f in collector.collect()}

    def broken() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(collector.tail, "refresh", broken)
    for _ in range(3):
        again = {f.name: f for f in collector.collect()}
    assert again["rankscope_last_step"].samples == first["rankscope_last_step"].samples
    assert again["rankscope_exporter_errors"].samples[0].value == 3
    err = capsys.readouterr().err.splitlines()
    assert err == ["rankscope metrics: refresh failed: RuntimeError: disk on fire"]


def test_a_taken_port_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    run = make_run(tmp_path / "run")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        serve = ["metrics", str(run), "--port", port, "--addr", "127.0.0.1"]
        assert main(serve) == EXIT_ENVIRONMENT
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"rankscope metrics: cannot serve on 127.0.0.1:{port}: Address already in use"
        ]
        # started for a job: worded as that launcher's warning
        assert main([*serve, "--warn-as", "rankscope run"]) == EXIT_ENVIRONMENT
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"rankscope run: warning: metrics port {port}: Address already in use;"
            " no metrics served (the job runs on)"
        ]


def test_a_run_started_over_in_the_same_directory_is_read_afresh(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    tail = RunTail(run, verdict_every_s=0)
    assert tail.refresh().ranks[0].last_step == 3
    # `rankscope run --overwrite`: new files, a shorter run so far
    header = records.encode_line(records.Header(rundir.STEPS_SCHEMA, 0))
    rundir.steps_path(run, 0).unlink()
    rundir.steps_path(run, 0).write_bytes(header + _steps(0, [150]))
    rank0 = tail.refresh().ranks[0]
    assert rank0.last_step == 0 and rank0.step_median_s == pytest.approx(0.150)
