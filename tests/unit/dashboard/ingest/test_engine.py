"""The executors: the local pool and Dask map a function over files alike."""

from __future__ import annotations

import sys

import pytest

from rankscope.dashboard.ingest import engine
from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError


def _length(path: str) -> int:
    return len(path)


def test_every_path_comes_back_once() -> None:
    """The local pool. Dask's LocalCluster spawns workers that re-import ``__main__``,
    which inside pytest may be a Streamlit script another test ran: it is tested
    through the real command in a fresh interpreter (``test_ingest_command``)."""
    paths = [f"/runs/rank{i}.pt.trace.json.gz" + "x" * i for i in range(5)]
    got = dict(engine.map_files(_length, paths, "local"))
    assert got == {p: len(p) for p in paths}


def test_dask_missing_is_exit_3_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    with pytest.raises(RankscopeError, match=r"pip install 'rankscope\[dask\]'") as e:
        list(engine.map_files(_length, ["a"], "dask"))
    assert e.value.exit_code == EXIT_ENVIRONMENT
