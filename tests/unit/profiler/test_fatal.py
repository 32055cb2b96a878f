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
