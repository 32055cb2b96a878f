"""The wheel a user installs: one import name, the bundled sample, a working report.

Built from this checkout with the project's own build backend (hatchling, no
network: ``--no-build-isolation``), then installed into a bare folder and run
from there, so what is checked is the file ``pip install rankscope`` unpacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="the dev extra brings hatchling to build the wheel")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("rankscope-*.whl")
    return whl


def test_wheel_installs_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rankscope"}
    assert "rankscope/profiler/collector.py" in names
    assert "rankscope/dashboard/cli.py" in names
    assert "rankscope/integrations/transformers.py" in names  # the framework callbacks
    assert "rankscope/integrations/lightning.py" in names
    assert "rankscope/profiler/bootstrap/sitecustomize.py" in names
    assert "rankscope/dashboard/app/.streamlit/config.toml" in names
    sample = "rankscope/dashboard/sample_traces/ddp3_dataloader_straggler/"
    assert {f"{sample}run.json", f"{sample}rank1.step4-6.pt.trace.json.gz"} <= set(names)
    # No test, benchmark or source-checkout file travels in it.
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "src/"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rankscope = rankscope.dashboard.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_wheel_reports_on_its_bundled_sample(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    sample = target / "rankscope" / "dashboard" / "sample_traces" / "ddp3_dataloader_straggler"
    # The installed copy comes first on sys.path: the checkout's src/ is not used.
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import rankscope\n"
        f"assert rankscope.__file__.startswith({str(target)!r}), rankscope.__file__\n"
        "from rankscope.dashboard.cli import main\n"
        f"sys.exit(main(['report', {str(sample)!r}, '--format', 'json']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [s["rank"] for s in json.loads(proc.stdout)["stragglers"]] == [1]

    # Without a checkout, the bundled sample is reached from the command line.
    def demo(*args: str) -> subprocess.CompletedProcess[str]:
        code = (
            f"import sys; sys.path.insert(0, {str(target)!r})\n"
            "from rankscope.dashboard.cli import main\n"
            f"sys.exit(main(['demo', *{list(args)!r}]))\n"
        )
        return subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    where = demo("--path")
    assert where.returncode == 0 and Path(where.stdout.strip()) == sample, where.stderr
    rep = demo("--report", "--format", "json")
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert json.loads(rep.stdout)["stragglers"][0]["rank"] == 1
