"""The ``rankscope`` console script: one parser, one module per subcommand.

Review commands live in ``rankscope.dashboard.commands``; capture commands (run, attach,
monitor) live in ``rankscope.profiler.commands`` and are registered here, so the review
side may import the collector side but never the other way round.
``RankscopeError`` is caught only here: users see one line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from rankscope.profiler import __version__
from rankscope.profiler.commands import CAPTURE_COMMANDS, Command, load_command
from rankscope.profiler.errors import EXIT_BAD_INPUT, RankscopeError, one_line
from rankscope.profiler.settings import check_environment

REVIEW_COMMANDS = (
    ("report", "rankscope.dashboard.commands.report", "ReportCommand"),
    ("compare", "rankscope.dashboard.commands.compare", "CompareCommand"),
    ("dashboard", "rankscope.dashboard.commands.dashboard", "DashboardCommand"),
    ("demo", "rankscope.dashboard.commands.demo", "DemoCommand"),
    ("ingest", "rankscope.dashboard.commands.ingest", "IngestCommand"),
    ("export", "rankscope.dashboard.commands.export", "ExportCommand"),
    ("watch", "rankscope.dashboard.commands.watch", "WatchCommand"),
    ("metrics", "rankscope.dashboard.commands.metrics", "MetricsCommand"),
)
ALL_COMMANDS = REVIEW_COMMANDS + CAPTURE_COMMANDS


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (fast start)."""
    parser = argparse.ArgumentParser(
        prog="rankscope",
        description="Find why a distributed PyTorch training job is slow.",
    )
    parser.add_argument("--version", action="version", version=f"rankscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, cls_name in ALL_COMMANDS:
        if only is not None and name != only:
            continue
        cmd = load_command(module, cls_name)
        if cmd is None:
            continue
        # textwrap, not inspect.getdoc: inspect costs ~10 ms of start-up.
        raw = type(cmd).__doc__ or ""
        first, _, rest = raw.partition("\n")
        doc = (first.strip() + "\n" + textwrap.dedent(rest)).strip()
        summary = doc.splitlines()[0] if doc else ""
        p = sub.add_parser(
            cmd.name,
            help=summary,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.prepare_parser(p)
        p.set_defaults(_command=cmd)
    return parser


def cache_dir_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the cache a user named (``$RANKSCOPE_CACHE_DIR``) cannot be used, or None.

    The cache is never required (a trace is parsed again), but one the user set on
    purpose and that cannot be written is said, once, instead of skipped in silence."""
    where = (os.environ if environ is None else environ).get("RANKSCOPE_CACHE_DIR")
    if not where:
        return None
    path = Path(where)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent  # the folder it would be made in
    if probe.exists() and not probe.is_dir():
        why = "is not a directory" if probe == path else f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = "cannot be written" if probe == path else f"{probe} cannot be written"
    else:
        return None
    return (
        f"$RANKSCOPE_CACHE_DIR={where}: {why}; parsed traces are not cached (each"
        " report parses them again)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = {name for name, _, _ in ALL_COMMANDS}
    parser = build_parser(only=argv[0] if argv and argv[0] in names else None)
    args = parser.parse_args(argv)
    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        # The review side's variables (byte limits, cache, Dask), before any work.
        if cmd.name in {name for name, _, _ in REVIEW_COMMANDS}:
            check_environment()
            unusable = cache_dir_problem()
            if unusable is not None:
                print(f"rankscope {cmd.name}: warning: {one_line(unusable)}", file=sys.stderr)
    except ValueError as e:
        print(f"rankscope {cmd.name}: {one_line(str(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(cmd.run(args) or 0)
    except RankscopeError as e:
        print(f"rankscope {cmd.name}: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"rankscope {cmd.name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
