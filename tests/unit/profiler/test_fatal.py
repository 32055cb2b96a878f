"""A fatal signal's stacks (``evidence.open_fatal``, ``read_fatal``) on faulthandler's text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rankscope.profiler import evidence as ev

CRASH = """
import faulthandler, os, sys
sys.path.insert(0, {src!r})
from rankscope.profiler import evidence as ev
path, f = ev.open_fatal(__import__("pathlib").Path({run!r}), 3)
faulthandler.enable(file=f, all_threads=True)

def native_crash():
    os.abort()

def step():
    native_crash()

step()
"""


def test_an_aborted_process_leaves_its_error_and_stack(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[3] / "src")
    code = CRASH.format(src=src, run=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode != 0
    fatal = ev.read_fatal(tmp_path / "rank3.fatal.txt")
    assert fatal is not None and fatal.error == "Fatal Python error: Aborted"
    # outermost first, the innermost (where the signal hit) last
    assert [f.function for f in fatal.frames] == ["<module>", "step", "native_crash"]
    assert fatal.frames[-1].line == 9


def test_names_are_never_reused(tmp_path: Path) -> None:
    first = ev.open_fatal(tmp_path, 0)
    second = ev.open_fatal(tmp_path, 0)
    assert first is not None and second is not None
    first[1].close()
    second[1].close()
    assert (first[0].name, second[0].name) == ("rank0.fatal.txt", "rank0.2.fatal.txt")


def test_an_empty_or_unrelated_file_holds_no_error(tmp_path: Path) -> None:
    path = tmp_path / "rank0.fatal.txt"
    path.write_text("")
    assert ev.read_fatal(path) is None
    path.write_text("hello\n")
    assert ev.read_fatal(path) is None


# faulthandler's dump when gloo aborted a desynced rank from its transport thread: no
# "Current thread" (Python does not run that thread), the collector's two threads first.
GLOO_ABORT = """Fatal Python error: Aborted

Thread 0x00007f69e55106c0 (most recent call first):
  File "/x/rankscope/profiler/progress.py", line 199 in _wait
  File "/x/rankscope/profiler/progress.py", line 177 in _run
  File "/py/lib/python3.11/threading.py", line 982 in run
  File "/py/lib/python3.11/threading.py", line 1045 in _bootstrap_inner
  File "/py/lib/python3.11/threading.py", line 1002 in _bootstrap

Thread 0x00007f69e5d116c0 (most recent call first):
  File "/py/lib/python3.11/threading.py", line 331 in wait
  File "/x/rankscope/profiler/recorder.py", line 181 in run
  File "/py/lib/python3.11/threading.py", line 1002 in _bootstrap

Thread 0x00007f6a06ff6b80 (most recent call first):
  File "/venv/torch/distributed/distributed_c10d.py", line 3252 in all_reduce
  File "/job/hang_job.py", line 111 in main
  File "/job/hang_job.py", line 121 in <module>

Extension modules: numpy._core._multiarray_umath, torch._C (total: 2)
"""


def test_a_signal_on_a_thread_python_does_not_run_gives_the_main_threads_stack(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rank1.fatal.txt"
    path.write_text(GLOO_ABORT)
    fatal = ev.read_fatal(path)
    assert fatal is not None and fatal.error == "Fatal Python error: Aborted"
    assert [f.function for f in fatal.frames] == ["<module>", "main", "all_reduce"]
    # no thread runs a module's code: the oldest listed (the last)
    path.write_text(GLOO_ABORT.replace("in <module>", "in run_forever"))
    fatal = ev.read_fatal(path)
    assert fatal is not None and fatal.frames[-1].function == "all_reduce"
