"""The one error type users see: a one-line message and a documented exit code.

Raised anywhere on either side; caught only in ``rankscope.dashboard.cli.main``, which
prints ``rankscope: <message>`` to stderr and exits with ``exit_code``.

Exit codes: 0 success, 1 the command ran but found nothing to act on
(for example ``attach`` where no rank captured), 2 bad input or usage,
3 an environment problem (no GPU for ``monitor``, a missing dependency).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOTHING = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


class RankscopeError(Exception):
    """A failure to show as one line, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code
