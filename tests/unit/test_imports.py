"""The import boundary: cheap imports, one-way dependencies, a lean report start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        (
            "rankscope.profiler",
            ("torch", "streamlit", "rankscope.dashboard", "rankscope.integrations"),
        ),
        # `import rankscope` (and `from rankscope import Collector`) never loads a framework
        ("rankscope", ("torch", "transformers", "lightning", "pytorch_lightning")),
        (
            "rankscope.integrations",
            ("torch", "transformers", "lightning", "pytorch_lightning", "rankscope.dashboard"),
        ),
        ("rankscope.dashboard.analysis", ("torch", "streamlit")),
        ("rankscope.dashboard.analysis.analyse", ("torch", "streamlit", "pandas", "plotly")),
    ],
)
def test_imports_stay_cheap(module: str, forbidden: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import {module} loaded {out}"


def test_report_start_up_stays_lean() -> None:
    """The report of a small run loads no heavy module it does not use.

    pandas (~0.4 s), pyarrow (cache only), numpy.ma (np.unique/np.median pull it
    in, ~25 ms), streamlit and torch each would make `rankscope report` slower
    than HTA on small traces.
    """
    from conftest import REPO

    sample = REPO / "sample_traces" / "ddp3_dataloader_straggler"
    code = (
        "import sys, io, contextlib, rankscope.dashboard.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    args = ['report', {str(sample)!r}, '--format', 'json']\n"
        "    assert rankscope.dashboard.cli.main(args) == 0\n"
        "heavy = ('pandas', 'pyarrow', 'numpy.ma', 'streamlit', 'torch', 'plotly', 'rich')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"report loaded {out.stdout.strip()}"


def test_report_never_imports_pandas(tmp_path: Path) -> None:
    """Not on a cold report that writes the cache, not on a warm one, not when the
    tables are read back: a CPU-only trace (its empty GPU table once imported it)."""
    import os

    from conftest import REPO

    trace = REPO / "sample_traces" / "ddp3_dataloader_straggler" / "rank0.step4-6.pt.trace.json.gz"
    code = (
        "import sys, io, contextlib, pathlib, rankscope.dashboard.cli\n"
        "from rankscope.dashboard.ingest import cache\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    args = ['report', {str(trace)!r}, '--format', 'json']\n"
        "    assert rankscope.dashboard.cli.main(args) == 0\n"
        "if len(sys.argv) > 1:\n"
        f"    assert cache.load(pathlib.Path({str(trace)!r})) is not None\n"
        "print('pandas' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "RANKSCOPE_CACHE_DIR": str(tmp_path / "cache"),
        "RANKSCOPE_CACHE_MIN_BYTES": "0",
    }
    for args in ([], [], ["read the tables"]):  # cold (writes the cache), warm, tables
        out = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "False", f"the report imported pandas ({args})"
