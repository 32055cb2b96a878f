"""`rankscope report` on the real H200 captures: the ground truth and HTA's numbers."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import data_path, ground_truth_table, hta_reference, rankscope_cmd


def report_json(path: str, *extra: str) -> dict:
    proc = subprocess.run(
        [*rankscope_cmd(), "report", path, "--format", "json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def straggler_report() -> dict:
    return report_json(str(data_path("reference_runs", "h200_ddp4_straggler")))


@pytest.fixture(scope="module")
def balanced_report() -> dict:
    return report_json(str(data_path("reference_runs", "h200_ddp2_balanced")))


def test_schema_and_run_section(straggler_report: dict) -> None:
    r = straggler_report
    assert r["schema"] == "rankscope.report/1"
    assert r["run"]["world_size"] == 4
    assert r["run"]["ranks"] == [0, 1, 2, 3]
    # Profiler schedule wait=1, warmup=1, active=6: ProfilerStep#2..#7 are recorded.
    assert r["run"]["steps"] == [2, 3, 4, 5, 6, 7]
    assert r["run"]["skipped_files"] == []
    for rank in r["ranks"]:
        for key in (
            "step_ms",
            "compute_ms",
            "comm_ms",
            "comm_exposed_ms",
            "comm_wait_ms",
            "data_ms",
            "host_ms",
            "idle_ms",
            "gpu_busy_pct",
        ):
            assert isinstance(rank[key], float), key
        assert set(rank["temporal_breakdown"]) == {"idle_pct", "compute_pct", "non_compute_pct"}
        # gloo communication runs on the host: no NCCL kernels, so HTA's overlap is undefined.
        assert rank["comm_overlap_pct"] is None


def test_names_rank1_data_loading_as_the_worst_straggler(straggler_report: dict) -> None:
    top = straggler_report["stragglers"][0]
    assert top["rank"] == 1
    assert top["cause"] == "data_loading"
    assert top["severity"] == "high"  # 40 ms of a ~150 ms step
    assert "data loading" in top["evidence"]
    # The others wait for it: a saving of tens of ms per step.
    assert 20 < top["excess_ms_per_step"] < 150
    assert top["pattern"] == "persistent" and top["cause_breakdown"]["data_loading"] > 35
    # Ground truth: rank 1 is the worst straggler, rank 3 (twice the batch) the second.
    assert [(s["rank"], s["cause"]) for s in straggler_report["stragglers"]] == [
        (1, "data_loading"),
        (3, "data_loading"),
    ]
    found = [f for f in straggler_report["findings"] if f["kind"] == "straggler"]
    assert [f["ranks"] for f in found] == [[1], [3]]
    assert "Rank 1" in found[0]["title"] and found[0]["severity"] == "high"
    # Fixing both is one what-if, shared between them, never a sum of their waits.
    joint = straggler_report["imbalance"]["joint_saving_ms_per_step"]
    assert joint == pytest.approx(sum(s["est_saving_ms_per_step"] for s in found), abs=0.02)
    assert 30 < joint < 80


def test_rank1_arrives_last_at_most_all_reduces(straggler_report: dict) -> None:
    (ar,) = [c for c in straggler_report["collectives"] if c["name"] == "all_reduce"]
    counts = ar["last_arrival_counts"]
    assert max(counts, key=lambda k: counts[k]) == "1"
    assert counts["1"] > ar["count"] / 2


def test_per_rank_numbers_match_the_measured_ground_truth(straggler_report: dict) -> None:
    truth = ground_truth_table(data_path("reference_runs", "README.md"), "h200_ddp4_straggler")
    by_rank = {r["rank"]: r for r in straggler_report["ranks"]}
    for rank, t in truth.items():
        # data_ms is the union of data_loading ranges; the README rounds to whole ms.
        assert by_rank[rank]["data_ms"] == pytest.approx(t["data_loading_ms"], abs=1.5), rank
        assert by_rank[rank]["compute_ms"] == pytest.approx(t["gpu_kernel_ms"], rel=0.08), rank
        # ~150 ms steps everywhere: synchronous DDP equalises step time.
        assert 140 < by_rank[rank]["step_ms"] < 160
    # The ranks that wait most are 0 and 2, the straggler waits least.
    waits = {r: by_rank[r]["comm_wait_ms"] for r in by_rank}
    assert sorted(waits, key=lambda r: waits[r])[0] == 1
    assert set(sorted(waits, key=lambda r: -waits[r])[:2]) == {0, 2}


def test_breakdown_adds_up_to_the_step(straggler_report: dict) -> None:
    for r in straggler_report["ranks"]:
        parts = (
            r["compute_ms"]
            + r["comm_exposed_ms"]
            + r["memcpy_ms"]
            + r["data_exposed_ms"]
            + r["host_ms"]
            + r["idle_ms"]
        )
        assert parts == pytest.approx(r["step_ms"], abs=0.05)


def test_balanced_run_has_no_straggler(balanced_report: dict) -> None:
    assert balanced_report["stragglers"] == []
    assert not any(f["kind"] == "straggler" for f in balanced_report["findings"])
    assert balanced_report["imbalance"]["step_ms"]["max_over_mean"] < 1.01


@pytest.mark.parametrize("run", ["h200_ddp4_straggler", "h200_ddp2_balanced"])
def test_temporal_breakdown_agrees_with_hta_on_reference_runs(run: str) -> None:
    hta = hta_reference(data_path("reference_runs", "README.md"))
    report = report_json(str(data_path("reference_runs", run)))
    for r in report["ranks"]:
        expected = hta[(run, r["rank"])]
        for key in ("idle_pct", "compute_pct", "non_compute_pct"):
            assert r["temporal_breakdown"][key] == pytest.approx(expected[key], abs=0.5), (
                r["rank"],
                key,
            )


@pytest.mark.parametrize("trace", ["trace_filter", "nccl_data"])
def test_hta_metrics_agree_on_public_nccl_traces(trace: str) -> None:
    hta = hta_reference(data_path("public_traces", "README.md"))
    report = report_json(str(data_path("public_traces", "hta", trace)))
    for r in report["ranks"]:
        expected = hta[(trace, r["rank"])]
        for key in ("idle_pct", "compute_pct", "non_compute_pct"):
            assert r["temporal_breakdown"][key] == pytest.approx(expected[key], abs=0.5), (
                r["rank"],
                key,
            )
        assert r["comm_overlap_pct"] == pytest.approx(expected["comm_overlap_pct"], abs=0.5)


def test_nccl_collectives_carry_sizes_and_process_group() -> None:
    report = report_json(str(data_path("public_traces", "hta", "nccl_data")))
    names = {c["name"] for c in report["collectives"]}
    assert "all_reduce" in names
    ar = next(c for c in report["collectives"] if c["name"] == "all_reduce")
    assert ar["bytes"] and ar["bytes"] > 1_000_000  # fp32 gradients of millions of elements
    assert ar["pg"] == "0"
    # Only rank 0 of 2 is present: nobody to wait for, and the report says so.
    assert report["run"]["world_size"] == 2
    assert any("missing ranks: 1" in w for w in report["run"]["warnings"])


def test_cpu_only_trace_reports_host_collectives_and_no_gpu() -> None:
    report = report_json(str(data_path("public_traces", "hta", "cpu_only")))
    (r,) = report["ranks"]
    assert r["rank"] == 34
    assert r["gpu_busy_pct"] is None
    assert r["temporal_breakdown"] is None
    assert r["comm_ms"] is not None and r["comm_ms"] > 100  # gloo all_reduces of ~170 ms
    assert report["run"]["has_gpu"] is False


def test_single_file_without_rank_is_rank0_with_a_warning() -> None:
    f = data_path("public_traces", "hta", "amd", "mi250_minitoy_train_ROCm6_2_kineto.json.gz")
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(f), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "assuming rank 0" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["run"]["ranks"] == [0]
    # AMD HIP kernels count as GPU work like CUDA ones; HTA gives 98.53 / 1.08 / 0.39.
    tb = report["ranks"][0]["temporal_breakdown"]
    assert tb["idle_pct"] == pytest.approx(98.53, abs=0.5)


def test_steps_and_ranks_filters() -> None:
    path = str(data_path("reference_runs", "h200_ddp4_straggler"))
    report = report_json(path, "--steps", "3:5", "--ranks", "0-1")
    assert report["run"]["steps"] == [3, 4, 5]
    assert report["run"]["ranks"] == [0, 1]
    assert [r["rank"] for r in report["ranks"]] == [0, 1]


def test_text_report_reads_findings_first() -> None:
    path = str(data_path("reference_runs", "h200_ddp4_straggler"))
    proc = subprocess.run(
        [*rankscope_cmd(), "report", path], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    out = proc.stdout
    assert "Rank 1 is the straggler (data loading" in out
    assert out.index("Findings") < out.index("Per rank")
    md = subprocess.run(
        [*rankscope_cmd(), "report", path, "--format", "markdown"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert md.stdout.startswith("# rankscope report")
    assert "| rank | step ms |" in md.stdout


def test_trace_filter_last_arrival_agrees_with_htas_straggler_candidate() -> None:
    """HTA's get_potential_stragglers(num_candidates=1) returns [1] on these traces."""
    readme = data_path("public_traces", "README.md").read_text()
    assert "returns `[1]`" in readme
    report = report_json(str(data_path("public_traces", "hta", "trace_filter")))
    last = report["imbalance"]["last_arrival"]
    assert last["rank"] == 1 and last["count"] > last["of"] / 2
    # ... but what it costs the other rank is small against a 600 ms step: no straggler.
    assert report["stragglers"] == []
    assert last["excess_pct_of_step"] < 5
