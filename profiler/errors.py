"""The one error type users see: a one-line message and a documented exit code.

Raised anywhere on either side; caught only in ``rankscope.dashboard.cli.main``, which
prints ``rankscope: <message>`` to stderr and exits with ``exit_code``.

Exit codes: 0 success, 1 the command ran but found nothing to act on
(for example ``attach`` where no rank captured), 2 bad input or usage,
3 an environment problem (no GPU for ``monitor``, a missing dependency).
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_NOTHING = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


class RankscopeError(Exception):
    """A failure to show as one line, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides
# and isolates (text that reads in another order than it is stored).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _shown(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN`` (``\\uNNNN``), newlines
    and tabs kept: a name from a run's files (a process group's description, a path)
    cannot move the cursor, retitle or clear the user's terminal, or reorder a line."""
    return _CONTROL.sub(_shown, text)


def one_line(text: str) -> str:
    """``terminal_safe`` for a message of one line: a newline in it is shown too."""
    return _CONTROL_OR_NEWLINE.sub(_shown, text)
