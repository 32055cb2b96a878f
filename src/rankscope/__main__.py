"""``python -m rankscope ARGS``: the same as the ``rankscope`` console script."""

import sys

from rankscope.dashboard.cli import main

sys.exit(main())
