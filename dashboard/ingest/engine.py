"""Where per-file ingest runs: a local process pool, or a Dask cluster.

``map_files(fn, jobs, executor)`` calls ``fn(job)`` once per job (a path, or a
``workers.TraceJob``) and yields ``(job, result)`` as each finishes (in
completion order). ``fn`` must be a module-level function or a partial of one
(it is pickled) whose result is small: on a cluster it travels back over the
network, so workers write the columnar cache themselves (on a shared
filesystem) and return a summary.

- ``local``: one process per core (fork), the one pool of ingest (``load_run``
  and ``rankscope ingest`` both use it); in this process when there is one job
  or one core.
- ``dask``: ``distributed.Client`` on the scheduler in ``$RANKSCOPE_DASK_SCHEDULER``
  (``tcp://host:8786``), else a ``LocalCluster`` of one single-threaded worker
  process per core. Dask is imported here and nowhere else; without it a
  RankscopeError (exit 3) names the install command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

EXECUTORS = ("local", "dask")
J = TypeVar("J")
T = TypeVar("T")


def map_files(
    fn: Callable[[J], T], jobs: Sequence[J], executor: str = "local"
) -> Iterator[tuple[J, T]]:
    if executor == "dask":
        yield from _map_dask(fn, jobs)
    elif executor == "local":
        yield from _map_local(fn, jobs)
    else:
        raise RankscopeError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")


def _map_local(fn: Callable[[J], T], jobs: Sequence[J]) -> Iterator[tuple[J, T]]:
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        for job in jobs:
            yield job, fn(job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # fork: workers inherit the imported modules, so each starts in milliseconds.
    ctx = mp.get_context("fork") if sys.platform != "win32" else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _dask_client() -> Any:
    import logging  # here, not at the top: the report's start-up never needs it

    try:
        import distributed
    except ImportError:
        raise RankscopeError(
            "--executor dask needs Dask: pip install 'rankscope[dask]'",
            exit_code=EXIT_ENVIRONMENT,
        ) from None
    from rankscope.profiler.settings import env_value

    address = env_value("RANKSCOPE_DASK_SCHEDULER")
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


def _map_dask(fn: Callable[[J], T], jobs: Sequence[J]) -> Iterator[tuple[J, T]]:
    client = _dask_client()
    from distributed import as_completed

    try:
        # pure=False: the same file ingested twice (a changed trace) is a new task.
        futures = client.map(fn, list(jobs), pure=False)
        owner = {f.key: job for f, job in zip(futures, jobs, strict=True)}
        for fut in as_completed(futures):
            yield owner[fut.key], fut.result()
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
