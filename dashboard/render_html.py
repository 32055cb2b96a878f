"""Render a typed report (``analysis.report.Report``) as one self-contained HTML file.

``render_html(report, analysis)`` returns the whole document: the verdict (the
sentence ``render_text`` prints), the findings, the per-rank table, the
communication and GPU tables (the rows ``render`` formats), and the Overview's
step chart, the Imbalance page's heatmap and the Whole run page's heatmap, drawn
by the dashboard's own builders (``app.figures``) from the same tables
(``app.model``), so every number agrees with the dashboard and the text report.

Nothing is fetched when the file is opened: styles are inline and plotly's
JavaScript bundle is inlined once. Every string from the run (paths, rank and
kernel names, warnings) is HTML-escaped. Past ``model.MAX_TABLE_RANKS`` ranks a
table or heatmap keeps the stragglers and the ranks furthest from the median, as
the dashboard does, so the file stays a few MB at 1,024 ranks.

plotly (and the pandas the model uses) are imported here, never by
``rankscope report``'s other formats: ``render_html`` needs the ``dashboard`` extra.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from rankscope.dashboard import render
from rankscope.dashboard.analysis import wording

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from rankscope.dashboard.analysis.analyse import Analysis
    from rankscope.dashboard.analysis.report import Report

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#212121;line-height:1.45}
h1{font-size:1.4rem;word-break:break-all}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #e0e0e0}
.verdict{background:#fff3e0;border-left:4px solid #ef6c00;padding:.75rem 1rem;font-weight:600}
.hang{background:#ffebee;border-left:4px solid #c62828;padding:.75rem 1rem}
.caption{color:#616161;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #e0e0e0;padding:.2rem .5rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.sev-high{color:#c62828}.sev-medium{color:#ef6c00}.sev-low{color:#1565c0}
footer{margin-top:3rem;color:#9e9e9e;font-size:.8rem}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rank_cut(report: Report, rows: list[list[str]]) -> tuple[list[list[str]], str]:
    """Rows of a per-rank table (first cell the rank) cut past ``MAX_TABLE_RANKS`` ranks
    as the dashboard cuts its tables: stragglers, then the ranks furthest from the
    median by step, wait and data time. (rows, a note saying what was left out)."""
    from rankscope.dashboard.app import figures, model

    if len(rows) <= model.MAX_TABLE_RANKS:
        return rows, ""
    import pandas as pd

    columns = ["step_ms", "comm_wait_ms", "data_ms"]
    df = pd.DataFrame(
        [(r.rank, r.step_ms, r.comm_wait_ms, r.data_ms) for r in report.ranks],
        columns=["rank", *columns],
    ).astype({c: float for c in columns})
    keep = model.limit_rank_rows(df, columns, model.straggler_ranks(report))["rank"]
    by_rank = {row[0]: row for row in rows}
    shown = [by_rank[str(int(r))] for r in keep if str(int(r)) in by_rank]
    note = figures.many_ranks_note(len(shown), len(rows)).replace(
        "pick ranks in the sidebar", "run `rankscope report --ranks ...`"
    )
    return shown, note.strip()


def _figure(fig: go.Figure, caption: str, div_id: str) -> str:
    """One chart (plotly's div, no script bundle: the page holds it once) and its caption."""
    from rankscope.dashboard.app import text

    title = fig.layout.title.text
    fig.update_layout(title=None)
    text.plain_figure(fig)
    div = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
    head = f"<h3>{_e(title)}</h3>" if title else ""
    return f'<figure class="chart">{head}{div}<p class="caption">{_e(caption)}</p></figure>'


def _charts(report: Report, analysis: Analysis | None) -> list[str]:
    """The step chart, the load-imbalance heatmap and the whole-run heatmap, where the run
    has what each needs (the dashboard shows the same three under the same conditions)."""
    from rankscope.dashboard.app import figures, model

    out: list[str] = []
    stragglers = model.straggler_ranks(report)
    per_step = model.per_step_frame(report)
    if not per_step.empty and per_step["rank"].nunique() >= 2:
        column = next(iter(wording.PER_STEP_METRICS))
        fig = figures.per_step_lines(
            per_step, column, model.stall_marks(report, column), stragglers
        )
        fig.update_layout(title=f"Each rank, step by step: {wording.PER_STEP_METRICS[column]}")
        many = per_step["rank"].nunique() > model.MAX_LINE_RANKS
        out.append(
            _figure(
                figures.tidy(fig, height=340),
                (
                    "The median rank (line) and the middle 80% of ranks (band), with the"
                    " stragglers (thick) and the ranks furthest from the median (dotted)."
                    if many
                    else "One line per rank."
                )
                + " A persistent straggler stays above zero at most steps; a stall is a spike"
                " at its step (diamond); noise stays near zero.",
                "rs-per-step",
            )
        )
    matrix = model.per_step_matrix(report, "excess_ms")
    if not matrix.empty and len(matrix) >= 2:
        fig, shown = figures.excess_heatmap(matrix, model.stall_marks(report), stragglers)
        out.append(
            _figure(
                fig,
                "Red: a rank that reached the step's collectives later than the others'"
                " median, so they waited; blue: earlier. Outlined: what the diagnosis found."
                + figures.many_ranks_note(shown, len(matrix)).replace(
                    "pick ranks in the sidebar", "use --ranks"
                ),
                "rs-imbalance",
            )
        )
    whole = analysis.whole_run if analysis is not None else None
    if analysis is not None and whole is not None:
        from rankscope.dashboard.analysis.wholerun import capture_spans

        heat = model.whole_run_heatmap(analysis, model.MAX_HEAT_COLUMNS, model.MAX_HEAT_RANKS)
        if not heat.empty:
            width = model.pool_width(whole.n_steps, model.MAX_HEAT_COLUMNS)
            fig = figures.whole_run_heatmap(
                heat, width, model.trace_windows(analysis), capture_spans(whole.steps)
            )
            caption = wording.heatmap_caption(width, len(heat.index), len(analysis.run.ranks))
            out.append(_figure(fig, caption, "rs-whole-run"))
    return out


def verdict_line(report: Report) -> str:
    """The verdict sentence, exactly as ``render_text`` prints it."""
    return render.verdict_sentence(report)


def render_html(report: Report, analysis: Analysis | None = None) -> str:
    """The report as one HTML document (a str) that opens offline in any browser.

    ``analysis`` (the one the report was built from) adds the whole-run heatmap; the
    rest comes from ``report`` alone. Raises ImportError without plotly or pandas.
    """
    from plotly.offline import get_plotlyjs

    run = report.run
    body: list[str] = [f"<h1>rankscope report: {_e(run.path)}</h1>"]
    if hang := render.hang_lines(report, md=False):
        body.append('<div class="hang">' + "<br>".join(_e(x) for x in hang if x) + "</div>")
    body.append(f'<p class="verdict" id="verdict">{_e(verdict_line(report))}</p>')
    if whole := render.whole_run_lines(report):
        body.append(f"<p>{_e(whole[0])}</p><ul>")
        body += [f"<li>{_e(x.removeprefix('  - '))}</li>" for x in whole[1:]]
        body.append("</ul>")
    body.append("<h2>Findings, worst first</h2>")
    if report.findings:
        body.append("<ol>")
        for f in report.findings:
            saving = f.est_saving_ms_per_step
            tail = f" (~{saving:.1f} ms/step)" if saving else ""
            body.append(
                f'<li><b>{_e(f.title)}</b> <span class="sev-{_e(f.severity)}">[{_e(f.severity)}]'
                f"</span>{_e(tail)}<br><span class='caption'>{_e(f.detail)}</span></li>"
            )
        body.append("</ol>")
    else:
        rank = report.verdict.rank if report.verdict is not None else None
        body.append(f"<p>{_e(wording.no_findings(rank))}</p>")
    body += _charts(report, analysis)
    if run.step_source != "none":
        header, rows = render.rank_rows(report)
        rows, note = _rank_cut(report, rows)
        body += ["<h2>Per rank (ms per step)</h2>", _table(header, rows)]
        if note:
            body.append(f'<p class="caption">{_e(note)}</p>')
    if report.collectives:
        body += ["<h2>Communication</h2>", _table(*render.collective_rows(report))]
    if render.show_gpu(report):
        header, rows = render.gpu_rows(report)
        rows, note = _rank_cut(report, rows)
        body += ["<h2>GPU utilisation</h2>", _table(header, rows)]
        body.append(f'<p class="caption">{_e(note + " " + render.GPU_NOTE)}</p>')
    if report.top_kernels:
        rows = [
            [
                k.name[:120],
                render.fmt(k.ms_per_step, 3),
                render.fmt(k.share_pct, 1, "%"),
                f"r{k.max_rank}",
            ]
            for k in report.top_kernels[:10]
        ]
        body += ["<h2>Top kernels</h2>", _table(["kernel", "ms/step", "share", "max rank"], rows)]
    if run.warnings:
        body.append("<h2>Warnings</h2><ul>")
        body += [f"<li>{_e(w)}</li>" for w in run.warnings]
        body.append("</ul>")
    body.append(
        "<footer>Written by <code>rankscope report --format html</code>; open the run in"
        " <code>rankscope dashboard</code> for every page.</footer>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>rankscope report: {_e(run.path)}</title>"
        f"<style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
