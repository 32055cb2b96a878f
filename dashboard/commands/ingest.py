"""``rankscope ingest``: parse a run's traces into the columnar cache, without a report."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from rankscope.profiler.errors import RankscopeError


class IngestCommand:
    """Parse a run's traces into the columnar cache (with a summary per file and a digest per
    rank: what the report reads), without reporting.

    Run it where the trace files are, for example on each node for its own ranks
    (--ranks), with the cache ($RANKSCOPE_CACHE_DIR) on a shared filesystem; a
    later `rankscope report` or `dashboard` of the same PATH then reads the cache.
    --executor local (default) parses in a process pool, one worker per core;
    --executor dask maps the files over a Dask cluster: the scheduler in
    $RANKSCOPE_DASK_SCHEDULER, else a local one (pip install 'rankscope[dask]').

    Progress goes to stderr, one line per file; with --json, the summaries
    (one JSON object per file) go to stdout.

    Exit codes: 0 at least one trace ingested (the others named on stderr);
    2 bad input (no such path, no trace, no usable trace, a bad --ranks);
    3 --executor dask without Dask installed.
    """

    name = "ingest"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "path", metavar="PATH", help="run directory, trace folder or trace file"
        )
        parser.add_argument(
            "--ranks", help="only the files of these ranks (by file name), e.g. 0,2,5-7"
        )
        parser.add_argument(
            "--executor",
            choices=("local", "dask"),
            default="local",
            help="where files are parsed: local process pool (default) or a Dask cluster",
        )
        parser.add_argument(
            "--json", action="store_true", help="print each file's summary as a JSON line"
        )

    def run(self, args: argparse.Namespace) -> int:
        from rankscope.dashboard.analysis.digest import store_digest
        from rankscope.dashboard.commands.report import parse_ranks
        from rankscope.dashboard.ingest import cache, engine
        from rankscope.dashboard.ingest.run import (
            RunPlace,
            discover_trace_files,
            ingest_one,
            trace_jobs,
        )
        from rankscope.profiler import rundir

        ranks = parse_ranks(args.ranks)
        run_path, kind, files = discover_trace_files(Path(args.path))
        # Ranks named by exactly one file get their digest in the same pass.
        work = functools.partial(
            ingest_one, place=RunPlace(kind, str(run_path)), digest=store_digest
        )
        jobs = trace_jobs(files)
        if ranks is not None:
            wanted = set(ranks)
            jobs = [j for j in jobs if rundir.rank_from_filename(Path(j.path).name) in wanted]
            if not jobs:
                raise RankscopeError(
                    f"{run_path}: no trace file of rank(s) {args.ranks} (ranks are read"
                    " from file names such as rank3.pt.trace.json.gz)"
                )
        if not jobs:
            raise RankscopeError(f"{run_path}: no trace files")
        total, ok, failed = len(jobs), 0, 0
        where = cache.cache_root()
        print(
            f"rankscope ingest: {total} trace file(s) from {run_path} into {where}"
            f" ({args.executor})",
            file=sys.stderr,
            flush=True,
        )
        for done, (job, result) in enumerate(engine.map_files(work, jobs, args.executor), start=1):
            name = Path(job.path).name
            if "error" in result:
                failed += 1
                print(
                    f"rankscope ingest: [{done}/{total}] skipped {result['error']}", file=sys.stderr
                )
                continue
            ok += 1
            s = result["summary"]
            print(
                f"rankscope ingest: [{done}/{total}] {name}: rank {s['rank']},"
                f" {s['gpu_events'] + s['cpu_events']} events, cache {result['cached']}"
                f"{', digest cached' if result.get('digest') else ''}"
                f" ({result['seconds']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            if args.json:
                sys.stdout.write(json.dumps(result) + "\n")
        if not ok:
            raise RankscopeError(f"{run_path}: no usable trace ({failed} file(s) failed)")
        print(f"rankscope ingest: {ok} ingested, {failed} skipped", file=sys.stderr, flush=True)
        return 0
