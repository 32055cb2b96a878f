"""``rankscope export``: write an analysed run in another tool's format (Perfetto)."""

from __future__ import annotations

import argparse
import os
import sys

from rankscope.profiler.errors import RankscopeError

FORMATS = ("perfetto",)
ALIGN = {"step-start": "step_start", "clock-offset": "clock_offset", "none": "none"}


class ExportCommand:
    """Export a run as one trace of the whole job, to open in Perfetto (ui.perfetto.dev).

    --format perfetto writes Chrome's JSON trace-event format (FILE ending in .gz:
    gzip-compressed): a process per rank with its host threads and GPU streams, the
    steps, each collective instance linked across ranks by flow arrows (in order of
    arrival: the last arrow ends on the rank the others waited for), NVML/host
    telemetry as counters and the report's verdict as instant events. Timestamps
    are aligned across ranks at step start (--align), as the Timeline view draws
    them; the file's metadata states the shift applied to each rank.

    An export past --max-gb (default 1, about what a browser opens) is refused
    before it is finished: choose fewer ranks (--ranks) or steps (--steps).

    Exit codes: 0 the trace was written; 2 bad input (no such path, no usable
    trace, a bad --steps or --ranks, a trace past --max-gb, FILE not writable).
    """

    name = "export"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="RUN", help="run directory, trace folder or trace file")
        parser.add_argument("--format", choices=FORMATS, default="perfetto", help="(perfetto)")
        parser.add_argument("-o", "--output", metavar="FILE", required=True, help="trace to write")
        parser.add_argument("--ranks", help="only these ranks, e.g. 0,2,5-7")
        parser.add_argument(
            "--steps", help="only these steps, inclusive: A:B, A:, :B or A (events inside them)"
        )
        parser.add_argument(
            "--align",
            choices=list(ALIGN),
            default="step-start",
            help="how ranks' clocks are aligned (default: step-start)",
        )
        parser.add_argument(
            "--max-gb", type=float, default=1.0, help="refuse a trace larger than this (default 1)"
        )

    def run(self, args: argparse.Namespace) -> int:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        from rankscope.dashboard.analysis.analyse import analyse
        from rankscope.dashboard.analysis.digest import store_digest
        from rankscope.dashboard.analysis.report import build_report
        from rankscope.dashboard.commands.report import parse_ranks
        from rankscope.dashboard.export.perfetto import write_perfetto
        from rankscope.dashboard.ingest.run import load_run, stderr_progress

        if not args.max_gb > 0:
            raise RankscopeError(f"--max-gb {args.max_gb}: expected a positive size")
        ranks = parse_ranks(args.ranks)
        run = load_run(args.path, ranks=ranks, progress=stderr_progress(), digest=store_digest)
        for w in run.warnings:
            print(f"rankscope export: warning: {w}", file=sys.stderr)
        analysis = analyse(run, args.steps)
        for w in analysis.warnings[len(run.warnings) :]:
            print(f"rankscope export: warning: {w}", file=sys.stderr)
        summary = write_perfetto(
            analysis,
            build_report(analysis),
            args.output,
            align=ALIGN[args.align],  # type: ignore[arg-type]
            only_steps=bool(args.steps),
            max_bytes=int(args.max_gb * 1e9),
        )
        for note in summary.alignment.notes:
            print(f"rankscope export: warning: {note}", file=sys.stderr)
        print(
            f"wrote {summary.path}: {len(summary.ranks)} rank(s), {summary.events:,} events,"
            f" {summary.flows} collective(s) linked across ranks, {summary.bytes / 1e6:.1f} MB"
            f" of JSON in {summary.seconds:.1f} s; open it at https://ui.perfetto.dev"
        )
        return 0
