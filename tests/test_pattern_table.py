"""Tests of Fig. 2 as a figure and as an HTML table."""

from __future__ import annotations

from matplotlib.figure import Figure

from saetrack.plots.formation import PatternExample, clip_context, pattern_table_figure, pattern_table_html

STEPS = (0, 512, 143000)


def _examples() -> list[PatternExample]:
    contexts = ["the «cat» sat", "a <b>bold</b> «x» & y", "in 1987 the «company» said", "«The» start"]
    return [
        PatternExample(pattern, 10 * (i + 1), [(step, contexts[: 2 + i]) for step in STEPS])
        for i, pattern in enumerate(["Maintaining", "Grouping", "Shifting"])
    ]


def _figure_texts(fig: Figure) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts] + [text.get_text() for text in fig.texts]


def test_pattern_table_figure_headers() -> None:
    fig = pattern_table_figure(_examples(), title="Fig. 2")
    texts = _figure_texts(fig)
    for step in STEPS:
        assert texts.count(f"step {step}") == 1
    for pattern, feature in [("Maintaining", 10), ("Grouping", 20), ("Shifting", 30)]:
        assert texts.count(f"{pattern}\nfeature {feature}") == 1
    assert "Fig. 2" in texts
    # 3 column headers + 3 row headers + 9 cells
    assert len(fig.axes) == 3 + 3 + 9
    cell = next(t for t in texts if t.startswith("the «cat» sat") and t.count("\n") == 3)
    assert cell.split("\n") == ["the «cat» sat", "a <b>bold</b> «x» & y", "in 1987 the «company» said", "«The» start"]


def test_pattern_table_figure_limits_contexts_and_differing_steps() -> None:
    many = PatternExample("Grouping", 1, [(5, [f"ctx {k} «t»" for k in range(10)])])
    other = PatternExample("Shifting", 2, [(7, ["«y»"])])
    texts = _figure_texts(pattern_table_figure([many, other], max_contexts=6))
    listing = next(t for t in texts if "ctx 0" in t)
    assert listing.split("\n") == ["[step 5]"] + [f"ctx {k} «t»" for k in range(6)]
    assert "[step 7]\n«y»" in texts


def test_clip_context_keeps_marked_token() -> None:
    text = "word " * 40 + "«target»" + " tail" * 40
    clipped = clip_context(text, 30)
    assert len(clipped) == 30 and "«target»" in clipped
    assert clipped.startswith("…") and clipped.endswith("…")
    assert clip_context("a\nb «c»", 30) == "a⏎ b «c»"


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
