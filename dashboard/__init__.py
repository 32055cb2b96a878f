"""rankscope's review side: ingest per-rank traces, analyse them, report and draw.

``dashboard.ingest`` turns traces into columnar tables, ``dashboard.analysis``
computes (pure functions over DataFrames, no streamlit), ``dashboard.render``
writes text/markdown/json reports, ``dashboard.app`` draws in Streamlit.
"""

__version__ = "0.1.0"
