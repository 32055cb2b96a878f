"""Run ``rankscope monitor`` in its own process against the fake NVML (signal tests).

``python attach_fake_monitor.py PROCESSES_JSON MONITOR_ARGS...``: PROCESSES_JSON
maps a GPU index to ``[[pid, used_bytes], ...]`` (FakeNvml's ``processes``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/

from fakes.fake_nvml import FakeNvml

from rankscope.profiler.commands.monitor import MonitorCommand
from rankscope.profiler.errors import RankscopeError


def main() -> int:
    processes = {
        int(gpu): [(int(pid), int(used)) for pid, used in procs]
        for gpu, procs in json.loads(sys.argv[1]).items()
    }
    command = MonitorCommand(nvml=FakeNvml(processes=processes))
    parser = argparse.ArgumentParser()
    command.prepare_parser(parser)
    try:
        return command.run(parser.parse_args(sys.argv[2:]))
    except RankscopeError as e:
        print(f"rankscope monitor: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
