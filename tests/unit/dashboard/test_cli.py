"""The console script's checks before any work: a cache the user named and cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankscope.dashboard import cli


def test_a_cache_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "cache"
    f.write_text("")
    said = cli.cache_dir_problem({"RANKSCOPE_CACHE_DIR": str(f)})
    assert said == (
        f"$RANKSCOPE_CACHE_DIR={f}: is not a directory; parsed traces are not cached"
        " (each report parses them again)"
    )
    # one that would be made inside a file
    said = cli.cache_dir_problem({"RANKSCOPE_CACHE_DIR": str(f / "a" / "b")})
    assert said is not None and f": {f} is not a directory;" in said


def test_a_usable_or_unset_cache_dir_says_nothing(tmp_path: Path) -> None:
    assert cli.cache_dir_problem({}) is None
    assert cli.cache_dir_problem({"RANKSCOPE_CACHE_DIR": str(tmp_path)}) is None
    assert cli.cache_dir_problem({"RANKSCOPE_CACHE_DIR": str(tmp_path / "new" / "dir")}) is None


def test_the_warning_is_printed_once_and_the_report_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "cache"
    f.write_text("")
    monkeypatch.setenv("RANKSCOPE_CACHE_DIR", str(f))
    assert cli.main(["report", str(tmp_path / "absent")]) == 2  # the usual error, after it
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("rankscope report: warning: $RANKSCOPE_CACHE_DIR=") and len(err) == 2
