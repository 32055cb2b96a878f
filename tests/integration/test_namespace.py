"""One import name: a job's own ``profiler.py`` and ``dashboard.py`` are never shadowed by ours.

rankscope installs only ``rankscope``. These tests run real jobs and the real
CLI from a folder that holds modules named like our two parts (the most
common names a user gives a module of their own) and check that both sides
keep their own: the job imports its modules, and rankscope still collects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, needs_torch, rankscope_cmd
from jobs.collector_jobs import job_env, launcher, rankscope

from rankscope.profiler import rundir

# Modules a user might have; each would break the job if rankscope imported it.
USER_PROFILER = (
    "WHO = 'the job'\n"
    "def Collector(*a, **k):\n"
    "    raise RuntimeError('rankscope imported the job profiler.py')\n"
)
USER_DASHBOARD = "WHO = 'the job'\nraise_on = None\n"

JOB = """\
import json, sys
import profiler, dashboard  # the job's own modules, imported before torch
import torch
model = torch.nn.Linear(8, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(6):
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    opt.zero_grad()
import profiler as p2, dashboard as d2  # and still theirs after rankscope armed
print(json.dumps({
    "profiler": [p2.WHO, p2.__file__],
    "dashboard": [d2.WHO, d2.__file__],
    "rankscope_loaded": "rankscope.profiler.collector" in sys.modules,
}))
"""


def _user_folder(tmp_path: Path) -> Path:
    job = tmp_path / "job"
    job.mkdir()
    (job / "profiler.py").write_text(USER_PROFILER)
    (job / "dashboard.py").write_text(USER_DASHBOARD)
    (job / "train.py").write_text(JOB)
    return job


def test_only_rankscope_is_importable(tmp_path: Path) -> None:
    """The installed distribution adds one import name (the editable install: src/ only).

    In a fresh interpreter outside the checkout (``python -m pytest`` itself puts
    the checkout on sys.path).
    """
    code = (
        "import importlib.util as u; "
        "names = ('profiler', 'dashboard', 'sample_traces', 'benchmarks', 'tests'); "
        "print([n for n in names if u.find_spec(n)], "
        "bool(u.find_spec('rankscope.profiler') and u.find_spec('rankscope.dashboard')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[] True"


@pytest.mark.slow
@needs_torch
def test_job_with_its_own_profiler_and_dashboard_modules_under_rankscope_run(
    tmp_path: Path,
) -> None:
    job = _user_folder(tmp_path)
    run = tmp_path / "run"
    proc = rankscope(
        "run",
        "--out",
        str(run),
        "--profile",
        "2-3",
        "--",
        *launcher("python", 1),
        str(job / "train.py"),
        cwd=job,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["profiler"] == ["the job", str(job / "profiler.py")]
    assert seen["dashboard"] == ["the job", str(job / "dashboard.py")]
    assert seen["rankscope_loaded"]
    # ... and rankscope collected as usual: steps, the window, the manifest.
    assert len(rundir.read_steps(run, 0)) == 5  # a step ends at each optimizer step after the first
    assert [w.file for w in rundir.capture_windows(run)] == ["rank0.step2-3.pt.trace.json.gz"]
    assert rundir.read_run_manifest(run)["exit_code"] == 0


def test_report_from_a_folder_with_modules_named_like_ours(tmp_path: Path) -> None:
    """``python -m`` puts the current folder first on sys.path: ours must not be looked up there."""
    job = tmp_path / "job"
    job.mkdir()
    for name in ("profiler.py", "dashboard.py"):
        (job / name).write_text("raise RuntimeError('rankscope imported the job module')\n")
    sample = REPO / "sample_traces" / "ddp3_dataloader_straggler"
    proc = subprocess.run(
        [*rankscope_cmd(), "report", str(sample), "--format", "json"],
        cwd=job,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [s["rank"] for s in report["stragglers"]] == [1]


def test_python_dash_m_rankscope_is_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rankscope", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("rankscope "), proc.stderr
