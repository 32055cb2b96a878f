"""The Streamlit dashboard: ``main.py`` is the frame, ``views/`` draw, ``data.py`` caches.

Only ``main.py`` and ``views/*.py`` are Streamlit scripts; ``runs.py`` and
``model.py`` are plain functions (no streamlit import) so they are tested
without a server.
"""
