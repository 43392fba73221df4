"""Fig. 2 as a standalone HTML page (``figures/<preset>/fig02_feature_patterns.html``): the pattern table with every
context listed, each feature linked into the explorer when there is one."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from saetrack.plots.formation import PatternExample

__all__ = ["pattern_table_html"]

#: The activating token of a context, as the formation stage marks it: «tok».
MARKED = re.compile(r"«(.*?)»", re.DOTALL)


def _html_context(text: str) -> str:
    """``text`` HTML-escaped, then each ``«tok»`` turned into ``<mark>tok</mark>``."""
    return MARKED.sub(r"<mark>\1</mark>", html.escape(text, quote=True))


def pattern_table_html(
    examples: Sequence[PatternExample],
    title: str = "",
    column_titles: Sequence[str] | None = None,
    caption: str = "",
    explorer: str = "",
) -> str:
    """Fig. 2 as a standalone HTML page: the table of :func:`pattern_table_figure` with every context listed.

    All text is escaped; the activating token (``«tok»``) is shown as ``<mark>tok</mark>``; each cell starts with
    the example's note for that column, when it has one; ``caption`` is a paragraph under the table. With
    ``explorer`` (the explorer's page relative to this one, e.g. ``"explorer/index.html"``), each row's feature and
    each cell's step link to that feature's page, which shows it at every checkpoint.
    """
    n_cols = max((len(example.columns) for example in examples), default=0)
    steps = [step for step, _ in examples[0].columns] if examples else []
    shared = all([step for step, _ in example.columns] == steps for example in examples) and len(steps) == n_cols
    if column_titles is not None:
        headers = [html.escape(t).replace("\n", "<br>") for t in column_titles]
    else:
        headers = [f"step {steps[c]}" if shared else f"checkpoint {c + 1}" for c in range(n_cols)]
    heading = html.escape(title) if title else "Feature evolution patterns"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{heading}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "th,td{border:1px solid #bbb;padding:6px;vertical-align:top}td ul{margin:0;padding-left:1.1em}"
        "td li{font-family:monospace;font-size:0.85em;white-space:pre-wrap}mark{background:#ffd54f}</style>",
        "</head><body>",
        f"<h1>{heading}</h1>",
        "<table>",
        "<tr><th>pattern / feature</th>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>",
    ]
    for example in examples:
        sub = f"<br><small>{html.escape(example.subtitle)}</small>" if example.subtitle else ""
        page = f"{html.escape(explorer, quote=True)}#/feature/{int(example.feature)}" if explorer else ""
        name = f'<a href="{page}">feature {int(example.feature)}</a>' if page else f"feature {int(example.feature)}"
        row = [f"<tr><th>{html.escape(example.pattern)}<br>{name}{sub}</th>"]
        for c in range(n_cols):
            if c >= len(example.columns):
                row.append("<td></td>")
                continue
            step, contexts = example.columns[c]
            label = "" if shared else f"<div><b>step {int(step)}</b></div>"
            if page:
                link = f"{page}?step={int(step)}"
                label += f'<div><a href="{link}" title="this feature at every checkpoint">explore &rarr;</a></div>'
            note = f"<div><b>{html.escape(example.notes[c])}</b></div>" if c < len(example.notes) else ""
            items = "".join(f"<li>{_html_context(text)}</li>" for text in contexts)
            row.append(f"<td>{label}{note}<ul>{items}</ul></td>")
        out.append("".join(row) + "</tr>")
    out += ["</table>", f"<p>{html.escape(caption)}</p>" if caption else "", "</body></html>", ""]
    return "\n".join(out)
