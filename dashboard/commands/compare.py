"""``rankscope compare BASE NEW``: what got slower, on which rank and why; a CI gate."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rankscope.dashboard.commands.report import FORMATS, parse_ranks
from rankscope.profiler.errors import RankscopeError, one_line, terminal_safe

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.compare import Comparison, GateRule

# A --fail-if condition held beyond noise (beside 0 ok, 1 nothing, 2 bad input, 3 environment).
EXIT_REGRESSION = 4


class CompareCommand:
    """Compare two runs: the verdict first (slower, faster or no significant change),
    then where the step time went, per rank, stragglers before/after, collectives
    and kernels.

    BASE and NEW are what `rankscope report` reads. --ranks and --steps apply to
    both; --base-steps/--new-steps narrow one side (the same run twice compares two
    step ranges of it: before and after a change in one job). Both runs' trace
    windows are compared where both have one; otherwise the collector's step timer
    over every step (runs made with --profile off).
    A change is significant when its 90% bootstrap interval leaves out zero and it
    is at least 1 ms and 5% of BASE's step (docs/compare.md).

    Regression gate: --fail-if METRIC>+N% or METRIC>+Nms (step_ms, compute_ms,
    comm_ms, wait_ms, data_ms, host_ms, idle_ms, ...) or new-straggler,
    repeatable; a condition holds when the change passes N and is beyond noise.

    Examples:
      rankscope compare runs/last_week runs/today
      rankscope compare base new --fail-if 'step_ms>+5%' --fail-if new-straggler
      rankscope compare run run --base-steps :99 --new-steps 100:

    Exit codes: 0 compared (and no --fail-if condition holds); 4 a --fail-if
    condition holds; 2 bad input (no such path, nothing to compare, a bad
    --fail-if, --ranks or --steps).
    """

    name = "compare"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("base", metavar="BASE", help="the run to compare against")
        parser.add_argument("new", metavar="NEW", help="the run to judge")
        parser.add_argument(
            "--format", choices=FORMATS, default="text", help="output format (default: text)"
        )
        parser.add_argument("--ranks", help="only these ranks (both runs), e.g. 0,2,5-7")
        parser.add_argument("--steps", help="only these steps (both runs): A:B, A:, :B or A")
        parser.add_argument(
            "--base-steps",
            metavar="STEPS",
            help="only these steps of BASE (overrides --steps for BASE); with NEW the same run, "
            "compares two step ranges of one run",
        )
        parser.add_argument(
            "--new-steps",
            metavar="STEPS",
            help="only these steps of NEW (overrides --steps for NEW)",
        )
        parser.add_argument("-o", "--output", help="write to this file instead of stdout")
        parser.add_argument(
            "--fail-if",
            action="append",
            default=[],
            metavar="COND",
            help="exit 4 when COND holds beyond noise: step_ms>+5%%, wait_ms>+2ms, new-straggler",
        )

    def run(self, args: argparse.Namespace) -> int:
        from rankscope.dashboard.analysis.compare import parse_condition

        try:
            rules = [parse_condition(t) for t in args.fail_if]
        except ValueError as e:
            raise RankscopeError(str(e)) from None
        ranks = parse_ranks(args.ranks)
        base_steps = args.base_steps if args.base_steps is not None else args.steps
        new_steps = args.new_steps if args.new_steps is not None else args.steps
        comparison = compare_paths(
            args.base,
            args.new,
            ranks,
            args.steps,
            rules,
            base_steps=base_steps,
            new_steps=new_steps,
        )
        from rankscope.dashboard import compare_render

        render = {
            "text": compare_render.render_text,
            "markdown": compare_render.render_markdown,
            "json": compare_render.render_json,
        }[args.format]
        text = render(comparison)
        if args.format != "json":  # names from the runs' files are shown, never obeyed
            text = terminal_safe(text)
        if args.output:
            try:
                Path(args.output).write_text(text, encoding="utf-8")
            except OSError as e:
                raise RankscopeError(f"cannot write {args.output}: {e.strerror or e}") from None
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        for c in comparison.conditions:
            if c.holds:
                print(f"rankscope compare: {c.sentence}", file=sys.stderr)
        return EXIT_REGRESSION if comparison.regressed else 0


def compare_paths(
    base: str | Path,
    new: str | Path,
    ranks: list[int] | None = None,
    steps: str | None = None,
    rules: Sequence[GateRule] = (),
    *,
    base_steps: str | None = None,
    new_steps: str | None = None,
) -> Comparison:
    """Load, analyse and compare two runs (warnings on stderr, named by side).

    ``steps`` narrows both sides; ``base_steps``/``new_steps`` replace it for one side
    (two step ranges of one run: the same path twice)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from rankscope.dashboard.analysis.analyse import analyse
    from rankscope.dashboard.analysis.compare import Side, compare_runs
    from rankscope.dashboard.analysis.digest import store_digest
    from rankscope.dashboard.analysis.report import build_report
    from rankscope.dashboard.ingest.run import load_run, stderr_progress

    for path in (base, new):  # before the other run is read, which may take minutes
        if not Path(path).exists():
            raise RankscopeError(f"{path}: no such file or directory")
    sides = []
    ranges = (base_steps or steps, new_steps or steps)
    for label, path, step_range in (("BASE", base, ranges[0]), ("NEW", new, ranges[1])):
        run = load_run(path, ranks=ranks, progress=stderr_progress(), digest=store_digest)
        analysis = analyse(run, step_range)
        for w in analysis.warnings:
            print(f"rankscope compare: warning: {label}: {one_line(w)}", file=sys.stderr)
        sides.append(Side(analysis, build_report(analysis), step_range))
    try:
        return compare_runs(sides[0], sides[1], rules)
    except ValueError as e:
        raise RankscopeError(str(e)) from None
