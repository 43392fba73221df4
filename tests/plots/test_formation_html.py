"""Fig. 2 as an HTML page: escaping, the marked activating tokens, and the links into the explorer."""

from __future__ import annotations

from saetrack.plots.formation_html import pattern_table_html
from tests.plots.test_formation import STEPS, _examples


def test_pattern_table_html_escapes_and_marks() -> None:
    page = pattern_table_html(_examples(), title="Patterns <1>")
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert "<mark>x</mark>" in page and "«" not in page and "»" not in page
    assert "&amp; y" in page
    assert "Patterns &lt;1&gt;" in page
    for step in STEPS:
        assert f"<th>step {step}</th>" in page
    assert page.count("<tr>") == 4
    assert "Maintaining<br>feature 10" in page


def test_pattern_table_html_links_each_feature_and_cell_into_the_explorer() -> None:
    plain = pattern_table_html(_examples())
    assert "explorer" not in plain and "<a " not in plain
    page = pattern_table_html(_examples(), explorer="explorer/index.html")
    assert '<a href="explorer/index.html#/feature/10">feature 10</a>' in page
    for step in STEPS:  # every cell links the feature at its checkpoint
        assert f'href="explorer/index.html#/feature/10?step={step}"' in page
