"""The analysis engine: pure functions over columnar tables; no streamlit, no torch.

``analyse(run, steps)`` (``rankscope.dashboard.analysis.analyse``) runs every analysis
once and returns an ``Analysis``; ``build_report`` gathers it into the typed
``rankscope.report/1`` ``Report``. Each module documents the columns it reads and
returns in its docstring.
"""
