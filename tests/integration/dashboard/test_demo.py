"""``rankscope demo --report`` and ``--path``: the bundled sample from the command line.

The sample is the 3-rank CPU run in which rank 1 stalls in data loading; the
report must say so in every format, and the printed path must be a run that
``rankscope report`` reads. ``$RANKSCOPE_SAMPLE_DIR`` stands in for a wheel's copy.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, rankscope_cmd

SAMPLES = REPO / "sample_traces"


def demo(*args: str, sample_dir: Path = SAMPLES) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RANKSCOPE_SAMPLE_DIR=str(sample_dir))
    return subprocess.run(
        [*rankscope_cmd(), "demo", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_path_prints_the_sample_run() -> None:
    proc = demo("--path")
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == SAMPLES / "ddp3_dataloader_straggler"
    assert (path / "run.json").is_file()
    report = subprocess.run(
        [*rankscope_cmd(), "report", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0 and json.loads(report.stdout)["stragglers"][0]["rank"] == 1


@pytest.mark.parametrize("fmt", [None, "text", "markdown"])
def test_report_names_the_straggler(fmt: str | None) -> None:
    proc = demo("--report", *(["--format", fmt] if fmt else []))
    assert proc.returncode == 0, proc.stderr
    assert "Rank 1 is the straggler (data loading" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_report_as_json() -> None:
    proc = demo("--report", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["run"]["world_size"] == 3
    assert [(s["rank"], s["cause"]) for s in report["stragglers"]] == [(1, "data_loading")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--format", "json"), "--format goes with --report"),
        (("--report", "--path"), "give one of them"),
        (("--live", "--report"), "--live records a new run"),
        (("--report", "--format", "yaml"), "invalid choice"),
    ],
)
def test_flags_that_do_not_go_together(args: tuple[str, ...], needle: str) -> None:
    proc = demo(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_no_sample_is_a_one_line_error(tmp_path: Path) -> None:
    for args in (("--report",), ("--path",)):
        proc = demo(*args, sample_dir=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "no bundled sample run" in lines[0]
