"""``rankscope metrics``: serve a run directory's light layer as Prometheus metrics."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rankscope.profiler import settings
from rankscope.profiler.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, RankscopeError
from rankscope.profiler.exporter import pid_exists


def _port(text: str) -> int:
    try:
        return settings.parse_port(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class MetricsCommand:
    """Serve a run's live figures on http://ADDR:PORT/metrics for Prometheus.

    Reads the run directory's per-rank light-layer files incrementally (a live
    job's, or a finished one's; on a login node, over a shared filesystem) and
    serves, per rank (labels job, rank, host): the last step and its duration,
    DataLoader wait, arrival lag at the latest collectives, the rank's state
    (running, stalled, stopped, lost), the whole-run straggler verdict over the
    recent steps, and GPU utilisation, memory and throttle reasons from NVML.
    Each scrape re-reads only what the files gained (at most once a second);
    the verdict is recomputed at most every --verdict-every seconds. Metric
    names: docs/metrics.md. `rankscope run --metrics-port P` starts this for
    the job it runs. Needs prometheus_client (pip install 'rankscope[metrics]').

    examples:
      rankscope metrics runs/exp1 --port 9464
      rankscope metrics runs/exp1 --once          # print one exposition and exit

    Exit codes: 0 stopped (or --once printed); 2 bad input (no such directory);
    3 environment (prometheus_client missing, the port cannot be bound).
    """

    name = "metrics"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="RUN", help="run directory (live or finished)")
        parser.add_argument("--port", type=_port, help="TCP port to serve /metrics on")
        parser.add_argument(
            "--addr", default="0.0.0.0", help="address to bind (default 0.0.0.0: every interface)"
        )
        parser.add_argument("--job", help="the job label (default: the run directory's name)")
        parser.add_argument(
            "--verdict-every",
            type=float,
            default=5.0,
            metavar="S",
            help="recompute the straggler verdict at most every S seconds (default 5)",
        )
        parser.add_argument(
            "--once", action="store_true", help="print the exposition once to stdout and exit"
        )
        # `rankscope run` / Collector: stop when the launching process is gone, and word
        # a port problem as that launcher's warning (the job runs on regardless).
        parser.add_argument("--exit-with-pid", type=int, help=argparse.SUPPRESS)
        parser.add_argument("--warn-as", help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        run_dir = Path(args.path)
        if not run_dir.is_dir():
            raise RankscopeError(f"{args.path}: not a directory", EXIT_BAD_INPUT)
        if args.port is None and not args.once:
            raise RankscopeError("give --port P (or --once)", EXIT_BAD_INPUT)
        if not args.verdict_every >= 0:
            raise RankscopeError("--verdict-every must be 0 or more seconds", EXIT_BAD_INPUT)
        from rankscope.dashboard.export import prometheus

        job = args.job or run_dir.absolute().name
        registry = prometheus.registry_for(run_dir, job, verdict_every_s=args.verdict_every)
        # The first read of a large run is the slow one (1,024 ranks: seconds): before
        # serving, so no scrape waits on it.
        prometheus.exposition(registry)
        if args.once:
            sys.stdout.write(prometheus.exposition(registry))
            return 0
        try:
            server = prometheus.serve(registry, args.port, args.addr)
        except OSError as e:
            reason = e.strerror or str(e)
            if args.warn_as:
                print(
                    f"{args.warn_as}: warning: metrics port {args.port}: {reason};"
                    " no metrics served (the job runs on)",
                    file=sys.stderr,
                )
                return EXIT_ENVIRONMENT
            raise RankscopeError(
                f"cannot serve on {args.addr}:{args.port}: {reason}", EXIT_ENVIRONMENT
            ) from None
        if not args.warn_as:
            print(
                f"rankscope metrics: serving {run_dir} on http://{args.addr}:{args.port}/metrics",
                file=sys.stderr,
            )
        try:
            while args.exit_with_pid is None or pid_exists(args.exit_with_pid):
                time.sleep(0.5)
        finally:
            server.shutdown()
        return 0
