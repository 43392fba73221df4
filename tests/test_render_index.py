"""Links between the notebook renders and their index page: titles, neighbours, figures with captions, results."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from saetrack.plots.common import FIGURES
from saetrack.render_index import INDEX_HTML, figure_label, index_page, navigation, notebook_title

RENDERS = [("01_cache_activations", "01 · Cache"), ("02_train_chain", "02 · Chain"), ("03_feature_formation", "03 · F")]


def test_notebook_title_is_the_first_markdown_heading() -> None:
    cells = [
        nbformat.v4.new_code_cell("# not markdown"),
        nbformat.v4.new_markdown_cell("Intro\n\n## 02 · The chain\n# x"),
    ]
    assert notebook_title(cells, "02_train_chain") == "02 · The chain"
    assert notebook_title([nbformat.v4.new_markdown_cell("no heading")], "fallback") == "fallback"


def test_navigation_links_the_neighbours_and_the_index() -> None:
    first, middle, last = (navigation(RENDERS, position) for position in range(3))
    assert re.findall(r'href="([^"]+)"', first) == [INDEX_HTML, "02_train_chain.html"]
    assert re.findall(r'href="([^"]+)"', middle) == [
        "01_cache_activations.html",
        INDEX_HTML,
        "03_feature_formation.html",
    ]
    assert re.findall(r'href="([^"]+)"', last) == ["02_train_chain.html", INDEX_HTML]
    assert 'rel="prev">&larr; 01 · Cache</a>' in middle and 'rel="next">03 · F &rarr;</a>' in middle


def test_navigation_links_the_explorer_when_it_is_published() -> None:
    assert "explorer" not in navigation(RENDERS, 1)
    links = re.findall(r'href="([^"]+)"', navigation(RENDERS, 1, explorer=True))
    assert links == ["01_cache_activations.html", INDEX_HTML, f"../explorer/{INDEX_HTML}", "03_feature_formation.html"]


def test_index_page_has_the_explorer_section_only_when_the_explorer_exists(tmp_path: Path) -> None:
    figures = tmp_path / "nano"
    (figures / "notebooks").mkdir(parents=True)
    assert "explorer" not in index_page("nano", RENDERS, figures)
    (figures / "explorer").mkdir()
    (figures / "explorer" / INDEX_HTML).write_text("x")
    page = index_page("nano", RENDERS, figures)
    assert "<h2>Feature explorer</h2>" in page and f'href="../explorer/{INDEX_HTML}"' in page
    assert (figures / "notebooks" / "../explorer" / INDEX_HTML).resolve().is_file()


def test_figure_labels_follow_the_paper() -> None:
    assert [figure_label(key) for key in ("02", "05a", "10", "S01", "X10")] == [
        "Fig. 2",
        "Fig. 5a",
        "Fig. 10",
        "Fig. S01",
        "Fig. X10",
    ]


def test_index_page_links_renders_figures_and_results_and_nothing_missing(tmp_path: Path) -> None:
    figures = tmp_path / "nano"
    (figures / "notebooks").mkdir(parents=True)
    for name in ("fig02_feature_patterns.png", "fig02_feature_patterns.html", "fig02_feature_patterns.pdf",
                 "figS01_lm_loss.png", "extra_plot.png", "results.json", "notes.txt"):  # fmt: skip
        (figures / name).write_text("x")
    for stem, _ in RENDERS:
        (figures / "notebooks" / f"{stem}.html").write_text("x")
    page = index_page("nano", RENDERS, figures)
    links = re.findall(r'href="([^"]+)"', page)
    assert links == [f"{stem}.html" for stem, _ in RENDERS] + [
        "../extra_plot.png",
        "../fig02_feature_patterns.png",
        "../fig02_feature_patterns.html",
        "../figS01_lm_loss.png",
        "../results.json",
    ]
    assert all((figures / "notebooks" / link).resolve().is_file() for link in links)  # no dead link
    assert f"Fig. 2: {FIGURES['02'][1]}" in page and f"Fig. S01: {FIGURES['S01'][1]}" in page
    assert ">01 · Cache</a>" in page and "notes.txt" not in page and ".pdf" not in page


def test_index_page_of_a_run_without_figures_or_results(tmp_path: Path) -> None:
    page = index_page("nano", RENDERS[:1], tmp_path / "missing")
    assert re.findall(r'href="([^"]+)"', page) == ["01_cache_activations.html"]
    assert "No figure yet." in page and "results.json" not in page
