"""Cached access to runs, analyses and reports: the only module with st.cache_* decorators.

Views ask for ``analysis()`` / ``report()`` of the sidebar's ``Selection`` (run,
ranks, steps), and for every table they draw by name (``arrival_lag_matrix()``,
``kernels_frame()``, ...: ``model`` shapes them, this module caches them per
selection), and draw what they get; they compute nothing themselves. Loading goes through
``rankscope.dashboard.ingest.load_run`` (itself backed by the Parquet cache) and
``rankscope.dashboard.analysis``; results are held in memory per server, keyed on the
run's file signature (names, sizes, mtimes), so a live run refreshes as the
collector writes and a finished one is never read twice.

The dashboard's root path comes from ``$RANKSCOPE_DASHBOARD_PATH`` (set by
``rankscope dashboard``) or the script's first argument.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import pandas as pd
import streamlit as st

from rankscope.dashboard.analysis import comms as comms_mod
from rankscope.dashboard.analysis import timeline as timeline_mod
from rankscope.dashboard.analysis.analyse import Analysis, analyse
from rankscope.dashboard.analysis.compare import Comparison, Side, compare_runs
from rankscope.dashboard.analysis.digest import store_digest
from rankscope.dashboard.analysis.hang import HangVerdict
from rankscope.dashboard.analysis.report import Report, build_report
from rankscope.dashboard.analysis.wholerun import WholeRun
from rankscope.dashboard.app import model, text
from rankscope.dashboard.app import runs as runs_mod
from rankscope.dashboard.ingest.run import Run, load_run
from rankscope.dashboard.ingest.table import Table
from rankscope.profiler.errors import RankscopeError

ENV_PATH = "RANKSCOPE_DASHBOARD_PATH"
ENV_LIVE = "RANKSCOPE_DASHBOARD_LIVE"
SELECTION_KEY = "rs_selection"
STEP_JUMP_KEY = "rs_steps_jump"  # (path, first, last, count): set_step_range's request

# The identity of a run's files (a hash of their names, sizes and mtimes): part of
# every cache key, so a run that changed on disk is read again.
Signature = str
# A page asks for the signature a dozen times; one stat of every file per
# SIGNATURE_TTL_S is enough (it took 0.56 s a page at 1,024 ranks, 4,100 files).
SIGNATURE_TTL_S = 1.0
_signatures: dict[str, tuple[float, Signature]] = {}
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


@st.cache_data(ttl=10, show_spinner=False)
def run_details(path: str) -> runs_mod.RunDetails:
    """The run's own start, duration, world size, command and hosts (``runs.run_details``)."""
    return runs_mod.run_details(path)


def signature(path: str) -> Signature:
    """A short hash of ``runs.run_signature`` (hashing the tuple itself for each cached
    call cost Streamlit 2.2 s a page at 1,024 ranks), kept ``SIGNATURE_TTL_S``."""
    now = time.monotonic()
    hit = _signatures.get(path)
    if hit is not None and now - hit[0] < SIGNATURE_TTL_S:
        return hit[1]
    sig = hashlib.sha1(repr(runs_mod.run_signature(path)).encode()).hexdigest()
    if len(_signatures) > 64:
        _signatures.clear()
    _signatures[path] = (now, sig)
    return sig


@st.cache_resource(max_entries=8, show_spinner="Reading traces...")
def _load(path: str, sig: Signature, ranks: Ranks) -> Run:
    return load_run(path, ranks=ranks, digest=store_digest)


@st.cache_resource(max_entries=24, show_spinner="Analysing...")
def _analyse(path: str, sig: Signature, ranks: Ranks, steps: str | None) -> Analysis:
    return analyse(_load(path, sig, ranks), steps)


@st.cache_resource(max_entries=24, show_spinner=False)
def _report(path: str, sig: Signature, ranks: Ranks, steps: str | None) -> Report:
    return build_report(_analyse(path, sig, ranks, steps))


@st.cache_resource(max_entries=64, show_spinner="Reading the step's events...")
def _timeline(
    path: str, sig: Signature, ranks: Ranks, steps: str | None, step: int, drawn: Ranks
) -> Table:
    a = _analyse(path, sig, ranks, steps)
    waits = comms_mod.wait_intervals(a.collectives)
    return timeline_mod.step_timeline(a.activities, a.windows, waits, step, ranks=drawn)


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
        stop_with(text.md(e))


def load(sel: Selection | None = None) -> Run:
    sel = sel or selection()
    try:
        return _load(sel.path, signature(sel.path), sel.ranks)
    except RankscopeError as e:
        stop_with(text.md(e))


def analysis(sel: Selection | None = None) -> Analysis:
    sel = sel or selection()
    try:
        return _analyse(sel.path, signature(sel.path), sel.ranks, sel.steps)
    except RankscopeError as e:
        if runs_mod.is_live(sel.path) or live_default():
            stop_with(
                f"Waiting for the first profiler window of this live run ({text.md(e)}). The page"
                " refreshes on its own.",
                "info",
            )
        stop_with(text.md(e))


def report(sel: Selection | None = None) -> Report:
    sel = sel or selection()
    analysis(sel)  # the same errors, shown the same way
    return _report(sel.path, signature(sel.path), sel.ranks, sel.steps)


def step_timeline(
    step: int, sel: Selection | None = None, drawn: Sequence[int] | None = None
) -> Table:
    """``step``'s segments for the ranks ``drawn`` (None: every rank): only their events
    are read, so a 1,024-rank run draws its few chosen ranks without reading the rest."""
    sel = sel or selection()
    analysis(sel)
    chosen = tuple(sorted(drawn)) if drawn is not None else None
    return _timeline(sel.path, signature(sel.path), sel.ranks, sel.steps, step, chosen)


def _step_jump(path: str) -> tuple[int, int, int] | None:
    """(first, last, how many jumps so far) another page set for ``path``'s step range."""
    jump = st.session_state.get(STEP_JUMP_KEY)
    return jump[1:] if isinstance(jump, tuple) and jump[0] == path else None


def step_range_key(path: str, steps: list[int]) -> str:
    """The sidebar step slider's widget key.

    It carries the choices on offer (when a live run adds steps, the slider starts
    again instead of holding a stale range) and the count of jumps another page asked
    for (``set_step_range``): a new key is a new slider, drawn at the range asked for,
    without writing into a live widget's state.
    """
    jump = _step_jump(path)
    return f"rs_steps|{path}|{steps[0]}-{steps[-1]}|{len(steps)}|{jump[2] if jump else 0}"


def step_range_default(path: str, steps: list[int]) -> tuple[int, int]:
    """Where the sidebar's step slider starts: the range a page jumped to, else every step."""
    jump = _step_jump(path)
    if jump and jump[0] in steps and jump[1] in steps and jump[0] <= jump[1]:
        return jump[0], jump[1]
    return steps[0], steps[-1]


def set_step_range(path: str, first: int, last: int) -> None:
    """Move the sidebar's step range to ``first``..``last`` from the next rerun on
    (call it from a widget callback, which runs before the sidebar is drawn again)."""
    jump = _step_jump(path)
    st.session_state[STEP_JUMP_KEY] = (path, first, last, (jump[2] if jump else 0) + 1)


def run_steps_and_ranks(path: str) -> tuple[list[int], list[int]]:
    """Every analysable step and every rank of a run, for the sidebar's choices."""
    try:
        a = _analyse(path, signature(path), None, None)
    except RankscopeError:
        return [], []
    return [s for s in a.steps if s >= 0], sorted(a.run.ranks)


# --- the tables the views draw, shaped by ``model`` and cached per selection ---

_FRAMES: dict[str, Callable[[Analysis, Report, Any], pd.DataFrame]] = {
    "ranks": lambda a, r, _: model.ranks_frame(r),
    "breakdown_long": lambda a, r, _: model.breakdown_long(r),
    "rank_step_matrix": lambda a, r, column: model.rank_step_matrix(a.breakdown, column),
    "steps_by_rank": lambda a, r, _: model.steps_by_rank(a.breakdown),
    "step_rows": lambda a, r, step: model.step_rows(a.breakdown, step),
    "last_arrival_matrix": lambda a, r, _: model.last_arrival_matrix(
        a.collectives, list(a.run.ranks)
    ),
    "imbalance": lambda a, r, _: model.imbalance_frame(a.imbalance),
    "collectives": lambda a, r, _: model.collectives_frame(a.collective_summary),
    "collective_time_by_rank": lambda a, r, _: model.collective_time_by_rank(
        a.collectives, len(a.steps)
    ),
    "collective_time_long": lambda a, r, _: model.collective_time_long(
        model.collective_time_by_rank(a.collectives, len(a.steps))
    ),
    "arrival_lag_matrix": lambda a, r, _: model.arrival_lag_matrix(a.collectives),
    "pipeline_stages": lambda a, r, i: model.pipeline_stages_long(r.pipelines[i]),
    "pipeline_step": lambda a, r, arg: model.pipeline_step_blocks(
        a.collectives, a.windows, r.pipelines[arg[0]], arg[1]
    ),
    "groups": lambda a, r, _: model.groups_frame(r.process_groups),
    "group_lag_matrix": lambda a, r, _: model.group_lag_matrix(r.process_groups),
    "kernels": lambda a, r, _: model.kernels_frame(a.kernels),
    "utilisation": lambda a, r, _: model.utilisation_frame(r),
    "utilisation_long": lambda a, r, _: model.utilisation_long(model.utilisation_frame(r)),
    "idle_long": lambda a, r, _: model.idle_long(r),
    "findings": lambda a, r, _: model.findings_frame(r),
    "stragglers": lambda a, r, _: model.stragglers_frame(r),
    "per_step": lambda a, r, _: model.per_step_frame(r),
    "per_step_matrix": lambda a, r, column: model.per_step_matrix(r, column),
    "stall_marks": lambda a, r, column: model.stall_marks(r, column),
    "telemetry": lambda a, r, t0: model.telemetry_frame(a.run, t0),
    "telemetry_long": lambda a, r, arg: model.telemetry_long(
        model.telemetry_frame(a.run, arg[0]), arg[1], arg[2], model.TELEMETRY_LABELS
    ),
    "whole_run_heatmap": lambda a, r, arg: model.whole_run_heatmap(a, *arg),
    "whole_run_steps": lambda a, r, columns: model.whole_run_steps(a, columns),
    "whole_run_telemetry": lambda a, r, arg: model.whole_run_telemetry(a, *arg),
    "trace_windows": lambda a, r, _: model.trace_windows(a),
    "slow_steps": lambda a, r, _: model.slow_steps(a),
}


@st.cache_data(max_entries=256, show_spinner=False)
def _frame(
    name: str, path: str, sig: Signature, ranks: Ranks, steps: str | None, arg: Any
) -> pd.DataFrame:
    a = _analyse(path, sig, ranks, steps)
    return _FRAMES[name](a, _report(path, sig, ranks, steps), arg)


def frame(name: str, arg: Any = None, sel: Selection | None = None) -> pd.DataFrame:
    """The table ``name`` of ``_FRAMES`` for the selection (a copy: views may reshape it)."""
    sel = sel or selection()
    analysis(sel)  # the same errors, shown the same way
    return _frame(name, sel.path, signature(sel.path), sel.ranks, sel.steps, arg)


def ranks_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("ranks", sel=sel)


def breakdown_long(sel: Selection | None = None) -> pd.DataFrame:
    return frame("breakdown_long", sel=sel)


def rank_step_matrix(column: str, sel: Selection | None = None) -> pd.DataFrame:
    return frame("rank_step_matrix", column, sel)


def steps_by_rank(sel: Selection | None = None) -> pd.DataFrame:
    return frame("steps_by_rank", sel=sel)


def step_rows(step: int, sel: Selection | None = None) -> pd.DataFrame:
    return frame("step_rows", step, sel)


def slowest_step(sel: Selection | None = None) -> int:
    a = analysis(sel)
    return model.slowest_step(a.breakdown, a.steps)


def last_arrival_matrix(sel: Selection | None = None) -> pd.DataFrame:
    return frame("last_arrival_matrix", sel=sel)


def imbalance_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("imbalance", sel=sel)


def collectives_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("collectives", sel=sel)


def collective_time_by_rank(sel: Selection | None = None) -> pd.DataFrame:
    return frame("collective_time_by_rank", sel=sel)


def collective_time_long(sel: Selection | None = None) -> pd.DataFrame:
    return frame("collective_time_long", sel=sel)


def arrival_lag_matrix(sel: Selection | None = None) -> pd.DataFrame:
    return frame("arrival_lag_matrix", sel=sel)


def kernels_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("kernels", sel=sel)


def utilisation_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("utilisation", sel=sel)


def utilisation_long(sel: Selection | None = None) -> pd.DataFrame:
    return frame("utilisation_long", sel=sel)


def idle_long(sel: Selection | None = None) -> pd.DataFrame:
    return frame("idle_long", sel=sel)


def findings_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("findings", sel=sel)


def stragglers_frame(sel: Selection | None = None) -> pd.DataFrame:
    return frame("stragglers", sel=sel)


def per_step_frame(sel: Selection | None = None) -> pd.DataFrame:
    """The diagnosis' per-(rank, step) evidence (see ``model.per_step_frame``)."""
    return frame("per_step", sel=sel)


def per_step_matrix(column: str, sel: Selection | None = None) -> pd.DataFrame:
    return frame("per_step_matrix", column, sel)


def stall_marks(column: str = "excess_ms", sel: Selection | None = None) -> pd.DataFrame:
    """Where the diagnosis says a rank held the others back (see ``model.stall_marks``)."""
    return frame("stall_marks", column, sel)


def telemetry_frame(t0_ns: int, sel: Selection | None = None) -> pd.DataFrame:
    return frame("telemetry", t0_ns, sel)


def telemetry_long(
    t0_ns: int, fields: tuple[str, ...], scale: float, sel: Selection | None = None
) -> pd.DataFrame:
    """One chart's telemetry fields in long form (see ``model.telemetry_long``)."""
    return frame("telemetry_long", (t0_ns, fields, scale), sel)


def telemetry_start_ns(sel: Selection | None = None) -> int | None:
    return model.telemetry_start_ns(load(sel))


def time_bands(
    t0_ns: int, max_steps: int, sel: Selection | None = None
) -> tuple[tuple[float, float] | None, list[tuple[float, float]]]:
    return model.time_bands(analysis(sel), t0_ns, max_steps)


@st.cache_data(max_entries=32, show_spinner=False)
def _compare(
    a: Selection, sig_a: Signature, b: Selection, sig_b: Signature
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ra = _report(a.path, sig_a, a.ranks, a.steps)
    rb = _report(b.path, sig_b, b.ranks, b.steps)
    metrics = model.compare_metrics(ra, rb)
    ranks = model.compare_rank_matrix(model.compare_ranks(ra, rb))
    return metrics, model.compare_long(metrics), ranks


@st.cache_resource(max_entries=16, show_spinner=False)
def _comparison(a: Selection, sig_a: Signature, b: Selection, sig_b: Signature) -> Comparison:
    sides = [
        Side(
            _analyse(s.path, sig, s.ranks, s.steps), _report(s.path, sig, s.ranks, s.steps), s.steps
        )
        for s, sig in ((a, sig_a), (b, sig_b))
    ]
    return compare_runs(sides[0], sides[1])


def comparison(a: Selection, b: Selection) -> Comparison | None:
    """``rankscope compare``'s verdict on B against A (None: nothing both measured)."""
    report(a)
    report(b)
    try:
        return _comparison(a, signature(a.path), b, signature(b.path))
    except ValueError:
        return None


def compare(a: Selection, b: Selection) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per-metric means of A and B with deltas, the same in long form, rank x metric deltas)."""
    report(a)
    report(b)
    return _compare(a, signature(a.path), b, signature(b.path))


# --- the Whole run page (the light layer) ---


def whole_run(sel: Selection | None = None) -> WholeRun | None:
    """The light layer's whole run (None: no step timer and collective log of two ranks)."""
    return analysis(sel).whole_run


def whole_run_heatmap(
    max_columns: int = model.MAX_HEAT_COLUMNS,
    max_ranks: int = model.MAX_HEAT_RANKS,
    sel: Selection | None = None,
) -> pd.DataFrame:
    return frame("whole_run_heatmap", (max_columns, max_ranks), sel)


def whole_run_steps(
    max_columns: int = model.MAX_HEAT_COLUMNS, sel: Selection | None = None
) -> pd.DataFrame:
    return frame("whole_run_steps", max_columns, sel)


def whole_run_telemetry(
    fields: tuple[str, ...],
    ranks: tuple[int, ...],
    max_points: int = model.MAX_TELEMETRY_POINTS,
    sel: Selection | None = None,
) -> pd.DataFrame:
    return frame("whole_run_telemetry", (fields, list(ranks), max_points), sel)


def trace_windows(sel: Selection | None = None) -> pd.DataFrame:
    return frame("trace_windows", sel=sel)


def slow_steps(sel: Selection | None = None) -> pd.DataFrame:
    return frame("slow_steps", sel=sel)


# ---------------------------------------------------------------------- hang verdict


@st.cache_resource(max_entries=8, show_spinner=False)
def _hang(path: str, sig: Signature) -> HangVerdict | None:
    from pathlib import Path

    from rankscope.dashboard.analysis import hang as hang_mod

    folder = Path(path)
    return hang_mod.hang_verdict(hang_mod.read_hang_records(folder)) if folder.is_dir() else None


def hang(path: str | None = None) -> HangVerdict | None:
    """The hang verdict of a run (``analysis.hang``), or None: read from the run's
    evidence files alone, so it shows even where the analysis has nothing to read."""
    path = path if path is not None else selection().path
    try:
        return _hang(path, signature(path))
    except Exception:
        return None  # a banner never breaks a page
