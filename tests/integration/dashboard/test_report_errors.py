"""Bad and partial input: one-line errors with exit code 2, partial runs still analysed."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import data_path, rankscope_cmd


def run_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rankscope_cmd(), "report", *args], capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_path(tmp_path: Path) -> None:
    assert_one_line_error(run_report(str(tmp_path / "nope")), "no such file or directory")


def test_empty_folder(tmp_path: Path) -> None:
    assert_one_line_error(run_report(str(tmp_path)), "no trace files found")


def test_not_json(tmp_path: Path) -> None:
    f = tmp_path / "rank0.pt.trace.json"
    f.write_text("this is not json")
    assert_one_line_error(run_report(str(f)), "rank0.pt.trace.json", "not valid JSON")


def test_json_that_is_not_a_trace(tmp_path: Path) -> None:
    f = tmp_path / "rank0.json"
    f.write_text('{"hello": 1}')
    proc = run_report(str(f))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_bad_steps_and_ranks() -> None:
    path = str(data_path("reference_runs", "h200_ddp2_balanced"))
    assert_one_line_error(run_report(path, "--steps", "x:y"), "--steps")
    assert_one_line_error(
        run_report(path, "--steps", "50:60"), "no step in that range", "2, 3, 4, 5, 6, 7"
    )
    assert_one_line_error(run_report(path, "--ranks", "7"), "rank(s) 7", "ranks present: 0, 1")


def test_two_files_claiming_one_rank_names_both(tmp_path: Path) -> None:
    src = data_path("reference_runs", "h200_ddp2_balanced", "rank0.pt.trace.json.gz")
    shutil.copy(src, tmp_path / "a.pt.trace.json.gz")
    shutil.copy(src, tmp_path / "b.pt.trace.json.gz")
    assert_one_line_error(
        run_report(str(tmp_path)), "rank 0", "a.pt.trace.json.gz", "b.pt.trace.json.gz"
    )


def test_partial_run_is_analysed_with_skipped_files_listed(tmp_path: Path) -> None:
    src = data_path("reference_runs", "h200_ddp4_straggler")
    for r in (0, 1, 2):
        shutil.copy(src / f"rank{r}.pt.trace.json.gz", tmp_path / f"rank{r}.pt.trace.json.gz")
    # Rank 3's trace is truncated mid-write (a crashed job).
    data = (src / "rank3.pt.trace.json.gz").read_bytes()
    (tmp_path / "rank3.pt.trace.json.gz").write_bytes(data[: len(data) // 2])
    proc = run_report(str(tmp_path), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "rank3.pt.trace.json.gz" in proc.stderr and "warning" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["run"]["ranks"] == [0, 1, 2]
    assert report["run"]["world_size"] == 4
    assert [Path(f).name for f in report["run"]["skipped_files"]] == ["rank3.pt.trace.json.gz"]
    # The good part still gives the answer: rank 1 is the straggler, by data loading.
    assert report["stragglers"][0]["rank"] == 1
    assert report["stragglers"][0]["cause"] == "data_loading"


def test_rank_from_file_name_when_trace_lacks_distributed_info(tmp_path: Path) -> None:
    src = data_path("reference_runs", "h200_ddp2_balanced")
    for r in (0, 1):
        doc = json.loads(gzip.decompress((src / f"rank{r}.pt.trace.json.gz").read_bytes()))
        del doc["distributedInfo"]
        (tmp_path / f"worker{r}.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode(), 1))
    proc = run_report(str(tmp_path), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["run"]["ranks"] == [0, 1]


def test_file_without_any_rank_in_a_folder_is_skipped(tmp_path: Path) -> None:
    src = data_path("reference_runs", "h200_ddp2_balanced")
    shutil.copy(src / "rank0.pt.trace.json.gz", tmp_path / "rank0.pt.trace.json.gz")
    doc = json.loads(gzip.decompress((src / "rank1.pt.trace.json.gz").read_bytes()))
    del doc["distributedInfo"]
    (tmp_path / "mystery.json").write_text(json.dumps(doc))
    proc = run_report(str(tmp_path), "--format", "json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["run"]["skipped_files"] == [str(tmp_path / "mystery.json")]
    assert "no rank" in proc.stderr


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_output_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "report.out"
    path = str(data_path("reference_runs", "h200_ddp2_balanced"))
    proc = run_report(path, "--format", fmt, "-o", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert out.stat().st_size > 200


def test_traces_being_written_are_not_read(tmp_path: Path) -> None:
    """A live run: the exporter's hidden temporary JSON sits beside the finished traces."""
    src = data_path("reference_runs", "h200_ddp2_balanced")
    for r in (0, 1):
        shutil.copy(src / f"rank{r}.pt.trace.json.gz", tmp_path / f"rank{r}.pt.trace.json.gz")
    (tmp_path / ".rank0.step5-7.pt.trace.json.gz.4242.json").write_text('{"traceEvents": [')
    proc = run_report(str(tmp_path), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run"]["skipped_files"] == []
