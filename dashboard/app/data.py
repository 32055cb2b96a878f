"""Cached access to runs, analyses and reports: the only module with st.cache_* decorators.

Views ask for ``analysis()`` / ``report()`` of the sidebar's ``Selection`` (run,
ranks, steps) and draw what they get. Loading goes through
``rankscope.dashboard.ingest.load_run`` (itself backed by the Parquet cache) and
``rankscope.dashboard.analysis``; results are held in memory per server, keyed on the
run's file signature (names, sizes, mtimes), so a live run refreshes as the
collector writes and a finished one is never read twice.

The dashboard's root path comes from ``$RANKSCOPE_DASHBOARD_PATH`` (set by
``rankscope dashboard``) or the script's first argument.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import streamlit as st

from rankscope.dashboard.analysis import comms as comms_mod
from rankscope.dashboard.analysis import timeline as timeline_mod
from rankscope.dashboard.analysis.analyse import Analysis, analyse
from rankscope.dashboard.analysis.report import build_report
from rankscope.dashboard.app import runs as runs_mod
from rankscope.dashboard.ingest.run import Run, load_run
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler.errors import RankscopeError

ENV_PATH = "RANKSCOPE_DASHBOARD_PATH"
ENV_LIVE = "RANKSCOPE_DASHBOARD_LIVE"
SELECTION_KEY = "rs_selection"

Signature = tuple[tuple[str, int, int], ...]
Ranks = tuple[int, ...] | None


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: one run, optionally some ranks and a step range ``A:B``."""

    path: str
    ranks: Ranks = None
    steps: str | None = None


def root_path() -> str | None:
    path = os.environ.get(ENV_PATH)
    if path:
        return path
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return args[0] if args else None


def live_default() -> bool:
    return os.environ.get(ENV_LIVE, "") not in ("", "0")


def stop_with(message: str, kind: str = "error") -> NoReturn:
    {"error": st.error, "info": st.info, "warning": st.warning}[kind](message)
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


@st.cache_data(ttl=10, show_spinner=False)
def runs_in(path: str) -> list[runs_mod.RunEntry]:
    return runs_mod.find_runs(path)


def signature(path: str) -> Signature:
    return runs_mod.run_signature(path)


@st.cache_resource(max_entries=8, show_spinner="Reading traces...")
def _load(path: str, sig: Signature, ranks: Ranks) -> Run:
    return load_run(path, ranks=ranks)


@st.cache_resource(max_entries=24, show_spinner="Analysing...")
def _analyse(path: str, sig: Signature, ranks: Ranks, steps: str | None) -> Analysis:
    return analyse(_load(path, sig, ranks), steps)


@st.cache_resource(max_entries=24, show_spinner=False)
def _report(path: str, sig: Signature, ranks: Ranks, steps: str | None) -> dict[str, Any]:
    return build_report(_analyse(path, sig, ranks, steps))


@st.cache_resource(max_entries=64, show_spinner=False)
def _timeline(path: str, sig: Signature, ranks: Ranks, steps: str | None, step: int) -> Table:
    a = _analyse(path, sig, ranks, steps)
    waits = comms_mod.wait_intervals(a.collectives)
    return timeline_mod.step_timeline(a.activities, a.windows, waits, step)


def selection() -> Selection:
    sel = st.session_state.get(SELECTION_KEY)
    if isinstance(sel, Selection):
        return sel
    path = root_path()
    if path is None:
        stop_with("No run given: start the dashboard with `rankscope dashboard PATH`.")
    try:
        return Selection(runs_in(path)[0].path)
    except RankscopeError as e:
        stop_with(str(e))


def load(sel: Selection | None = None) -> Run:
    sel = sel or selection()
    try:
        return _load(sel.path, signature(sel.path), sel.ranks)
    except RankscopeError as e:
        stop_with(str(e))


def analysis(sel: Selection | None = None) -> Analysis:
    sel = sel or selection()
    try:
        return _analyse(sel.path, signature(sel.path), sel.ranks, sel.steps)
    except RankscopeError as e:
        if runs_mod.is_live(sel.path) or live_default():
            stop_with(
                f"Waiting for the first profiler window of this live run ({e}). The page"
                " refreshes on its own.",
                "info",
            )
        stop_with(str(e))


def report(sel: Selection | None = None) -> dict[str, Any]:
    sel = sel or selection()
    analysis(sel)  # the same errors, shown the same way
    return _report(sel.path, signature(sel.path), sel.ranks, sel.steps)


def step_timeline(step: int, sel: Selection | None = None) -> Table:
    sel = sel or selection()
    analysis(sel)
    return _timeline(sel.path, signature(sel.path), sel.ranks, sel.steps, step)


def run_steps_and_ranks(path: str) -> tuple[list[int], list[int]]:
    """Every analysable step and every rank of a run, for the sidebar's choices."""
    try:
        a = _analyse(path, signature(path), None, None)
    except RankscopeError:
        return [], []
    return [s for s in a.steps if s >= 0], sorted(a.run.ranks)
