"""Parse speed per trace shape (GPU-kernel, CPU-operator and Python-function heavy), old vs new.

For each shape ``make_big_trace.make_big_trace`` writes one trace (``--mb`` MB
of JSON) under ``--dir``; then, in fresh subprocesses that import rankscope
from a source tree (this checkout's ``src`` and, with ``--old-src``, an older
one: ``git archive COMMIT | tar -x -C /tmp/old`` then ``/tmp/old/src``),
repetitions interleaved, medians:

- ``parse``: MB of JSON per CPU second of ``parse_trace`` (``time.process_time``
  around it: decompression, decode, column build);
- ``report``: CPU seconds of a whole cold ``rankscope report FILE --format json``
  (empty cache; start-up, parse, cache write, analysis), from ``RUSAGE_CHILDREN``.

CPU time, not wall time: a busy shared machine disturbs it far less. With
``--hta-python`` (a venv with HolisticTraceAnalysis, see ``bench_ingest.py``)
HTA's ``TraceAnalysis`` load of each trace is timed too (wall and CPU).

    python benchmarks/bench_shapes.py --old-src /tmp/old/src --mb 54 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_big_trace import SHAPES, make_big_trace

REPO = Path(__file__).resolve().parents[1]
_PARSE = """
import json, sys, time
from pathlib import Path
from rankscope.dashboard.ingest.kineto import parse_trace
cpu = time.process_time()
trace = parse_trace(Path(sys.argv[1]))
print(json.dumps({"cpu": time.process_time() - cpu, "rows": len(trace.gpu) + len(trace.cpu)}))
"""
_HTA = """
import sys, time
from hta.trace_analysis import TraceAnalysis
TraceAnalysis(trace_dir=sys.argv[1])
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def parse_cpu(src: Path, trace: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _PARSE, str(trace)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu: float = json.loads(out.stdout.strip().splitlines()[-1])["cpu"]
    return cpu


def report_cpu(src: Path, trace: Path) -> float:
    """CPU seconds of a cold report (its own empty cache) of ``trace``."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(src), RANKSCOPE_CACHE_DIR=cache)
        before = _children_cpu()
        cmd = [sys.executable, "-m", "rankscope.dashboard.cli", "report", str(trace)]
        subprocess.run(
            [*cmd, "--format", "json"],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        return _children_cpu() - before


def hta_load(python: str, folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of HTA's ``TraceAnalysis(trace_dir=folder)``, whole process."""
    before, start = _children_cpu(), time.perf_counter()
    subprocess.run([python, "-c", _HTA, str(folder)], capture_output=True, check=True)
    return time.perf_counter() - start, _children_cpu() - before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "rankscope-shapes")
    p.add_argument("--mb", type=float, default=54.0, help="JSON per trace, MB (default 54)")
    p.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    p.add_argument("--pretty", action="store_true", help="Kineto's indented layout")
    p.add_argument("--old-src", type=Path, help="src/ of an older checkout, measured alongside")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--hta-python", help="python of a venv with HolisticTraceAnalysis")
    args = p.parse_args()
    trees = {"new": REPO / "src"}
    if args.old_src:
        trees = {"old": args.old_src, **trees}
    traces: dict[str, tuple[Path, float]] = {}
    for shape in args.shapes:
        out = args.dir / shape / "rank0.pt.trace.json.gz"
        if out.exists():  # made by an earlier run: its JSON size is the gzip trailer's
            size = int.from_bytes(out.read_bytes()[-4:], "little")
        else:
            size = make_big_trace(out, args.mb, shape, args.pretty)
        traces[shape] = (out, size / 1e6)
    parse: dict[tuple[str, str], list[float]] = {}
    report: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for shape, (trace, _mb) in traces.items():
            for label, src in trees.items():
                parse.setdefault((shape, label), []).append(parse_cpu(src, trace))
                report.setdefault((shape, label), []).append(report_cpu(src, trace))
    hta: dict[str, tuple[float, float]] = {}
    if args.hta_python:
        for shape, (trace, _mb) in traces.items():
            runs = [hta_load(args.hta_python, trace.parent) for _ in range(args.repeat)]
            hta[shape] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
            )
    print(f"median of {args.repeat}; CPU seconds (the machine may be shared)")
    header = "| shape | JSON | " + " | ".join(
        f"parse {k} (MB/CPU-s) | report {k} (CPU s)" for k in trees
    )
    print(header + (" | HTA load (wall / CPU s) |" if hta else " |"))
    for shape, (_trace, mb) in traces.items():
        cells = []
        for label in trees:
            cpu = statistics.median(parse[shape, label])
            cells.append(f"{mb / cpu:.0f} | {statistics.median(report[shape, label]):.2f}")
        row = f"| {shape} | {mb:.0f} MB | " + " | ".join(cells) + " |"
        if shape in hta:
            row += f" {hta[shape][0]:.2f} / {hta[shape][1]:.2f} |"
        print(row)
    if "old" in trees:
        for shape in traces:
            ratio = statistics.median(parse[shape, "old"]) / statistics.median(parse[shape, "new"])
            rep = statistics.median(report[shape, "old"]) / statistics.median(report[shape, "new"])
            print(f"{shape}: parse {ratio:.2f}x, cold report {rep:.2f}x (old CPU / new CPU)")


if __name__ == "__main__":
    main()
