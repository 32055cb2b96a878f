"""The analysis engine: pure functions over columnar tables; no streamlit, no torch.

``analyse(run, steps)`` (``rankscope.dashboard.analysis.analyse``) runs every analysis
once and returns an ``Analysis``; ``build_report`` turns it into the
``rankscope.report/1`` dict. Each module documents the columns it reads and
returns in its docstring.
"""
