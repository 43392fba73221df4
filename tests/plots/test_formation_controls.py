"""Figures of the formation stage's controls: Fig. 5d (progress-measure terms) and Fig. S7 (from-scratch SAEs)."""

from __future__ import annotations

import numpy as np

from saetrack.plots.formation_controls import baseline_formation_figure, progress_terms_figure


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


def _side(n_token: int, n_concept: int, token: float | None, concept: float | None) -> dict:
    return {"n_live": n_token + n_concept, "n_token": n_token, "n_concept": n_concept,
            "median_token_activation_cosine": token, "median_concept_activation_cosine": concept}  # fmt: skip


def test_baseline_formation_figure_plots_both_sae_kinds() -> None:
    summary = {
        "per_step": [
            {"step": 1, "baseline": _side(10, 5, 0.8, 0.1), "chain": _side(12, 3, 0.7, 0.2)},
            {"step": 48, "baseline": _side(6, 9, 0.7, None), "chain": _side(5, 10, 0.6, 0.4)},
        ]
    }
    fig = baseline_formation_figure(summary)
    left, right = fig.axes
    lines = {line.get_label(): line for line in left.lines}
    np.testing.assert_allclose(lines["from-scratch SAE, token-level"].get_ydata(), [0.8, 0.7])
    assert np.isnan(lines["from-scratch SAE, concept-level"].get_ydata()[1])
    np.testing.assert_allclose(lines["chain link, concept-level"].get_xdata(), [2, 49])
    counts = {line.get_label(): line for line in right.lines}
    np.testing.assert_allclose(counts["chain link, concept-level"].get_ydata(), [3, 10])


def test_baseline_formation_figure_without_baselines_says_why() -> None:
    fig = baseline_formation_figure({"skipped": "this preset trains no from-scratch baselines"})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("this preset trains no from-scratch baselines" in t for t in texts)
