"""Figures of the crosscoder (Fig. X01-X08, issue 14), drawn from small seeded synthetic arrays."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from saetrack.plots.crosscoder import (
    SCATTER_JITTER,
    crosscoder_quality_figure,
    decoder_norm_heatmap_figure,
    emergence_histogram_figure,
    emergence_vs_formation_figure,
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


def _planted_norms(rng: np.random.Generator, emergence: np.ndarray) -> np.ndarray:
    """Norms that are small before each feature's emergence index and 1-2 from it on (all zero: dead)."""
    norms = np.zeros((len(emergence), T))
    for i, e in enumerate(emergence):
        if e >= 0:
            norms[i, :e] = rng.uniform(0, 0.1, e)
            norms[i, e:] = rng.uniform(1, 2, T - e)
    return norms


def test_heatmap_puts_earlier_emerging_features_first_and_drops_dead_ones() -> None:
    rng = np.random.default_rng(1)
    emergence = rng.integers(-1, T, size=60)
    norms = _planted_norms(rng, emergence)
    fig = decoder_norm_heatmap_figure(STEPS, norms, emergence, 0.5)
    image = fig.axes[0].images[0].get_array()
    alive = int((emergence >= 0).sum())
    assert image.shape == (alive, T) and np.allclose(image.max(axis=1), 1.0)  # dead rows dropped, rows normalised
    first_passing = np.argmax(image >= 0.5, axis=1)
    np.testing.assert_array_equal(first_passing, np.sort(emergence[emergence >= 0]))  # earliest emergence on top
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(s) for s in STEPS]
    subtitle = fig._suptitle.get_text()
    assert f"all {alive} features drawn" in subtitle and f"{60 - alive} never reaching it (dead) dropped" in subtitle


def test_heatmap_subsamples_rows_in_sorted_order_and_breaks_ties_by_peak() -> None:
    emergence = np.zeros(10, dtype=int)
    norms = np.full((10, T), 0.9)
    norms[np.arange(10), np.arange(10)[::-1] % T] = 1.0  # peaks at 2, 1, 0, 6, 5, ... in row order
    fig = decoder_norm_heatmap_figure(STEPS, norms, emergence, 0.5, max_rows=4)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (4, T)  # every 3rd of 10 rows
    peaks = np.argmax(image, axis=1)
    assert list(peaks) == sorted(peaks)
    assert "1 in 3 of 10 features drawn" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="norms must have shape"):
        decoder_norm_heatmap_figure(STEPS, norms[:, :-1], emergence, 0.5)
    with pytest.raises(ValueError, match="emergence must have shape"):
        decoder_norm_heatmap_figure(STEPS, norms, emergence[:-1], 0.5)


def test_emergence_histogram_bar_heights_are_the_counts_per_checkpoint() -> None:
    rng = np.random.default_rng(2)
    emergence = rng.integers(-1, T, size=200)
    init_decaying = (emergence == 0) & (rng.uniform(size=200) < 0.5)
    fig = emergence_histogram_figure(STEPS, emergence, init_decaying)
    (ax,) = fig.axes
    counts, decaying = ([p.get_height() for p in c] for c in ax.containers)
    np.testing.assert_array_equal(counts, np.bincount(emergence[emergence >= 0], minlength=T))
    assert decaying[0] == init_decaying.sum() and sum(decaying[1:]) == 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].endswith(f"{int((emergence < 0).sum())} dead, never emerging)")
    assert labels[1].startswith("of which present at initialisation and later decaying")
    with pytest.raises(ValueError, match="init_decaying must have shape"):
        emergence_histogram_figure(STEPS, emergence, init_decaying[:5])
    with pytest.raises(ValueError, match="below the number of checkpoints"):
        emergence_histogram_figure(STEPS, np.array([T]), np.array([False]))


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


def test_emergence_vs_formation_scatters_jittered_indices_with_rho_in_the_legend() -> None:
    rng = np.random.default_rng(4)
    formation = rng.integers(0, T, 30)
    emergence = np.clip(formation + rng.integers(-1, 2, 30), 0, T - 1)
    fig = emergence_vs_formation_figure(STEPS, formation, emergence, 0.81, 1e-5)
    (ax,) = fig.axes
    points = ax.collections[0].get_offsets()
    assert np.abs(points[:, 0] - formation).max() <= SCATTER_JITTER
    assert np.abs(points[:, 1] - emergence).max() <= SCATTER_JITTER
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "matched features: Spearman ρ = 0.81 (p = 1e-05), n = 30" and legend[1] == "same checkpoint"
    assert f"jitter ±{SCATTER_JITTER}" in ax.get_xlabel()
    with pytest.raises(ValueError, match="emergence_index must have shape"):
        emergence_vs_formation_figure(STEPS, formation, emergence[:3], 0.8, 0.1)


def test_phase_timeline_one_row_per_perspective() -> None:
    perspectives = [
        ("chain decoder drift", [4, 16], [(2, 8), None]),
        ("progress measure", [2, 8], []),
        ("crosscoder emergence", [4], [(4, 4)]),
        ("statistical learning", [1], []),
    ]
    fig = phase_timeline_figure(perspectives, STEPS, agreement_text="agree within one checkpoint")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [name for name, _, _ in perspectives]
    diamonds = [line for line in ax.lines if line.get_marker() == "D"]
    np.testing.assert_array_equal(diamonds[0].get_xdata(), [5, 17])  # boundary steps at step + 1
    assert [line.get_ydata()[0] for line in diamonds] == [0, 1, 2, 3]
    intervals = [line for line in ax.lines if line.get_marker() == "|"]
    np.testing.assert_array_equal(intervals[0].get_xdata(), [3, 9])
    assert ax.get_xscale() == "log" and fig.get_supxlabel() == "agree within one checkpoint"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["phase boundary", "interval (lo, hi)"]
    with pytest.raises(ValueError, match="2 boundaries but 1 intervals"):
        phase_timeline_figure([("a", [1, 2], [None])], STEPS)


def test_matching_draws_the_median_cosine_per_checkpoint() -> None:
    rng = np.random.default_rng(5)
    cosines = [rng.uniform(0, 1, rng.integers(5, 20)) for _ in STEPS]
    cosines[2] = np.array([])  # no match at one checkpoint: a gap
    fig = matching_figure(STEPS, cosines)
    (ax,) = fig.axes
    median = ax.lines[0].get_ydata()
    np.testing.assert_allclose(np.delete(median, 2), [np.median(c) for i, c in enumerate(cosines) if i != 2])
    assert np.isnan(median[2])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["5-95%", "25-75%", "median"]
    with pytest.raises(ValueError, match="one array per checkpoint"):
        matching_figure(STEPS, cosines[:3])
    with pytest.raises(ValueError, match="steps must be a non-empty"):
        matching_figure([], [])
