"""Render a ``Comparison`` (``analysis.compare``) as text, markdown or JSON.

Verdict first, then the evidence: the decomposition of the step-time change,
per rank, stragglers before/after, collectives and kernels, what the runs do not
share, and the ``--fail-if`` conditions. Only formats: every number comes from
the comparison and every sentence from ``analysis.compare_wording``.
``render_text``, ``render_markdown`` and ``render_json`` return the whole document.
"""

from __future__ import annotations

from rankscope.dashboard.analysis import compare_wording as words
from rankscope.dashboard.analysis.compare import Comparison, to_json

MAX_RANK_ROWS = 32  # past this, the ranks whose step changed most


def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def _tables(c: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    comps = [
        [
            words.component_name(cc.component),
            _f(cc.base_ms),
            _f(cc.new_ms),
            _f(cc.delta_ms, True),
            f"{_f(cc.low_ms, True)} .. {_f(cc.high_ms, True)}",
        ]
        for cc in c.components
    ]
    comps.append(
        [
            "step time",
            _f(c.step.base_ms),
            _f(c.step.new_ms),
            _f(c.step.delta_ms, True),
            f"{_f(c.step.low_ms, True)} .. {_f(c.step.high_ms, True)}",
        ]
    )
    ranks = sorted(c.ranks, key=lambda r: -abs(r.step.delta_ms))[:MAX_RANK_ROWS]
    ranks.sort(key=lambda r: r.rank)
    names = [cc.component for cc in c.components]
    rank_rows = [
        [
            str(r.rank),
            _f(r.step.base_ms),
            _f(r.step.new_ms),
            _f(r.step.delta_ms, True),
            "yes" if r.step.significant else "no",
            *[_f(cc.delta_ms, True) for cc in r.components],
        ]
        for r in ranks
    ]
    out = [
        (
            "Where the step-time change went (ms per step, mean over shared ranks)",
            ["component", "BASE", "NEW", "change", "90% interval"],
            comps,
        ),
        (
            "Per rank (ms per step; the component changes add up to the step's)",
            ["rank", "BASE", "NEW", "change", "beyond noise", *map(words.component_name, names)],
            rank_rows,
        ),
    ]
    if c.collectives:
        out.append(
            (
                "Collectives (matched by name and process group; ms per step)",
                ["collective", "pg", "", "count", "transfer", "wait", "change"],
                [
                    [
                        k.name,
                        k.pg,
                        k.kind,
                        f"{k.base_count} -> {k.new_count}",
                        f"{_f(k.base_transfer_ms)} -> {_f(k.new_transfer_ms)}",
                        f"{_f(k.base_wait_ms)} -> {_f(k.new_wait_ms)}",
                        _f(k.delta_ms, True),
                    ]
                    for k in c.collectives
                ],
            )
        )
    if c.kernels:
        out.append(
            (
                "Top kernels / operators (matched by name; ms per step and rank)",
                ["name", "", "BASE", "NEW", "change"],
                [
                    [k.name[:60], k.kind, _f(k.base_ms), _f(k.new_ms), _f(k.delta_ms, True)]
                    for k in c.kernels
                ],
            )
        )
    return out


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
    return [line.rstrip(), *[b.rstrip() for b in body]]


def render_text(c: Comparison) -> str:
    out = [c.headline, ""]
    out += [f"  {s}" for s in c.sentences]
    if c.sentences:
        out.append("")
    for title, header, rows in _tables(c):
        out += [title + ":", *_text_table(header, rows), ""]
    out += [f"  {n}" for n in c.scope.notes]
    if c.conditions:
        out += ["", "Regression gate:", *[f"  {k.sentence}" for k in c.conditions]]
    return "\n".join(out).rstrip() + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cells(r: list[str]) -> str:
        return "| " + " | ".join(x.replace("|", "\\|") for x in r) + " |"

    return [cells(header), "|" + "---|" * len(header), *[cells(r) for r in rows]]


def render_markdown(c: Comparison) -> str:
    out = ["# rankscope compare", "", f"**{c.headline}**", ""]
    out += [f"- {s}" for s in c.sentences]
    if c.sentences:
        out.append("")
    for title, header, rows in _tables(c):
        out += [f"## {title}", "", *_md_table(header, rows), ""]
    out += ["## Scope", "", *[f"- {n}" for n in c.scope.notes], ""]
    if c.conditions:
        out += ["## Regression gate", "", *[f"- `{k.sentence}`" for k in c.conditions], ""]
    return "\n".join(out).rstrip() + "\n"


def render_json(c: Comparison) -> str:
    return to_json(c)
