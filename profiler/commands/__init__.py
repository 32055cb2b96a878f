"""Capture-side subcommands of the ``rankscope`` console script.

Each module holds one command class with a docstring (its help text),
``name``, ``prepare_parser(parser)`` and ``run(args) -> int``. The console
script lives on the review side (``rankscope.dashboard.cli``) and registers these, so a
training node that installs only ``profiler`` still has the code it needs.
"""

from __future__ import annotations

import argparse
from typing import Protocol


class Command(Protocol):
    """What ``rankscope.dashboard.cli`` needs of a subcommand."""

    name: str

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# (subcommand, module, class): modules are imported only when their command runs.
CAPTURE_COMMANDS = (
    ("run", "rankscope.profiler.commands.run", "RunCommand"),
    ("attach", "rankscope.profiler.commands.attach", "AttachCommand"),
    ("monitor", "rankscope.profiler.commands.monitor", "MonitorCommand"),
)


def load_command(module: str, cls_name: str) -> Command | None:
    """Instantiate one command; None if its module is not part of this build."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise
    cmd: Command = getattr(mod, cls_name)()
    return cmd
