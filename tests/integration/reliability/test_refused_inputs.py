"""Inputs that must be refused up front: one line, exit 2, nothing written, no traceback.

``report -o`` into one of the run's own inputs; junk in rankscope's environment
variables; ``rankscope run`` flags out of bounds; and a ``ProfilerStep#N`` too
large to be a step (skipped with a counted warning, the rest analysed). Each
runs the real console script on a small hand-built run (``runs.make_run``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import rankscope_cmd
from runs import make_run, trace_name

TIMEOUT_S = 30


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*rankscope_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "name", ["run.json", trace_name(0), "rank1.steps.jsonl", "rank0.meta.json", "report.json"]
)
def test_output_into_a_run_input_is_refused(tmp_path: Path, name: str) -> None:
    run = make_run(tmp_path / "run")
    target = run / name
    before = target.read_bytes() if target.exists() else None
    proc = cli("report", str(run), "-o", str(target))
    assert_one_line_exit_2(proc)
    assert "refusing to overwrite" in proc.stderr
    assert (target.read_bytes() if target.exists() else None) == before


def test_output_through_a_symlink_to_an_input_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    link = tmp_path / "report.txt"
    link.symlink_to(run / "run.json")
    before = (run / "run.json").read_bytes()
    assert_one_line_exit_2(cli("report", str(run), "-o", str(link)))
    assert (run / "run.json").read_bytes() == before


@pytest.mark.parametrize("name", ["run.json", trace_name(0)])
def test_output_through_a_hard_link_to_an_input_is_refused(tmp_path: Path, name: str) -> None:
    run = make_run(tmp_path / "run")
    link = tmp_path / "report.json"  # outside the run folder, the same file as an input
    os.link(run / name, link)
    before = (run / name).read_bytes()
    proc = cli("report", str(run), "--format", "json", "-o", str(link))
    assert_one_line_exit_2(proc)
    assert "refusing to overwrite" in proc.stderr
    assert (run / name).read_bytes() == before
    if name != "run.json":  # a trace file given alone, through its hard link, too
        alone = cli("report", str(run / name), "-o", str(link))
        assert_one_line_exit_2(alone)
        assert "refusing to overwrite" in alone.stderr


def test_output_over_the_trace_file_read_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    trace = run / trace_name(0)
    before = trace.read_bytes()
    assert_one_line_exit_2(cli("report", str(trace), "-o", str(trace)))
    assert trace.read_bytes() == before


def test_a_report_beside_the_inputs_is_written(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    proc = cli("report", str(run), "--format", "markdown", "-o", str(run / "report.md"))
    assert proc.returncode == 0, proc.stderr
    assert (run / "report.md").read_text().startswith("# rankscope report")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RANKSCOPE_MAX_JSONL_BYTES", "inf"),
        ("RANKSCOPE_MAX_TRACE_BYTES", "infT"),
        ("RANKSCOPE_MAX_TRACE_BYTES", "-1"),
        ("RANKSCOPE_CACHE_MIN_BYTES", "lots"),
        ("RANKSCOPE_DASK_SCHEDULER", "junk:://x"),
    ],
)
def test_junk_in_an_environment_variable_names_it(tmp_path: Path, name: str, value: str) -> None:
    run = make_run(tmp_path / "run")
    proc = cli("report", str(run), env={name: value})
    assert_one_line_exit_2(proc)
    assert f"${name}=" in proc.stderr


def test_good_environment_values_are_read(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    env = {"RANKSCOPE_MAX_TRACE_BYTES": "512M", "RANKSCOPE_DASK_SCHEDULER": "tcp://host:8786"}
    assert cli("report", str(run), env=env).returncode == 0


@pytest.mark.parametrize(
    "flags",
    [
        ["--nvml-period-ms", "nan"],
        ["--nvml-period-ms", "inf"],
        ["--profile", "0-99999999999"],
        ["--profile", "wait=1,active=99999999"],
    ],
)
def test_run_flags_out_of_bounds_are_refused(tmp_path: Path, flags: list[str]) -> None:
    proc = cli("run", "--out", str(tmp_path / "run"), *flags, "--", "true")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "run").exists()


def test_nan_period_from_the_environment_is_refused(tmp_path: Path) -> None:
    proc = cli("run", "--out", str(tmp_path / "run"), "--", "true", env={
        "RANKSCOPE_NVML_PERIOD_MS": "nan"
    })  # fmt: skip
    assert_one_line_exit_2(proc)
    assert "RANKSCOPE_NVML_PERIOD_MS" in proc.stderr


def test_a_huge_profiler_step_number_is_skipped_and_counted(tmp_path: Path) -> None:
    import gzip
    import json

    run = make_run(tmp_path / "run")
    trace = run / trace_name(1)
    data = json.loads(gzip.decompress(trace.read_bytes()))
    data["traceEvents"][0]["name"] = "ProfilerStep#99999999999999999999999"
    trace.write_bytes(gzip.compress(json.dumps(data).encode()))
    proc = cli("report", str(run), "--format", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "1 ProfilerStep range name(s) with a step number beyond 2^53" in proc.stderr
    # Rank 1 has no step 0 left: the steps both ranks have are analysed.
    assert json.loads(proc.stdout)["run"]["steps"] == [1, 2]


def test_a_profiler_step_with_no_step_number_is_named(tmp_path: Path) -> None:
    # ProfilerStep#-4 and #nan used to vanish from the steps in silence.
    import gzip
    import json

    run = make_run(tmp_path / "run")
    trace = run / trace_name(1)
    data = json.loads(gzip.decompress(trace.read_bytes()))
    renamed = {"ProfilerStep#0": "ProfilerStep#-4", "ProfilerStep#1": "ProfilerStep#nan"}
    for e in data["traceEvents"]:
        e["name"] = renamed.get(e.get("name"), e.get("name"))
    trace.write_bytes(gzip.compress(json.dumps(data).encode()))
    proc = cli("report", str(run), "--format", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        "2 ProfilerStep range name(s) with no step number ('ProfilerStep#-4',"
        " 'ProfilerStep#nan') were not read as steps"
    ) in proc.stderr
    assert json.loads(proc.stdout)["run"]["steps"] == [2]  # the one step both ranks have
