"""Exports of an analysed run for other tools: a Perfetto trace (``perfetto``).

Each export reads ``analysis`` and ``ingest`` results and writes one file; it
never draws and never words a verdict of its own (sentences come from
``analysis.wording``). ``align`` holds the clock alignment the exports share.
"""
