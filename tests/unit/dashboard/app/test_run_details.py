"""The run picker and sidebar read the run's own start, duration, size, command and hosts
from ``run.json``, not the time its files were copied."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rankscope.dashboard.app import runs

SAMPLE = Path(__file__).resolve().parents[4] / "sample_traces" / "ddp3_dataloader_straggler"


def _copy(src: Path, dst: Path, start_ns: int, mtime: float) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "run.json").read_text())
    manifest["start_ns"], manifest["end_ns"] = start_ns, start_ns + 90 * 10**9
    (dst / "run.json").write_text(json.dumps(manifest))
    for f in dst.rglob("*"):
        os.utime(f, (mtime, mtime))
    return dst


def test_the_sidebar_says_what_the_run_says_about_itself() -> None:
    d = runs.run_details(SAMPLE)
    assert (d.world_size, d.hosts) == (3, ["vm"])
    assert d.command == "torchrun --nproc-per-node 3 make_sample.py --worker"
    assert d.duration_s is not None and 1 < d.duration_s < 120
    text = runs.details_text(d)
    assert text is not None and text.startswith(f"started {runs.when(d.started or 0)} · ran ")
    assert "3 rank(s) on vm · torchrun" in text


def test_the_picker_orders_and_labels_runs_by_their_own_start(tmp_path: Path) -> None:
    # copied the other way round: the older run's files are the newer
    _copy(SAMPLE, tmp_path / "older", 1_700_000_000 * 10**9, mtime=1_800_000_000)
    _copy(SAMPLE, tmp_path / "newer", 1_700_100_000 * 10**9, mtime=1_750_000_000)
    entries = runs.find_runs(tmp_path)
    assert [e.label for e in entries] == ["newer", "older"]
    assert entries[0].started == 1_700_100_000
    assert runs.run_details(tmp_path / "newer").duration_s == 90
    plain = runs.RunDetails(None, None, None, None, [])
    assert runs.details_text(plain) is None
