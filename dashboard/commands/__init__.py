"""Review-side subcommands of ``rankscope``: one module each (report, dashboard, demo)."""
