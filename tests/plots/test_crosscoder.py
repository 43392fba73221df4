"""Figures of the crosscoder (Fig. X01, X04, X05, X07, X08; issue 14), drawn from small seeded synthetic arrays."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from saetrack.plots.crosscoder import (
    checked_array,
    crosscoder_quality_figure,
    evolution_figure,
    matching_figure,
    phase_timeline_figure,
    statistical_learning_figure,
)

STEPS = [0, 1, 2, 4, 8, 16, 32]  # x = step + 1 on the log axes
T = len(STEPS)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _metrics(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"explained_variance": rng.uniform(0.5, 1, T), "l0": rng.uniform(5, 50, T), "dead_fraction": np.zeros(T)}


def test_quality_has_three_panels_with_both_lines_at_step_plus_one() -> None:
    rng = np.random.default_rng(0)
    crosscoder, chain = _metrics(rng), _metrics(rng)
    fig = crosscoder_quality_figure(STEPS, crosscoder, chain, title="quality")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    first = fig.axes[0]
    np.testing.assert_array_equal(first.lines[0].get_xdata(), np.array(STEPS) + 1)
    np.testing.assert_allclose(first.lines[0].get_ydata(), crosscoder["explained_variance"])
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), chain["l0"])
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["crosscoder", "SAE-Track chain link"]
    assert all(ax.get_xscale() == "log" and ax.get_xlabel() == "checkpoint step + 1" for ax in fig.axes)
    with pytest.raises(ValueError, match="no 'l0'"):
        crosscoder_quality_figure(STEPS, {k: v for k, v in crosscoder.items() if k != "l0"}, chain)
    with pytest.raises(ValueError, match=r"crosscoder dead_fraction must have shape \[7\]"):
        crosscoder_quality_figure(STEPS, {**crosscoder, "dead_fraction": np.zeros(T - 1)}, chain)


def test_evolution_draws_the_normalised_median_and_the_cosine_quantiles() -> None:
    rng = np.random.default_rng(3)
    init_norms = np.linspace(2.0, 0.2, T)[None, :] * rng.uniform(1, 3, (9, 1))  # each row: same shape, own scale
    cosine = rng.uniform(-1, 1, (40, T))
    cosine[:, -1] = 1.0
    fig = evolution_figure(STEPS, init_norms, cosine, n_lines=3)
    left, right = fig.axes
    np.testing.assert_allclose(left.lines[0].get_ydata(), np.linspace(2.0, 0.2, T) / 2.0)  # the normalised median
    assert len(left.lines) == 1 + 3 and left.get_title() == "initialisation features that decay (n = 9)"
    np.testing.assert_allclose(right.lines[0].get_ydata(), np.median(cosine, axis=0))
    assert "live features: 5-95%" in [t.get_text() for t in right.get_legend().get_texts()]
    empty = evolution_figure(STEPS, np.zeros((0, T)), cosine)
    assert empty.axes[0].texts[0].get_text() == "no initialisation feature decays"
    marked = evolution_figure(STEPS, init_norms, cosine, turning_step=int(STEPS[2]))
    for ax in marked.axes:  # the turning point is a dashed vertical line at step + 1 on both panels
        (line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert line.get_xdata()[0] == STEPS[2] + 1.0
        assert f"turning point: step {STEPS[2]}" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError, match="cosine_to_final must have shape"):
        evolution_figure(STEPS, init_norms, cosine[:, :3])


def test_statistical_learning_has_kl_curves_and_entropy_lines() -> None:
    kl = np.geomspace(3.0, 0.01, T)
    loss = np.linspace(10.0, 4.0, T)
    fig = statistical_learning_figure(STEPS, kl, kl * 2, loss, 6.5, 5.0)
    left, right = fig.axes
    assert left.get_yscale() == "log" and len(left.lines) == 2
    np.testing.assert_allclose(right.lines[0].get_ydata(), loss)
    assert [line.get_ydata()[0] for line in right.lines[1:]] == [6.5, 5.0]
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["held-out loss", "unigram entropy (6.50)", "bigram conditional entropy (5.00)"]
    zero = statistical_learning_figure(STEPS, np.zeros(T), kl, loss, 6.5, 5.0)
    assert zero.axes[0].get_yscale() == "linear"  # a KL of exactly zero cannot go on a log axis
    with pytest.raises(ValueError, match="loss must have shape"):
        statistical_learning_figure(STEPS, kl, kl, loss[:2], 6.5, 5.0)


def test_phase_timeline_one_row_per_perspective_and_only_boundaries_in_the_legend() -> None:
    perspectives = [
        ("chain decoder drift", [4, 16]),
        ("progress measure", [2, 8]),
        ("crosscoder emergence", [4]),
        ("statistical learning", [1]),
    ]
    fig = phase_timeline_figure(perspectives, STEPS, agreement_text="agree within one checkpoint")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [name for name, _ in perspectives]
    diamonds = [line for line in ax.lines if line.get_marker() == "D"]
    np.testing.assert_array_equal(diamonds[0].get_xdata(), [5, 17])  # boundary steps at step + 1
    assert [line.get_ydata()[0] for line in diamonds] == [0, 1, 2, 3]
    assert ax.get_xscale() == "log" and fig.get_supxlabel() == "agree within one checkpoint"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["phase boundary"]  # no empty interval entry


def test_matching_draws_the_median_cosine_per_checkpoint_and_the_chance_level() -> None:
    rng = np.random.default_rng(5)
    cosines = [rng.uniform(0, 1, rng.integers(5, 20)) for _ in STEPS]
    cosines[2] = np.array([])  # no match at one checkpoint: a gap
    fig = matching_figure(STEPS, cosines)
    (ax,) = fig.axes
    median = ax.lines[0].get_ydata()
    np.testing.assert_allclose(np.delete(median, 2), [np.median(c) for i, c in enumerate(cosines) if i != 2])
    assert np.isnan(median[2])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["5-95%", "25-75%", "median"]
    chance = np.full(T, 0.2)
    (ax,) = matching_figure(STEPS, cosines, chance).axes
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), chance)
    assert ax.get_legend().get_texts()[-1].get_text() == "chance: matched to random unit vectors (median)"
    with pytest.raises(ValueError, match=r"chance must have shape \[7\]"):
        matching_figure(STEPS, cosines, chance[:3])
    with pytest.raises(ValueError, match="one array per checkpoint"):
        matching_figure(STEPS, cosines[:3])
    with pytest.raises(ValueError, match="steps must be a non-empty"):
        matching_figure([], [])


def test_checked_array_names_the_array_and_the_shape() -> None:
    assert checked_array("x", [1, 2], (2,)).shape == (2,)
    with pytest.raises(ValueError, match=r"x must have shape \[any, 3\], got \(2,\)"):
        checked_array("x", [1, 2], (None, 3))
