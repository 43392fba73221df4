"""Finding one's way through a published run: links between the notebook renders, and their index page.

Every render of ``figures/<preset>/notebooks/`` carries a bar of links (:func:`navigation`) to the previous and the
next notebook (in their number order) and to ``index.html`` beside them (:func:`index_page`), which links the renders
under their titles (each notebook's first markdown heading, :func:`notebook_title`), every figure of
``figures/<preset>/`` with its caption from :data:`saetrack.plots.common.FIGURES`, and the run's ``results.json``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from pathlib import Path

from saetrack import paths
from saetrack.plots.common import FIGURES

__all__ = [
    "INDEX_HTML",
    "figure_captions",
    "figure_label",
    "index_page",
    "navigation",
    "notebook_title",
]

#: The index page's file name, beside the renders.
INDEX_HTML = "index.html"

#: File types of ``figures/<preset>/`` the index links (the PDFs are the same figures for print).
_FIGURE_SUFFIXES = (".png", ".html")


def notebook_title(cells: Sequence, fallback: str) -> str:
    """The text of the first markdown heading among a notebook's ``cells`` (``fallback`` if there is none)."""
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        for line in str(cell.get("source", "")).splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or fallback
    return fallback


def navigation(renders: Sequence[tuple[str, str]], position: int, explorer: bool = False) -> str:
    """The bar of links of render number ``position`` among ``renders`` (``(file stem, title)`` in order): the
    previous and the next render, where there is one, the index page, and the feature explorer when ``explorer``
    (published beside the renders, in ``figures/<preset>/explorer/``)."""
    links = []
    if position > 0:
        stem, title = renders[position - 1]
        links.append(f'<a href="{escape(stem)}.html" rel="prev">&larr; {escape(title)}</a>')
    links.append(f'<a href="{INDEX_HTML}">index of the notebooks, figures and results</a>')
    if explorer:
        links.append(f'<a href="../{paths.EXPLORER_DIR}/{INDEX_HTML}">feature explorer</a>')
    if position + 1 < len(renders):
        stem, title = renders[position + 1]
        links.append(f'<a href="{escape(stem)}.html" rel="next">{escape(title)} &rarr;</a>')
    return '<nav class="notebooks">' + " &middot; ".join(links) + "</nav>"


def figure_captions() -> dict[str, tuple[str, str]]:
    """Each figure's file stem mapped to its key and short caption (``"fig02_feature_patterns"`` -> ``("02", ...)``)."""
    return {name: (key, caption) for key, (name, caption) in FIGURES.items()}


def figure_label(key: str) -> str:
    """How the paper names figure ``key`` of :data:`~saetrack.plots.common.FIGURES`: ``Fig. 2`` for ``"02"``,
    ``Fig. 5a`` for ``"05a"``, ``Fig. S01`` for ``"S01"``."""
    return f"Fig. {re.sub(r'^0+(?=[0-9])', '', key)}"


def _figure_items(figures: Path) -> list[str]:
    """One list item per figure in ``figures`` (its PNG and interactive HTML linked), relative to the index page."""
    captions = figure_captions()
    stems = sorted({file.stem for file in figures.iterdir() if file.is_file() and file.suffix in _FIGURE_SUFFIXES})
    items = []
    for stem in stems:
        links = [f'<a href="../{escape(stem)}{suffix}">{escape(stem)}{suffix}</a>'
                 for suffix in _FIGURE_SUFFIXES if (figures / f"{stem}{suffix}").is_file()]  # fmt: skip
        key, caption = captions.get(stem, ("", ""))
        label = f" &mdash; {escape(figure_label(key))}: {escape(caption)}" if key else ""
        items.append(f"<li>{' / '.join(links)}{label}</li>")
    return items


def _feature_explorer_section(figures: Path) -> str:
    """The feature explorer's section (notebook 07's site in ``figures/explorer/``), linked relative to the index
    page; empty when no explorer was published, so the index never links a page that does not exist."""
    if not (figures / paths.EXPLORER_DIR / INDEX_HTML).is_file():
        return ""
    page = f"../{paths.EXPLORER_DIR}/{INDEX_HTML}"
    return (
        "<h2>Feature explorer</h2>"
        f'<p><a href="{page}">Every feature across every checkpoint</a>: sortable index, a page per feature (top '
        "contexts at each checkpoint, decoder drift with its noise floor, progress measure, the matched crosscoder "
        "feature) and per checkpoint.</p>"
    )


def index_page(preset: str, renders: Sequence[tuple[str, str]], figures: Path) -> str:
    """The body of ``figures/<preset>/notebooks/index.html``: links to the ``renders`` (``(file stem, title)``), to
    every figure of ``figures`` (``figures/<preset>/``) with its caption, and to the run's ``results.json``."""
    notebooks = "\n".join(f'<li><a href="{escape(stem)}.html">{escape(title)}</a></li>' for stem, title in renders)
    figure_items = _figure_items(figures) if figures.is_dir() else []
    parts = [
        f"<h1>Preset {escape(preset)}: executed notebooks, figures and results</h1>",
        "<h2>Notebooks</h2>",
        f"<ol>\n{notebooks}\n</ol>" if renders else "<p>No notebook has run yet.</p>",
        _feature_explorer_section(figures),
        "<h2>Figures</h2>",
        "<ul>\n" + "\n".join(figure_items) + "\n</ul>" if figure_items else "<p>No figure yet.</p>",
    ]
    if (figures / paths.RESULTS_JSON).is_file():
        parts += ["<h2>Results</h2>", f'<p><a href="../{paths.RESULTS_JSON}">{paths.RESULTS_JSON}</a>: every '
                  "number the notebooks report, with the claims' verdicts</p>"]  # fmt: skip
    return "\n".join(part for part in parts if part)
