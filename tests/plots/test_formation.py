"""Figures of the formation stage: Fig. 2 (as a figure and an HTML table), Fig. 3, Fig. 4 and Fig. 5/8."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from saetrack import plots
from saetrack.analysis.drift import Phases
from saetrack.analysis.regions import ToyRegions, toy_feature_regions
from saetrack.plots.formation import (
    PatternExample,
    clip_context,
    feature_regions_figure,
    pattern_table_figure,
)
from saetrack.plots.formation_html import pattern_table_html

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


def test_progress_figure_has_a_panel_per_key_and_a_median_per_type() -> None:
    rng = np.random.default_rng(0)
    steps = [0, 1, 2, 4, 8, 100]
    measures = {key: rng.random((len(steps), 40)) for key in plots.PROGRESS_TITLES}
    types = np.array(["token"] * 25 + ["concept"] * 10 + ["inactive"] * 5)
    fig = plots.progress_figure(steps, measures, types, n_lines=3)
    assert len(fig.axes) == 2
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # below the panels
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["token-level: median of 25 (thin: 3 of them)", "concept-level: median of 10 (thin: 3 of them)"]
    median = next(line for line in fig.axes[0].lines if line.get_linewidth() == 3)
    np.testing.assert_allclose(median.get_ydata(), np.median(measures["activation_cosine"][:, :25], axis=1))
    fig8 = plots.progress_figure(steps, measures, types, keys=("feature_jaccard", "feature_weighted_jaccard"))
    assert [ax.get_title() for ax in fig8.axes] == [plots.PROGRESS_TITLES["feature_jaccard"],
                                                     plots.PROGRESS_TITLES["feature_weighted_jaccard"]]  # fmt: skip


def test_umap_figure_has_a_panel_per_checkpoint_and_marks_types() -> None:
    rng = np.random.default_rng(1)
    point_feature = np.repeat([3, 7], 5)
    embeddings = [rng.standard_normal((10, 2)) for _ in range(6)]
    fig = plots.umap_figure(embeddings, [0, 5, 10, 15, 60, 153], point_feature, {3: "token", 7: "concept"})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [f"checkpoint step {s}" for s in (0, 5, 10, 15, 60, 153)]
    assert all(ax.get_legend() is None for ax in visible) and len(fig.legends) == 1  # not over the points
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["#3 (token)", "#7 (concept)"]
    assert all(ax.get_aspect() == 1.0 for ax in visible)  # equal scales: a turned panel is not stretched


@pytest.fixture(scope="module")
def toy(one_thread: None) -> ToyRegions:
    """The toy 2-D SAE of Sec. 5.1 at a small size (as in tests/analysis/test_regions.py)."""
    return toy_feature_regions(seed=0, d_sae=6, n=1500, n_steps=400, grid_size=60)


def test_feature_regions_figure_has_two_main_axes(toy: ToyRegions) -> None:
    fig = feature_regions_figure(toy, title="toy")
    assert isinstance(fig, Figure)
    main = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(main) == 2
    assert "Def. 5.2" in main[0].get_title() and "Def. 5.3" in main[1].get_title()
    assert main[0].get_xlabel() and main[1].get_ylabel()


def test_progress_figure_shades_phases_and_skips_missing_types() -> None:
    steps = [0, 1, 2, 4, 8, 16]
    measures = {"activation_cosine": np.tile(np.linspace(0, 1, 6)[:, None], (1, 4))}
    phases = Phases(emergent=2, convergent=4, fit=np.zeros(6), sse=0.0)
    fig = plots.progress_figure(steps, measures, np.array(["concept"] * 4), keys=("activation_cosine",),
                                phases=phases, other_phases=Phases(1, 3, np.zeros(6), 0.0))  # fmt: skip
    (ax,) = fig.axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == [f"{name} (shaded: progress measure (b))" for name in ("Initialization & Warmup", "Emergent",
                                                                                 "Convergent")]  # fmt: skip
    assert "boundaries from decoder drift (a)" in labels
    assert "concept-level: median of 4 (thin: 4 of them)" in labels
    assert not any(label.startswith("token-level") for label in labels)
    assert len(ax.patches) == 3  # the three shaded phases


def test_progress_figure_shades_the_phases_only_on_the_panel_they_were_fitted_on() -> None:
    steps = [0, 1, 2, 4, 8, 16]
    measures = {key: np.tile(np.linspace(0, 1, 6)[:, None], (1, 4)) for key in ("activation_cosine", "feature_cosine")}
    phases = Phases(emergent=2, convergent=4, fit=np.zeros(6), sse=0.0)
    fig = plots.progress_figure(steps, measures, np.array(["token"] * 4), phases=phases,
                                other_phases=Phases(1, 3, np.zeros(6), 0.0))  # fmt: skip
    activation, feature = fig.axes
    assert len(activation.patches) == 3 and len(feature.patches) == 0
    dashed = [line for line in feature.lines if line.get_linestyle() == "--"]
    assert not dashed  # the drift boundaries only where the shading is
    assert "fitted on this panel" in activation.get_title() and "fitted" not in feature.get_title()


CELLS = [
    {"label": "token", "dominant_text": " the", "count": 18, "n_active": 25, "top_k": 25, "top_activation": 3.2149},
    {"label": "concept", "dominant_text": "x", "count": 4, "n_active": 9, "top_k": 25, "top_activation": 0.5},
    {"label": "inactive", "dominant_text": "", "count": 0, "n_active": 0, "top_k": 25, "top_activation": 0.0},
]


def test_cell_summary_shows_label_share_and_top_activation() -> None:
    assert plots.cell_summary(CELLS[0]) == "token · « the» 18/25 · max 3.21"
    assert plots.cell_summary(CELLS[1]) == "concept · «x» 4/25 (9 active) · max 0.50"
    assert plots.cell_summary(CELLS[2]) == "inactive · no active datapoint · max 0.00"


def test_records_titles_and_notes_reach_the_figure_and_the_html() -> None:
    records = [
        {"pattern": "shifting", "category": "shifting token->concept", "sub_pattern": "shifting: token->concept",
         "feature": 7, "columns": [[0, ["a «b»"]], [16, ["c «d»"]], [48, ["e «f»"]]], "cells": CELLS},
        {"pattern": "grouping", "feature": 9, "columns": [[0, []], [16, ["«g»"]], [48, ["«h»"]]]},  # an old record
    ]  # fmt: skip
    examples = plots.pattern_examples_from_records(records)
    assert examples[0].pattern == "shifting token->concept" and examples[0].subtitle == "shifting: token->concept"
    assert examples[0].notes[0] == "token · « the» 18/25 · max 3.21"
    assert examples[1].pattern == "grouping" and examples[1].notes == []
    entries = [{"step": 0, "phase": "Initialization & Warmup", "why": "first checkpoint"},
               {"step": 16, "phase": "Emergent", "why": "middle of the Emergent phase"},
               {"step": 48, "phase": None, "why": ""}]  # fmt: skip
    titles = plots.checkpoint_titles(entries)
    assert titles == ["step 0 · Initialization & Warmup\n(first checkpoint)",
                      "step 16 · Emergent\n(middle of the Emergent phase)", "step 48"]  # fmt: skip
    assert plots.checkpoint_titles(entries, why=False)[1] == "step 16 · Emergent"
    fig = pattern_table_figure(examples, column_titles=titles, caption="rules here")
    texts = _figure_texts(fig)
    assert all(t in texts for t in titles)
    assert "concept · «x» 4/25 (9 active) · max 0.50" in texts
    assert fig._supxlabel.get_text() == "rules here"  # type: ignore[attr-defined]
    page = pattern_table_html(examples, column_titles=titles, caption="rules <here>")
    assert "<th>step 16 · Emergent<br>(middle of the Emergent phase)</th>" in page
    assert "<b>token · « the» 18/25 · max 3.21</b>" in page and "<p>rules &lt;here&gt;</p>" in page
    assert "<small>shifting: token-&gt;concept</small>" in page


def test_umap_figure_takes_panel_titles() -> None:
    rng = np.random.default_rng(2)
    embeddings = [rng.standard_normal((6, 2)) for _ in range(2)]
    fig = plots.umap_figure(embeddings, [0, 9], np.repeat([1, 2], 3), {1: "token", 2: "concept"},
                            panel_titles=["step 0 · Init", "step 9 · Emergent"])  # fmt: skip
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["step 0 · Init", "step 9 · Emergent"]
