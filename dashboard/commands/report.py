"""``rankscope report``: analyse a run and print text, markdown or JSON."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError, one_line, terminal_safe

FORMATS = ("text", "markdown", "json", "html")
HTML_INSTALL = 'pip install "rankscope[dashboard]"'

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.analyse import Analysis
    from rankscope.dashboard.analysis.report import Report


def parse_ranks(text: str | None) -> list[int] | None:
    """``0,2,5-7`` -> [0, 2, 5, 6, 7].

    Every rank must be below ``rundir.MAX_WORLD_SIZE`` (the largest world size
    rankscope reads), checked on the bounds of each range before any list is
    built: ``0-99999999999`` is a one-line error, never gigabytes of integers.
    """
    if not text:
        return None
    from rankscope.profiler.rundir import MAX_WORLD_SIZE

    spans: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            a, sep, b = part.partition("-")
            first, last = int(a), int(b) if sep else int(a)
            if first < 0 or last < first:
                raise ValueError
            if last >= MAX_WORLD_SIZE:
                raise RankscopeError(
                    f"--ranks {text[:80]!r}: rank {last} is beyond the largest world size"
                    f" rankscope reads ({MAX_WORLD_SIZE})"
                )
            spans.append((first, last))
    except ValueError:
        raise RankscopeError(f"--ranks {text[:80]!r}: expected a list like 0,2,5-7") from None
    if not spans:
        raise RankscopeError(f"--ranks {text[:80]!r}: no rank given")
    # merged first: 12,000 copies of one wide span cost one span, not 12,000 (bounded
    # by MAX_WORLD_SIZE ranks however the text repeats itself)
    merged: list[list[int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [r for first, last in merged for r in range(first, last + 1)]


def check_output(path: str | Path, output: str) -> None:
    """Refuse (exit 2) an ``-o`` that would overwrite one of the run's own inputs.

    That is the trace file PATH itself, or, under a run folder PATH, any file the
    run is read from (``rundir.is_run_input_name``: manifests, JSONL logs, traces,
    per-rank files). Symlinks are resolved first, so a link to an input is refused too;
    so is a hard link to one (the same file under another name, anywhere).
    """
    from rankscope.profiler.rundir import is_run_input_name

    source = Path(path).resolve()
    target = Path(output).resolve()
    if source.is_dir():
        inside = target.is_relative_to(source)
        refused = inside and is_run_input_name(target.name)
    else:
        refused = target == source
    refused = refused or _hard_link_to_input(source, target)
    if refused:
        raise RankscopeError(
            f"-o {output}: refusing to overwrite {target.name}, one of the inputs of {path}"
            " (write the report outside the run folder, or under a name such as report.md)"
        )


def _hard_link_to_input(source: Path, target: Path) -> bool:
    """``target`` exists and is, by device and inode, the file ``source`` or a run input
    under the folder ``source`` (only a file with more than one name can be)."""
    from rankscope.profiler.rundir import is_run_input_name

    try:
        st = target.stat()
    except OSError:
        return False
    if st.st_nlink < 2:
        return False
    key = (st.st_dev, st.st_ino)
    if not source.is_dir():
        return source.is_file() and _key(source) == key
    for dirpath, _, names in os.walk(source):
        for name in names:
            if is_run_input_name(name) and _key(Path(dirpath) / name) == key:
                return True
    return False


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class ReportCommand:
    """Analyse a run and print a report: findings first, then the per-rank numbers.

    PATH is a rankscope run directory, a folder of traces written by
    torch.profiler.tensorboard_trace_handler, an HTA-style folder (rank-N.json.gz),
    or a single trace file (.json or .json.gz); a folder with one such run below
    it reads that run, and one with several names them.

    --format html writes one self-contained page (verdict, findings, tables and the
    dashboard's step chart and heatmaps; opens offline): use it with -o report.html.
    It needs plotly, from the dashboard extra.

    Exit codes: 0 the report was written; 2 bad input (no such path, no usable
    trace, a bad --steps or --ranks); 3 --format html without plotly installed.
    Files that cannot be read are skipped with a warning on stderr and listed in
    the JSON's run.skipped_files.
    """

    name = "report"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "path", metavar="PATH", help="run directory, trace folder or trace file"
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default="text",
            help="output format (default: text)",
        )
        parser.add_argument("--ranks", help="only these ranks, e.g. 0,2,5-7")
        parser.add_argument("--steps", help="only these steps, inclusive: A:B, A:, :B or A")
        parser.add_argument(
            "-o", "--output", help="write the report to this file instead of stdout"
        )
        parser.add_argument(
            "--all-ranks",
            action="store_true",
            help="text and markdown: one row per rank in the per-rank tables (past 32 ranks"
            " they name the stragglers and most unusual ranks, then percentiles)",
        )

    def run(self, args: argparse.Namespace) -> int:
        ranks = parse_ranks(args.ranks)
        return write_report(
            args.path, args.format, ranks, args.steps, args.output, all_ranks=args.all_ranks
        )


def write_report(
    path: str | Path,
    fmt: str,
    ranks: list[int] | None = None,
    steps: str | None = None,
    output: str | None = None,
    command: str = "report",
    all_ranks: bool = False,
) -> int:
    """Analyse the run at ``path`` and write its report (stdout, or ``output``); exit code 0.

    Warnings go to stderr as ``rankscope COMMAND: warning: ...``.
    """
    if output:
        check_output(path, output)
    # No BLAS work happens here: don't let numpy's import start a thread pool for it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if fmt == "html":
        _check_html_deps()  # before the analysis: fail in a second, not after a minute
    from rankscope.dashboard.render import render_json, render_markdown, render_text

    analysis, report = analyse_report(path, ranks, steps, command)
    if fmt == "html":
        from rankscope.dashboard.render_html import render_html

        text = render_html(report, analysis)
    elif fmt == "json":
        text = render_json(report)
    else:
        render = render_text if fmt == "text" else render_markdown
        # names from the run's files (a group's description, a path) are shown, never obeyed
        text = terminal_safe(render(report, all_ranks=all_ranks))
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise RankscopeError(f"cannot write {output}: {e.strerror or e}") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def analyse_report(
    path: str | Path,
    ranks: list[int] | None = None,
    steps: str | None = None,
    command: str = "report",
) -> tuple[Analysis, Report]:
    """Load and analyse the run at ``path``: the analysis and the typed report every format reads.

    Warnings go to stderr as ``rankscope COMMAND: warning: ...``.
    """
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.analysis.digest import store_digest
    from rankscope.dashboard.analysis.report import build_report
    from rankscope.dashboard.ingest.run import load_run, stderr_progress

    run = load_run(path, ranks=ranks, progress=stderr_progress(), digest=store_digest)
    for w in run.warnings:
        print(f"rankscope {command}: warning: {one_line(w)}", file=sys.stderr)
    analysis = analyse(run, steps)
    for w in analysis.warnings[len(run.warnings) :]:
        print(f"rankscope {command}: warning: {one_line(w)}", file=sys.stderr)
    return analysis, build_report(analysis)


def html_deps_missing() -> str | None:
    """The first of plotly and pandas (the HTML renderer's) that is not installed, else None."""
    import importlib.util

    for name in ("plotly", "pandas"):
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _check_html_deps() -> None:
    """Exit 3 with the install command when the HTML renderer's plotly or pandas is missing."""
    if name := html_deps_missing():
        raise RankscopeError(
            f"--format html needs {name}: {HTML_INSTALL}", exit_code=EXIT_ENVIRONMENT
        )
