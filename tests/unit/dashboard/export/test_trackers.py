"""``export.trackers`` without a tracker: what is logged, the missing-library line, bad flags.

The record is built from the sample run's own report (3 ranks, rank 1 late on
its DataLoader, a whole-run light layer of 29 steps, two of them the collector's
capture); the tracker clients themselves are exercised in
``tests/integration/export/test_trackers_cli.py``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from rankscope.dashboard.analysis.report import Report
from rankscope.dashboard.cli import main
from rankscope.dashboard.commands.report import analyse_report
from rankscope.dashboard.export import trackers
from rankscope.dashboard.render import verdict_sentence
from rankscope.profiler.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, RankscopeError

REPO = Path(__file__).resolve().parents[4]
SAMPLE = REPO / "sample_traces" / "ddp3_dataloader_straggler"


@pytest.fixture(scope="module")
def report() -> Report:
    _, rep = analyse_report(SAMPLE)
    return rep


def test_series_are_the_whole_runs_steps(report: Report) -> None:
    record = trackers.tracker_record(report, verdict_sentence(report))
    whole = report.whole_run
    assert whole is not None and whole.n_steps == 29
    assert record.series["step_ms"] == [(s.step, s.step_ms) for s in whole.steps]
    judged = [s for s in whole.steps if s.late_rank >= 0]
    # the collector's capture at the window's edges draws no verdict: those steps are left out
    assert len(judged) == whole.n_steps - whole.capture_steps == 27
    assert record.series["max_lateness_ms"] == [(s.step, s.excess_ms) for s in judged]
    assert record.series["late_rank"] == [(s.step, float(s.late_rank)) for s in judged]
    assert record.series["data_wait_ms"] == [
        (s.step, s.data_ms) for s in judged if not math.isnan(s.data_ms)
    ]
    # rank 1 sleeps ~60 ms in its DataLoader every step
    assert all(55 < v < 70 for _, v in record.series["data_wait_ms"])
    assert record.points == 29 + 3 * 27


def test_verdict_and_stragglers(report: Report) -> None:
    sentence = verdict_sentence(report)
    record = trackers.tracker_record(report, sentence, {"a.html": "<html>"})
    assert record.tags["rankscope.verdict"] == sentence
    assert record.tags["rankscope.verdict.rank"] == "1"
    assert record.tags["rankscope.verdict.cause"] == "data_loading"
    assert record.tags["rankscope.stragglers"] == "1"
    assert record.tags["rankscope.whole_run.stragglers"] == "1"
    (s,) = report.stragglers
    assert record.metrics["straggler.rank1.excess_ms_per_step"] == s.excess_ms_per_step
    assert record.metrics["stragglers"] == 1.0
    assert record.metrics["step_ms_mean"] == report.run.step_ms
    assert record.params["rankscope.world_size"] == "3"
    assert record.params["rankscope.steps_analysed"] == "4-6"
    assert record.params["rankscope.whole_run_steps"] == "0-28"
    assert record.labels == ["rankscope", "straggler:rank1", "cause:data_loading"]
    assert record.artifacts == {"a.html": "<html>"}
    assert record.name == SAMPLE.name


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_missing_library_is_one_line_with_the_install_command(
    tracker: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, tracker, None)  # `import mlflow` raises ImportError
    with pytest.raises(RankscopeError) as err:
        trackers.require(tracker)  # type: ignore[arg-type]
    assert err.value.exit_code == EXIT_ENVIRONMENT
    assert main(["export", str(SAMPLE), "--to", tracker]) == EXIT_ENVIRONMENT
    out, errors = capsys.readouterr()
    assert out == ""
    # refused before the run is read: no progress or warning line precedes it
    assert errors == (
        f'rankscope export: --to {tracker} needs {tracker}: pip install "rankscope[{tracker}]"\n'
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--to", "mlflow", "-o", "x.json"], "-o is for the Perfetto export, not --to mlflow"),
        (
            ["--to", "wandb", "--format", "perfetto"],
            "--format is for the Perfetto export, not --to wandb",
        ),
        (["--to", "mlflow", "--align", "none"], "--align is for the Perfetto export"),
        (["--to", "wandb", "--tracking-uri", "file:x"], "--tracking-uri is for --to mlflow"),
        (["--to", "mlflow", "--dir", "x"], "--dir is for --to wandb"),
        (["-o", "x.json", "--project", "p"], "--project needs --to mlflow or --to wandb"),
        (["-o", "x.json", "--tracking-uri", "file:x"], "--tracking-uri needs --to"),
        ([], "-o FILE is needed for --format perfetto"),
        (["--format", "perfetto"], "-o FILE is needed for --format perfetto"),
    ],
)
def test_bad_flag_combinations(
    flags: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(SAMPLE), *flags]) == EXIT_BAD_INPUT
    out, errors = capsys.readouterr()
    assert out == ""
    assert errors.startswith(f"rankscope export: {message}")
    assert errors.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing logged
