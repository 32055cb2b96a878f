"""Hang: why the run did not finish: the verdict, each rank's state, its last
collective per process group, and the training thread's stack (``analysis.hang``)."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from rankscope.dashboard.analysis.hang import group_name
from rankscope.dashboard.app import data, text


def render() -> None:
    st.title("Hang")
    v = data.hang()
    if v is None:
        st.info("This run shows no hang, desync or crash: every rank kept stepping.")
        return
    st.subheader(text.md(v.headline))
    for line in v.details:
        st.markdown(f"- {text.md(line)}")
    if v.exit_code is not None:
        st.caption(f"The job exited with code {v.exit_code}.")
    for p in v.problems:
        st.warning(f"Not read: {text.md(p)}")

    st.markdown("#### Ranks")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "rank": r.rank,
                    "state": r.status,
                    "last step": r.last_step,
                    "stopped in step": r.stuck_step,
                    "evidence": ", ".join(r.triggers) or "none",
                    "exception": r.exception or "",
                    "where": str(r.where) if r.where else "",
                }
                for r in v.ranks
            ]
        ),
        hide_index=True,
    )

    st.markdown("#### Last collective per rank and process group")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "group": group_name(g.pg, g.pg_desc),
                    "rank": g.rank,
                    "seq": g.last.seq if g.last else None,
                    "op": g.last.op if g.last else "",
                    "bytes": g.last.bytes if g.last else None,
                    "completed": g.last.completed if g.last else None,
                }
                for g in v.table
            ]
        ),
        hide_index=True,
    )

    st.markdown("#### Training thread stacks (innermost last)")
    for r in v.ranks:
        if not r.stack:
            continue
        with st.expander(f"rank {r.rank}: {r.where or '?'}", expanded=r.rank == v.rank):
            st.code(
                "\n".join(
                    f'File "{os.path.basename(w.file)}", line {w.line}, in {w.function}'
                    + (f"\n    {w.code}" if w.code else "")
                    for w in r.stack
                ),
                language="text",
            )


if __name__ == "__main__":
    render()
