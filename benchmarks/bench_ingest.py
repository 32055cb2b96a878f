"""Ingest speed: whole-process ``rankscope report`` against HTA's ``TraceAnalysis`` load.

For each trace folder it times, side by side and interleaved (this machine is
shared and noisy, so the runs alternate and the median is reported):

- rankscope cold: ``rankscope report DIR --format json`` with an empty cache
- rankscope warm: the same command again, reading the Parquet cache
- HTA: ``python -c "TraceAnalysis(trace_dir=DIR)"`` in its own venv (whole process,
  like rankscope's number: interpreter start, imports and load)

HTA needs pandas < 3; install it apart from rankscope::

    python -m venv .venv-hta && .venv-hta/bin/pip install "pandas<3" HolisticTraceAnalysis
    python benchmarks/bench_ingest.py --hta-python .venv-hta/bin/python

Without HTA the script still times rankscope. ``--json FILE`` saves the figures.
rankscope's modules are byte-compiled first, as an installed package's are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / "tests" / "data"  # the real traces kept in the repository
DEFAULT_DIRS = [
    "reference_runs/h200_ddp4_straggler",
    "reference_runs/h200_ddp2_balanced",
    "public_traces/hta/trace_filter",
    "public_traces/hta/nccl_data",
    "public_traces/hta/cpu_only",
    "public_traces/hta/amd",
    "public_traces/hta/alexnet",
]
HTA_CODE = (
    "import logging, sys, warnings; logging.disable(logging.CRITICAL);"
    " warnings.simplefilter('ignore');"
    "from hta.trace_analysis import TraceAnalysis; TraceAnalysis(trace_dir=sys.argv[1])"
)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return elapsed


def rankscope_cmd(folder: Path) -> list[str]:
    exe = shutil.which("rankscope")
    base = [exe] if exe else [sys.executable, "-m", "rankscope.dashboard.cli"]
    return [*base, "report", str(folder), "--format", "json"]


def precompile() -> None:
    """Byte-compile rankscope's packages, as ``pip install`` does for an installed package.

    A development checkout may run with PYTHONDONTWRITEBYTECODE=1 (then every
    start compiles ~20 modules from source, ~30 ms) while HTA's site-packages
    are compiled: compiling first compares the two tools as users install them.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("rankscope")
    if spec and spec.origin:
        root = Path(spec.origin).parent
        # A source checkout links profiler/ and dashboard/ into src/rankscope, and
        # compile_dir does not follow links: compile each folder the links point at.
        for folder in [root, *(p.resolve() for p in root.iterdir() if p.is_symlink())]:
            compileall.compile_dir(str(folder), quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dirs", nargs="*", help="trace folders (default: the real traces in tests/data)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="interleaved repetitions (median reported)"
    )
    parser.add_argument(
        "--hta-python",
        default=os.environ.get("RANKSCOPE_HTA_PYTHON"),
        help="python of a venv with HTA",
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    dirs = [Path(d) for d in args.dirs] or [SHARED / d for d in DEFAULT_DIRS]
    dirs = [d for d in dirs if d.exists()]
    if not dirs:
        print("no trace folders found in tests/data", file=sys.stderr)
        return 2
    hta = args.hta_python
    if hta and not Path(hta).exists():
        print(f"--hta-python {hta}: not found; timing rankscope only", file=sys.stderr)
        hta = None

    precompile()
    results = []
    for folder in dirs:
        cold, warm, hta_t = [], [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "RANKSCOPE_CACHE_DIR": cache}
                cold.append(timed(rankscope_cmd(folder), env))
                warm.append(timed(rankscope_cmd(folder), env))
            if hta:
                hta_t.append(timed([hta, "-c", HTA_CODE, str(folder)]))
        row = {
            "folder": str(folder.relative_to(SHARED))
            if folder.is_relative_to(SHARED)
            else str(folder),
            "rankscope_cold_s": round(statistics.median(cold), 3),
            "rankscope_warm_s": round(statistics.median(warm), 3),
            "hta_s": round(statistics.median(hta_t), 3) if hta_t else None,
        }
        row["speedup_cold"] = (
            round(row["hta_s"] / row["rankscope_cold_s"], 1) if row["hta_s"] else None
        )
        results.append(row)
        print(
            f"{row['folder']:<40} cold {row['rankscope_cold_s']:6.2f} s"
            f"  warm {row['rankscope_warm_s']:6.2f} s"
            + (f"  HTA {row['hta_s']:6.2f} s  ({row['speedup_cold']}x)" if row["hta_s"] else ""),
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"repeat": args.repeat, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
