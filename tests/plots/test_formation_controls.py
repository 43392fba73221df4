"""Figures of the formation stage's controls: Fig. 5d (progress-measure terms), 5a (anchor swap), 5n (normalised
measure) and Fig. S7 (from-scratch SAEs)."""

from __future__ import annotations

import itertools

import numpy as np

from saetrack.analysis.anchors import anchor_summary
from saetrack.plots.formation_controls import (
    anchor_control_figure,
    baseline_formation_figure,
    normalised_progress_figure,
    progress_terms_figure,
)


def test_progress_terms_figure_draws_each_term_and_the_boundaries() -> None:
    steps = [0, 1, 2, 4, 8, 16]
    terms = {
        key: {
            "within_token": np.linspace(0.9, 0.7, 6),
            "within_concept": np.linspace(0.3, 0.6, 6),
            "random_baseline": np.linspace(0.1, 0.4, 6),
            "progress_token": np.linspace(0.8, 0.3, 6),
            "progress_concept": np.linspace(0.2, 0.2, 6),
        }
        for key in ("activation_cosine", "feature_cosine")
    }
    fig = progress_terms_figure(steps, terms, {"Emergent starts": 2, "Convergent starts": 4}, title="5d")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1  # one legend for both panels, below them
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "random baseline (one per checkpoint)" in labels
    assert "Emergent starts (step 2)" in labels and "Convergent starts (step 8)" in labels
    baseline = next(line for line in ax.lines if line.get_label() == "random baseline (one per checkpoint)")
    np.testing.assert_allclose(baseline.get_ydata(), terms["activation_cosine"]["random_baseline"])
    np.testing.assert_allclose(baseline.get_xdata(), np.asarray(steps) + 1)
    assert "activation space" in ax.get_title()


def _side(n_token: int, n_concept: int, token: float | None, concept: float | None, dead: float = 0.1) -> dict:
    return {"n_live": n_token + n_concept, "n_token": n_token, "n_concept": n_concept,
            "median_token_activation_cosine": token, "median_concept_activation_cosine": concept,
            "dead_fraction": dead, "ultra_low_fraction": 0.05}  # fmt: skip


def test_baseline_formation_figure_plots_both_sae_kinds_and_their_dead_shares() -> None:
    summary = {
        "per_step": [
            {"step": 1, "baseline": _side(10, 5, 0.8, 0.1), "chain": _side(12, 3, 0.7, 0.2)},
            {"step": 1400, "baseline": _side(6, 9, 0.7, None, 0.49), "chain": _side(5, 10, 0.6, 0.4)},
            {"step": 2000, "baseline": _side(6, 9, 0.7, 0.3), "chain": _side(5, 10, 0.6, 0.4)},
        ]
    }
    fig = baseline_formation_figure(summary)
    left, middle, right = fig.axes
    lines = {line.get_label(): line for line in left.lines}
    np.testing.assert_allclose(lines["from-scratch SAE, token-level"].get_ydata(), [0.8, 0.7, 0.7])
    assert np.isnan(lines["from-scratch SAE, concept-level"].get_ydata()[1])
    np.testing.assert_allclose(lines["chain link, concept-level"].get_xdata(), [0, 1, 2])  # evenly spaced
    np.testing.assert_allclose(middle.lines[3].get_ydata(), [3, 10, 10])  # chain link, concept-level counts
    assert [t.get_text() for t in left.get_xticklabels()] == ["step 1", "step 1400", "step 2000"]
    bar_labels = [t.get_text() for t in right.texts]
    assert "49%" in bar_labels and "10%" in bar_labels  # each SAE's dead share written on its bar
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    fig.canvas.draw()
    ticks = [t.get_window_extent() for t in left.get_xticklabels()]
    assert not any(a.overlaps(b) for a, b in itertools.pairwise(ticks))  # 1400 and 2000 apart


def test_anchor_control_figure_draws_one_panel_per_anchor_with_the_anchor_marked() -> None:
    steps = [0, 10, 100, 1000, 2000]
    within = {"first": np.array([[0.9, 0.4], [0.6, 0.3], [0.5, 0.3], [0.4, 0.2], [0.4, 0.2]]),
              "middle": np.array([[0.3, 0.1], [0.5, 0.3], [0.9, 0.6], [0.5, 0.4], [0.4, 0.3]]),
              "final": np.array([[0.2, 0.1], [0.3, 0.2], [0.5, 0.4], [0.7, 0.6], [0.9, 0.8]])}  # fmt: skip
    types = {name: np.array(["token", "concept"]) for name in within}
    summary = anchor_summary(steps, within, types, np.full(5, 0.2))
    fig = anchor_control_figure(steps, summary, title="5a")
    assert len(fig.axes) == 3 and len(fig.legends) == 1
    middle = fig.axes[1]
    assert "middle" in middle.get_title() and "step 100" in middle.get_title()
    token = next(line for line in middle.lines if line.get_label().startswith("token-level"))
    np.testing.assert_allclose(token.get_ydata(), within["middle"][:, 0])
    anchor_line = next(line for line in middle.lines if line.get_label().startswith("anchor"))
    assert anchor_line.get_xdata()[0] == 101
    assert "1 token-level, 1 concept-level features" in middle.get_title()


def test_normalised_progress_figure_sets_n_beside_m_and_the_anchors() -> None:
    steps = [0, 10, 100]
    normalised = np.array([[0.8, 0.2, 0.3], [0.7, 0.4, 0.5], [0.9, 0.5, 0.6]])
    types = np.array(["token", "concept", "concept"])
    medians = {"token": np.array([0.5, 0.5, 0.6]), "concept": np.array([0.1, 0.3, 0.4])}
    within = {"final": np.array([[0.5, 0.2], [0.6, 0.3], [0.9, 0.8]])}
    control = anchor_summary(steps, within, {"final": np.array(["token", "concept"])}, np.array([0.5, 0.2, 0.1]))
    fig = normalised_progress_figure(steps, normalised, types, medians, control)
    left, right = fig.axes
    concept = next(line for line in left.lines if line.get_label().startswith("$N_i(t)$, concept"))
    np.testing.assert_allclose(concept.get_ydata(), [0.25, 0.45, 0.55])
    assert any(line.get_label().startswith("$M_i(t)$") for line in left.lines)
    anchored = next(
        line for line in right.lines if line.get_label() == "concept-level, sets chosen at the final checkpoint"
    )
    np.testing.assert_allclose(anchored.get_ydata(), [(0.2 - 0.5) / 0.5, (0.3 - 0.2) / 0.8, (0.8 - 0.1) / 0.9])
    assert len(fig.legends) == 1 and left.get_legend() is None
    assert len(normalised_progress_figure(steps, normalised, types).axes) == 1


def test_baseline_formation_figure_without_baselines_says_why() -> None:
    fig = baseline_formation_figure({"skipped": "this preset trains no from-scratch baselines"})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("this preset trains no from-scratch baselines" in t for t in texts)
