"""Where per-file ingest runs: a local process pool, or a Dask cluster.

``map_files(fn, paths, executor)`` calls ``fn(path)`` once per path and yields
``(path, result)`` as each finishes (in completion order). ``fn`` must be a
module-level function (it is pickled) whose result is small: on a cluster it
travels back over the network, so workers write the columnar cache themselves
(on a shared filesystem) and return a summary.

- ``local``: one process per core (fork), the pool ``load_run`` uses; in this
  process when there is one file or one core.
- ``dask``: ``distributed.Client`` on the scheduler in ``$RANKSCOPE_DASK_SCHEDULER``
  (``tcp://host:8786``), else a ``LocalCluster`` of one single-threaded worker
  process per core. Dask is imported here and nowhere else; without it a
  RankscopeError (exit 3) names the install command.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

EXECUTORS = ("local", "dask")
T = TypeVar("T")


def map_files(
    fn: Callable[[str], T], paths: Sequence[str], executor: str = "local"
) -> Iterator[tuple[str, T]]:
    if executor == "dask":
        yield from _map_dask(fn, paths)
    elif executor == "local":
        yield from _map_local(fn, paths)
    else:
        raise RankscopeError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")


def _map_local(fn: Callable[[str], T], paths: Sequence[str]) -> Iterator[tuple[str, T]]:
    workers = min(len(paths), os.cpu_count() or 1)
    if workers <= 1:
        for p in paths:
            yield p, fn(p)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork: workers inherit the imported modules, so each starts in milliseconds.
    ctx = mp.get_context("fork") if sys.platform != "win32" else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, p): p for p in paths}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _dask_client() -> Any:
    try:
        import distributed
    except ImportError:
        raise RankscopeError(
            "--executor dask needs Dask: pip install 'rankscope[dask]'",
            exit_code=EXIT_ENVIRONMENT,
        ) from None
    address = os.environ.get("RANKSCOPE_DASK_SCHEDULER")
    if address:
        try:
            return distributed.Client(address, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise RankscopeError(
                f"cannot reach the Dask scheduler at {address} ($RANKSCOPE_DASK_SCHEDULER): {e}",
                exit_code=EXIT_ENVIRONMENT,
            ) from None
    cluster = distributed.LocalCluster(
        n_workers=os.cpu_count() or 1,
        threads_per_worker=1,  # parsing holds the GIL: processes, not threads
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return distributed.Client(cluster)


def _map_dask(fn: Callable[[str], T], paths: Sequence[str]) -> Iterator[tuple[str, T]]:
    client = _dask_client()
    from distributed import as_completed

    try:
        # pure=False: the same file ingested twice (a changed trace) is a new task.
        futures = client.map(fn, list(paths), pure=False)
        owner = {f.key: p for f, p in zip(futures, paths, strict=True)}
        for fut in as_completed(futures):
            yield owner[fut.key], fut.result()
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
