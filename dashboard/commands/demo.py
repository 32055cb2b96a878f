"""``rankscope demo``: the dashboard on the bundled sample run, or on a live job (``--live``).

The sample is found at ``$RANKSCOPE_SAMPLE_DIR``, ``sample_traces/`` beside the
package (a source checkout) or inside it (a wheel). ``--report`` prints its
report instead of serving it (``--format`` as for ``rankscope report``) and
``--path`` prints where it is, so the sample needs no checkout. ``--live``
records a small 2-rank CPU job (``dashboard/app/demo_job.py``) with ``rankscope
run`` into a temporary run directory and opens the dashboard on it while it is
still being written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rankscope.dashboard.commands.dashboard import (
    add_server_arguments,
    check_server_arguments,
    serve,
    stop_on_signals,
)
from rankscope.dashboard.commands.report import FORMATS
from rankscope.profiler import rundir
from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

ENV_SAMPLE_DIR = "RANKSCOPE_SAMPLE_DIR"
SAMPLE_RUN = "ddp3_dataloader_straggler"
DEMO_JOB = Path(__file__).resolve().parents[1] / "app" / "demo_job.py"
LIVE_PROFILE = "10-12,30-32,50-52,70-72"
START_TIMEOUT_S = 120.0


def sample_path() -> Path:
    """The bundled sample run (or the folder of samples); a RankscopeError when absent."""
    env = os.environ.get(ENV_SAMPLE_DIR)
    here = Path(__file__).resolve().parents[1]
    # A checkout keeps it at the top level; a wheel ships it inside the package.
    roots = [Path(env)] if env else [here.parent / "sample_traces", here / "sample_traces"]
    for root in roots:
        for candidate in (root / SAMPLE_RUN, root):
            if candidate.is_dir() and (
                rundir.is_run_dir(candidate) or any(candidate.glob("*/rank*.meta.json"))
            ):
                return candidate
    root = roots[0]
    raise RankscopeError(
        f"no bundled sample run at {root}: run"
        f" `rankscope demo --live` to record one now, set {ENV_SAMPLE_DIR}, or point"
        " `rankscope dashboard PATH` at a run of your own"
    )


def live_job_command(run_dir: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rankscope.dashboard.cli",
        "run",
        "--out",
        str(run_dir),
        "--profile",
        LIVE_PROFILE,
        "--nvml-period-ms",
        "200",
        "--",
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(DEMO_JOB),
        "--steps",
        str(steps),
    ]


def _stop_job(job: subprocess.Popen[bytes]) -> None:
    if job.poll() is None:
        job.terminate()
        try:
            job.wait(timeout=15)
        except subprocess.TimeoutExpired:
            job.kill()


def _start_live(steps: int) -> tuple[subprocess.Popen[bytes], Path]:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise RankscopeError(
            "`rankscope demo --live` needs PyTorch (pip install torch)", EXIT_ENVIRONMENT
        ) from None
    base = Path(tempfile.mkdtemp(prefix="rankscope-demo-"))
    run_dir = base / "run"
    log = open(base / "job.log", "wb")  # noqa: SIM115 (the job outlives this function)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    job = subprocess.Popen(
        live_job_command(run_dir, steps), stdout=log, stderr=subprocess.STDOUT, env=env
    )
    print(
        f"rankscope demo: recording a 2-rank CPU job into {run_dir} (log: {base / 'job.log'})",
        flush=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not rundir.is_run_dir(run_dir):
            if job.poll() is not None:
                raise RankscopeError(
                    f"the demo job exited with code {job.returncode} before it started;"
                    f" see {base / 'job.log'}"
                )
            if time.monotonic() > deadline:
                raise RankscopeError(
                    f"the demo job did not start within {START_TIMEOUT_S:.0f} s;"
                    f" see {base / 'job.log'}"
                )
            time.sleep(0.5)
    except BaseException:  # an error, Ctrl-C, SIGTERM or SIGHUP: the job goes too
        _stop_job(job)
        raise
    return job, run_dir


class DemoCommand:
    """Open the dashboard on the bundled sample run: a 3-rank job with a data-loading straggler.

    With --live, record a small 2-rank CPU training job under the collector and
    watch the dashboard fill in while it runs (needs PyTorch). With --report,
    print the sample's report instead (what `rankscope report` prints); with
    --path, print where the sample is, to use it with any other command.

    Exit codes: 0 success; 2 bad input (no bundled sample, flags that do not go
    together); 3 an environment problem (no PyTorch for --live, streamlit missing).

    examples:
      rankscope demo
      rankscope demo --report --format markdown
      rankscope report "$(rankscope demo --path)" --format json
      rankscope demo --live --no-browser --port 8600
    """

    name = "demo"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--live", action="store_true", help="record a small live job and show it filling in"
        )
        parser.add_argument(
            "--steps", type=int, default=80, help="training steps of the live job (default 80)"
        )
        parser.add_argument(
            "--report",
            action="store_true",
            help="print the sample run's report instead of opening the dashboard",
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default=None,
            help="with --report: output format (default: text)",
        )
        parser.add_argument(
            "--path", action="store_true", help="print the sample run's path and exit"
        )
        add_server_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        check_server_arguments(args)
        if args.live and (args.report or args.path):
            raise RankscopeError("--live records a new run: it does not go with --report or --path")
        if args.report and args.path:
            raise RankscopeError("--report and --path: give one of them")
        if args.format is not None and not args.report:
            raise RankscopeError("--format goes with --report")
        if args.path:
            print(sample_path())
            return 0
        if args.report:
            from rankscope.dashboard.commands.report import write_report

            return write_report(sample_path(), args.format or "text", command="demo")
        if not args.live:
            return serve(sample_path(), args.host, args.port, open_browser=not args.no_browser)
        with stop_on_signals():
            job, run_dir = _start_live(args.steps)
            try:
                return serve(
                    run_dir, args.host, args.port, open_browser=not args.no_browser, live=True
                )
            finally:
                _stop_job(job)
                print(f"rankscope demo: the run stays in {run_dir}", file=sys.stderr)
