"""The dashboard's frame: page config, the shared sidebar (run, steps, ranks, live), navigation.

Run by ``rankscope dashboard`` as ``streamlit run main.py`` with the run path in
``$RANKSCOPE_DASHBOARD_PATH``. The sidebar's choice is stored as a
``data.Selection`` in ``st.session_state`` and holds across pages; each page
under ``views/`` reads it and draws.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from rankscope.dashboard.app import data, text
from rankscope.dashboard.app import runs as runs_mod

VIEWS = Path(__file__).resolve().parent / "views"
# A file, not an emoji or :material/...: those page icons are fetched from a CDN,
# which an offline cluster cannot reach.
ICON = Path(__file__).resolve().parent / "static" / "rankscope.png"
MANY_RANKS_PICKER = 16  # above this many ranks the sidebar's picker starts empty (all)
PAGES = (
    ("overview.py", "Overview", ":material/dashboard:"),
    ("wholerun.py", "Whole run", ":material/monitoring:"),
    ("imbalance.py", "Load imbalance", ":material/balance:"),
    ("communication.py", "Communication", ":material/swap_horiz:"),
    ("gpu.py", "GPU utilisation", ":material/memory:"),
    ("timeline.py", "Timeline", ":material/view_timeline:"),
    ("kernels.py", "Kernels", ":material/functions:"),
    ("compare.py", "Compare", ":material/compare_arrows:"),
)
LIVE_POLL_S = 3.0


def _run_label(entry: runs_mod.RunEntry) -> str:
    """The run's own start (run.json); a plain trace folder's files' time says so."""
    if entry.started is not None:
        return f"{entry.label}  ·  started {runs_mod.when(entry.started)}"
    return f"{entry.label}  ·  files from {runs_mod.when(entry.mtime)}"


@st.fragment(run_every=LIVE_POLL_S)
def _follow(path: str, seen: data.Signature) -> None:
    """Re-run the whole page only when the run's files changed."""
    if data.signature(path) != seen:
        st.rerun(scope="app")
    st.caption(f"Following the live run · checked {time.strftime('%H:%M:%S')}")


def sidebar() -> data.Selection:
    root = data.root_path()
    if root is None:
        data.stop_with("No run given: start the dashboard with `rankscope dashboard PATH`.")
    try:
        entries = data.runs_in(root)
    except Exception as e:  # a RankscopeError, or a folder that vanished
        data.stop_with(text.md(e))
    with st.sidebar:
        st.markdown("### rankscope")
        if len(entries) > 1:
            by_path = {e.path: e for e in entries}
            path = st.selectbox(
                "Run (newest first)",
                list(by_path),
                format_func=lambda p: _run_label(by_path[p]),
                key="rs_run",
            )
        else:
            path = entries[0].path
            st.caption(f"Run: {text.md(entries[0].label)}")  # a folder name is not markdown
        if about := runs_mod.details_text(data.run_details(path)):
            st.caption(text.md(about))  # a command line is not markdown
        steps, ranks = data.run_steps_and_ranks(path)
        # Keys carry the choices on offer: when a live run adds steps or ranks, the
        # widgets start again on the full range instead of holding a stale one.
        step_range: str | None = None
        if len(steps) > 1:
            lo, hi = st.select_slider(
                "Steps",
                options=steps,
                value=data.step_range_default(path, steps),
                key=data.step_range_key(path, steps),
            )
            if (lo, hi) != (steps[0], steps[-1]):
                step_range = f"{lo}:{hi}"
        chosen_ranks: tuple[int, ...] | None = None
        if len(ranks) > 1:
            # Past a few ranks the picker starts empty (all ranks): 512 chips would be
            # most of the page, and its slowest part to draw.
            many = len(ranks) > MANY_RANKS_PICKER
            picked = st.multiselect(
                "Ranks",
                ranks,
                default=[] if many else ranks,
                key=f"rs_ranks|{path}|{len(ranks)}",
                placeholder=f"all {len(ranks)} ranks (type a rank to pick it)"
                if many
                else "all ranks",
                help="empty = all ranks",
            )
            if picked and sorted(picked) != ranks:
                chosen_ranks = tuple(sorted(picked))
        live = runs_mod.is_live(path) or data.live_default()
        if live and st.toggle(
            "Refresh on its own",
            value=True,
            key="rs_live",
            help="for a run still being written",
        ):
            _follow(path, data.signature(path))
    sel = data.Selection(path, chosen_ranks, step_range)
    st.session_state[data.SELECTION_KEY] = sel
    return sel


HANG_PAGE = ("hang.py", "Hang", ":material/report:")


def hang_banner(path: str) -> bool:
    """A banner on every page of a run that hung or crashed; True when there is one."""
    verdict = data.hang(path)
    if verdict is None:
        return False
    if verdict.hung:
        st.error(f"**This run did not finish.** {text.md(verdict.headline)}  (see *Hang*)")
    else:
        st.warning(text.md(verdict.headline))
    return True


st.set_page_config(page_title="rankscope", page_icon=str(ICON), layout="wide")
chosen = sidebar()
pages = PAGES + ((HANG_PAGE,) if hang_banner(chosen.path) else ())
navigation = st.navigation(
    [st.Page(str(VIEWS / f), title=t, icon=i, default=(f == "overview.py")) for f, t, i in pages]
)
navigation.run()
