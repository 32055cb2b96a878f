"""rankscope's review side (``rankscope.dashboard``): ingest per-rank traces, analyse, report, draw.

``ingest`` turns traces into columnar tables, ``analysis`` computes (pure
functions over columnar tables, no streamlit), ``render`` writes
text/markdown/json reports, ``app`` draws in Streamlit. It never imports torch.
"""

from rankscope import __version__

__all__ = ["__version__"]
