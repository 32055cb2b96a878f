"""The per-step cost of reading the training thread's CPU time and run-queue wait.

    python benchmarks/bench_cputime.py [N]

Times ``ThreadClock.read()`` (``time.thread_time_ns`` + one ``os.pread`` of
``/proc/thread-self/schedstat``), which ``Collector`` calls once per step.
"""

from __future__ import annotations

import sys
import time

from rankscope.profiler.cputime import ThreadClock


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    clock = ThreadClock()
    _cpu, runq = clock.read()
    print(f"schedstat readable: {runq >= 0}")
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            clock.read()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    print(f"ThreadClock.read(): {best / 1e3:.2f} us per step (best of 5 x {n})")


if __name__ == "__main__":
    main()
