"""rankscope: find why a distributed PyTorch training job is slow.

The one import name rankscope installs. ``from rankscope import Collector`` is
the in-code entry point of the collector, ``rankscope.load(path)`` the notebook
API's (a run analysed once: the typed report, pandas DataFrames, plotly charts;
``rankscope.dashboard.notebook``, which needs the ``dashboard`` extra). Both load
only when asked for. The two parts are subpackages:

- ``rankscope.profiler``: the collector, run inside every rank (sources in the
  repository's top-level ``profiler/`` folder). Cheap to import: torch, pynvml
  and everything heavy load only when a Collector starts.
- ``rankscope.dashboard``: the review side (ingest, analysis, report, the
  Streamlit app; sources in ``dashboard/``). It imports the collector side's
  run-format module, never the other way round.

An installed wheel holds both folders beside this file. A source checkout keeps
them at the repository's top level and links them here (``src/rankscope/profiler
-> ../../profiler``); the editable install puts only ``src/`` on ``sys.path`` (a
plain ``.pth`` entry, no import hook), so ``rankscope`` is the only import name
it adds, and type checkers and editors resolve it like any package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rankscope.dashboard.notebook import load
    from rankscope.profiler.collector import Collector

__all__ = ["Collector", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name == "Collector":
        from rankscope.profiler.collector import Collector

        return Collector
    if name == "load":
        from rankscope.dashboard.notebook import load

        return load
    raise AttributeError(f"module 'rankscope' has no attribute {name!r}")
