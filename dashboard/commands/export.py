"""``rankscope export``: an analysed run as a Perfetto trace, or logged to MLflow or W&B."""

from __future__ import annotations

import argparse
import os
import sys

from rankscope.profiler.errors import RankscopeError, one_line

FORMATS = ("perfetto",)
TRACKERS = ("mlflow", "wandb")
ALIGN = {"step-start": "step_start", "clock-offset": "clock_offset", "none": "none"}
# flags of one kind of export only: (flag, attribute, the export it belongs to)
PERFETTO_ONLY = (
    ("--format", "format"),
    ("-o", "output"),
    ("--align", "align"),
    ("--max-gb", "max_gb"),
)
TRACKER_ONLY = (("--project", "project"), ("--run-name", "run_name"))


class ExportCommand:
    """Export a run as one Perfetto trace of the whole job, or log it to MLflow or W&B.

    --format perfetto writes Chrome's JSON trace-event format (FILE ending in .gz:
    gzip-compressed): a process per rank with its host threads and GPU streams, the
    steps, each collective instance linked across ranks by flow arrows (in order of
    arrival: the last arrow ends on the rank the others waited for), NVML/host
    telemetry as counters and the report's verdict as instant events. Timestamps
    are aligned across ranks at step start (--align), as the Timeline view draws
    them; the file's metadata states the shift applied to each rank.

    An export past --max-gb (default 1, about what a browser opens) is refused
    before it is finished: choose fewer ranks (--ranks) or steps (--steps).

    --to mlflow|wandb logs the report to an experiment tracker with its own client:
    the verdict and stragglers as tags and summary metrics, the whole run's
    per-step series (step_ms, max_lateness_ms, late_rank, data_wait_ms) and the
    report (rankscope-report.html, rankscope-report.json) as artifacts. MLflow
    writes to --tracking-uri (default $MLFLOW_TRACKING_URI, else file:./mlruns),
    experiment --experiment (default rankscope); W&B runs offline under --dir
    (default $WANDB_DIR, else here; upload with `wandb sync`) unless WANDB_MODE
    says otherwise, project --project (default rankscope). Each needs its extra:
    pip install "rankscope[mlflow]" or "rankscope[wandb]". See docs/trackers.md.

    Exit codes: 0 the trace was written or the run logged; 2 bad input (no such
    path, no usable trace, a bad --steps or --ranks, a trace past --max-gb, FILE
    or --dir not writable, flags of the other kind of export); 3 the tracker's library is
    not installed, or its client failed (shown in one line).
    """

    name = "export"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="RUN", help="run directory, trace folder or trace file")
        parser.add_argument("--format", choices=FORMATS, help="(perfetto, the default)")
        parser.add_argument(
            "-o", "--output", metavar="FILE", help="trace to write (needed for --format perfetto)"
        )
        parser.add_argument(
            "--to", choices=TRACKERS, help="log the report to this experiment tracker instead"
        )
        parser.add_argument(
            "--tracking-uri",
            metavar="URI",
            help="--to mlflow: where to log (default $MLFLOW_TRACKING_URI, else file:./mlruns)",
        )
        parser.add_argument(
            "--dir",
            metavar="DIR",
            help="--to wandb: folder W&B writes its run under (default $WANDB_DIR, else here)",
        )
        parser.add_argument(
            "--project",
            "--experiment",
            dest="project",
            metavar="NAME",
            help="--to: W&B project or MLflow experiment (default rankscope)",
        )
        parser.add_argument(
            "--run-name", metavar="NAME", help="--to: the tracker run's name (default: RUN's name)"
        )
        parser.add_argument("--ranks", help="only these ranks, e.g. 0,2,5-7")
        parser.add_argument(
            "--steps", help="only these steps, inclusive: A:B, A:, :B or A (events inside them)"
        )
        parser.add_argument(
            "--align",
            choices=list(ALIGN),
            help="perfetto: how ranks' clocks are aligned (default: step-start)",
        )
        parser.add_argument(
            "--max-gb", type=float, help="perfetto: refuse a trace larger than this (default 1)"
        )

    def run(self, args: argparse.Namespace) -> int:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        check_flags(args)
        if args.to:
            return export_to_tracker(args)
        from rankscope.dashboard.commands.report import analyse_report, parse_ranks
        from rankscope.dashboard.export.perfetto import write_perfetto

        max_gb = 1.0 if args.max_gb is None else args.max_gb
        if not max_gb > 0:
            raise RankscopeError(f"--max-gb {args.max_gb}: expected a positive size")
        ranks = parse_ranks(args.ranks)
        analysis, report = analyse_report(args.path, ranks, args.steps, "export")
        summary = write_perfetto(
            analysis,
            report,
            args.output,
            align=ALIGN[args.align or "step-start"],  # type: ignore[arg-type]
            only_steps=bool(args.steps),
            max_bytes=int(max_gb * 1e9),
        )
        for note in summary.alignment.notes:
            print(f"rankscope export: warning: {one_line(note)}", file=sys.stderr)
        print(
            f"wrote {summary.path}: {len(summary.ranks)} rank(s), {summary.events:,} events,"
            f" {summary.flows} collective(s) linked across ranks, {summary.bytes / 1e6:.1f} MB"
            f" of JSON in {summary.seconds:.1f} s; open it at https://ui.perfetto.dev"
        )
        return 0


def check_flags(args: argparse.Namespace) -> None:
    """Refuse (exit 2, one line) flags of the other kind of export, and perfetto without -o."""
    if args.to:
        for flag, attr in PERFETTO_ONLY:
            if getattr(args, attr) is not None:
                raise RankscopeError(
                    f"{flag} is for the Perfetto export, not --to {args.to}"
                    " (a tracker export writes no file of its own)"
                )
        if args.to == "wandb" and args.tracking_uri:
            raise RankscopeError(
                "--tracking-uri is for --to mlflow; W&B writes under --dir (or $WANDB_DIR)"
            )
        if args.to == "mlflow" and args.dir:
            raise RankscopeError("--dir is for --to wandb; MLflow logs to --tracking-uri")
        return
    for flag, attr in (*TRACKER_ONLY, ("--tracking-uri", "tracking_uri"), ("--dir", "dir")):
        if getattr(args, attr) is not None:
            raise RankscopeError(f"{flag} needs --to mlflow or --to wandb")
    if not args.output:
        raise RankscopeError(
            "-o FILE is needed for --format perfetto (or log to a tracker: --to mlflow|wandb)"
        )


def export_to_tracker(args: argparse.Namespace) -> int:
    """``--to mlflow|wandb``: the report, its verdict sentence and the HTML and JSON reports."""
    from rankscope.dashboard.commands.report import analyse_report, html_deps_missing, parse_ranks
    from rankscope.dashboard.export import trackers

    tracker: trackers.Tracker = args.to
    ranks = parse_ranks(args.ranks)
    trackers.require(tracker)  # before the analysis: fail in a second, not after a minute
    analysis, report = analyse_report(args.path, ranks, args.steps, "export")
    from rankscope.dashboard.render import hang_lines, render_json, verdict_sentence

    artifacts = {"rankscope-report.json": render_json(report)}
    if missing := html_deps_missing():
        print(
            f"rankscope export: warning: no HTML report logged: it needs {missing}"
            ' (pip install "rankscope[dashboard]")',
            file=sys.stderr,
        )
    else:
        from rankscope.dashboard.render_html import render_html

        artifacts["rankscope-report.html"] = render_html(report, analysis)
    # a hung run's first line is the hang ("HUNG: rank 2 never reached ..."), as in the report
    verdict = " ".join([*hang_lines(report, False)[:1], verdict_sentence(report)])
    record = trackers.tracker_record(report, verdict, artifacts)
    if report.whole_run is None:
        print(
            "rankscope export: warning: no per-step series logged: the run has no whole-run"
            " light layer (a run captured by `rankscope run` or `rankscope.Collector` has one)",
            file=sys.stderr,
        )
    project = args.project or trackers.DEFAULT_PROJECT
    if tracker == "mlflow":
        done = trackers.to_mlflow(record, args.tracking_uri, project, args.run_name)
        print(
            f"logged MLflow run {done.run_id} to {done.location}, experiment {done.experiment}:"
            f" {len(record.metrics)} summary metric(s), {done.points} per-step point(s),"
            f" artifacts {', '.join(done.artifacts)}"
        )
    else:
        done = trackers.to_wandb(record, project, args.run_name, args.dir)
        where = f"offline in {done.location}" if done.offline else f"at {done.location}"
        print(
            f"logged W&B run {done.run_id} {where}, project {done.experiment}:"
            f" {len(record.metrics)} summary metric(s), {done.points} per-step point(s),"
            f" artifacts {', '.join(done.artifacts)}"
            + (f"; upload it with: wandb sync {done.location}" if done.offline else "")
        )
    return 0
