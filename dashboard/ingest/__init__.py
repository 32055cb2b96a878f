"""Trace ingest: Kineto JSON -> columnar tables per rank, cached as Parquet.

``load_run(path)`` is the entry point (see ``rankscope.dashboard.ingest.run``).
"""

from rankscope.dashboard.ingest.run import RankData, Run, load_run

__all__ = ["RankData", "Run", "load_run"]
