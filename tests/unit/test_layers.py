"""The layers of ARCHITECTURE.md hold: import-linter's contracts ([tool.importlinter]).

CI runs ``lint-imports`` before the tests; this runs it too, so the README's test
command alone catches an import that crosses a layer, and it checks on a copy of
the package that an import hidden inside a function is caught like any other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed")


def _lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with this repository's contracts on the ``rankscope`` in ``src``."""
    assert LINT_IMPORTS is not None
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"},  # no wrapped lines
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    out = _lint_imports(REPO / "src", REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    """Ingest reaching up into analysis from inside a function breaks the layers."""
    src = tmp_path / "src"
    shutil.copytree(  # the package's modules, links followed (src/rankscope/dashboard -> ...)
        REPO / "src" / "rankscope",
        src / "rankscope",
        ignore=lambda d, names: [n for n in names if n.endswith((".pyc", ".gz", ".json", ".png"))],
    )
    table = src / "rankscope" / "dashboard" / "ingest" / "table.py"
    table.write_text(
        table.read_text()
        + "\n\ndef _planted() -> None:\n"
        + "    from rankscope.dashboard.analysis import digest  # noqa: F401\n"
    )
    out = _lint_imports(src, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    said = " ".join(out.stdout.split())
    assert "rankscope.dashboard.ingest.table -> rankscope.dashboard.analysis.digest" in said
