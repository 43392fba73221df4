"""Figures of the crosscoder's emergence and its controls (Fig. X02, X03, X06, X09, X10), from seeded arrays."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from saetrack.plots.crosscoder_emergence import (
    control_heatmaps_figure,
    decoder_norm_heatmap_figure,
    emergence_histogram_figure,
    emergence_vs_formation_figure,
    settling_figure,
)

STEPS = [0, 1, 2, 4, 8, 16, 32]
T = len(STEPS)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _planted_norms(rng: np.random.Generator, emergence: np.ndarray) -> np.ndarray:
    """Norms that are small before each feature's emergence index and 1-2 from it on (all zero: dead)."""
    norms = np.zeros((len(emergence), T))
    for i, e in enumerate(emergence):
        if e >= 0:
            norms[i, :e] = rng.uniform(0, 0.1, e)
            norms[i, e:] = rng.uniform(1, 2, T - e)
    return norms


def test_heatmap_draws_absolute_and_relative_norms_in_the_same_row_order() -> None:
    rng = np.random.default_rng(1)
    emergence = rng.integers(-1, T, size=60)
    norms = _planted_norms(rng, emergence) * rng.uniform(0.5, 5, (60, 1))  # each feature its own scale
    fig = decoder_norm_heatmap_figure(STEPS, norms, emergence, 0.5)
    absolute, relative = fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
    alive = int((emergence >= 0).sum())
    assert absolute.shape == relative.shape == (alive, T)  # dead rows dropped
    assert np.allclose(relative.max(axis=1), 1.0)  # the right panel is row-normalised ...
    np.testing.assert_allclose(relative, absolute / absolute.max(axis=1, keepdims=True))  # ... of the same rows
    np.testing.assert_array_equal(np.argmax(relative >= 0.5, axis=1), np.sort(emergence[emergence >= 0]))
    assert [ax.get_title() for ax in fig.axes[:2]] == ["absolute", "relative to each feature's maximum"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(s) for s in STEPS]
    subtitle = fig._suptitle.get_text()
    assert f"all {alive} features drawn" in subtitle and f"{60 - alive} never reaching it (dead) dropped" in subtitle


def test_heatmap_breaks_ties_by_peak_and_subsamples_rows() -> None:
    emergence = np.zeros(10, dtype=int)
    norms = np.full((10, T), 0.9)
    norms[np.arange(10), np.arange(10)[::-1] % T] = 1.0  # peaks at 2, 1, 0, 6, 5, ... in row order
    fig = decoder_norm_heatmap_figure(STEPS, norms, emergence, 0.5, max_rows=4)
    image = fig.axes[1].images[0].get_array()
    assert image.shape == (4, T)  # every 3rd of 10 rows
    peaks = np.argmax(image, axis=1)
    assert list(peaks) == sorted(peaks)  # inside one emergence block the rows run down by peak: a diagonal of peaks
    assert "1 in 3 of 10 features drawn" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="norms must have shape"):
        decoder_norm_heatmap_figure(STEPS, norms[:, :-1], emergence, 0.5)
    with pytest.raises(ValueError, match="emergence must have shape"):
        decoder_norm_heatmap_figure(STEPS, norms, emergence[:-1], 0.5)


def test_emergence_histograms_count_per_checkpoint_at_each_fraction_with_the_nulls_beside() -> None:
    rng = np.random.default_rng(2)
    by_fraction = {f: rng.integers(-1, T, size=200) for f in (0.3, 0.5, 0.7, 0.9)}
    by_fraction[0.3][:150] = 0  # a large tie at the first checkpoint
    init_decaying = (by_fraction[0.5] == 0) & (rng.uniform(size=200) < 0.5)
    shares = {
        "crosscoder": {"0.3": 0.8, "0.5": 0.6, "0.7": 0.5, "0.9": 0.3},
        "permuted": {"0.3": 0.7, "0.5": 0.5, "0.7": 0.4, "0.9": None},
    }
    band = ({"0.3": 0.6, "0.5": 0.4, "0.7": 0.3, "0.9": 0.1}, {"0.3": 0.8, "0.5": 0.6, "0.7": 0.5, "0.9": 0.2})
    fig = emergence_histogram_figure(STEPS, by_fraction, init_decaying, shares, decaying_fraction=0.5, null_band=band)
    assert len(fig.axes) == 5
    for ax, (fraction, e) in zip(fig.axes, sorted(by_fraction.items()), strict=False):
        heights = [p.get_height() for p in ax.containers[0]]
        np.testing.assert_array_equal(heights, np.bincount(e[e >= 0], minlength=T))
        assert ax.get_yscale() == "log" and ax.get_title() == f"fraction {fraction:g}"
        first = int(np.sum(e == 0))
        assert ax.texts[0].get_text() == f"{first} ({100 * first / np.sum(e >= 0):.0f}%)"  # the tie, stated
    hatched = [p.get_height() for p in fig.axes[1].containers[1]]  # on the panel of the fraction they were found at
    assert hatched[0] == np.sum(init_decaying) and sum(hatched[1:]) == 0 and len(fig.axes[0].containers) == 1
    summary = fig.axes[-1]
    np.testing.assert_allclose(summary.lines[0].get_ydata(), [0.8, 0.6, 0.5, 0.3])
    assert np.isnan(summary.lines[1].get_ydata()[-1])  # an undefined share is a gap
    assert [t.get_text() for t in summary.get_legend().get_texts()] == ["permuted: 5-95%", "crosscoder", "permuted"]
    np.testing.assert_allclose(summary.collections[0].get_paths()[0].vertices[:, 1].min(), 0.1)  # the band's floor
    assert len(emergence_histogram_figure(STEPS, by_fraction, init_decaying).axes) == 4  # no shares: no summary
    with pytest.raises(ValueError, match="init_decaying must have shape"):
        emergence_histogram_figure(STEPS, by_fraction, init_decaying[:5])
    with pytest.raises(ValueError, match="below the number of checkpoints"):
        emergence_histogram_figure(STEPS, {0.5: np.array([T])}, np.array([False]))


def test_emergence_vs_formation_counts_pairs_per_cell_so_ties_show() -> None:
    rng = np.random.default_rng(4)
    formation = rng.integers(0, T, 50)
    emergence = np.where(rng.uniform(size=50) < 0.8, 0, formation)  # four fifths tied at the first checkpoint
    stats = {"kendall_tau_b": 0.31, "permutation_p": 0.002, "null_q025": -0.1, "null_q975": 0.1,
             "tied_at_first_share": 0.8, "spearman_rho": None}  # fmt: skip
    fig = emergence_vs_formation_figure(STEPS, formation, emergence, stats)
    grid_ax = fig.axes[0]
    grid = np.nan_to_num(np.asarray(grid_ax.images[0].get_array(), dtype=float))
    expected = np.zeros((T, T))
    np.add.at(expected, (emergence, formation), 1)
    np.testing.assert_array_equal(grid, expected)
    written = {(t.get_position(), t.get_text()) for t in grid_ax.texts}
    assert ((int(formation[0]), int(emergence[0])), str(int(expected[emergence[0], formation[0]]))) in written
    assert sum(int(t.get_text()) for t in grid_ax.texts) == 50  # every pair is counted once, in its cell
    top, side = fig.axes[1], fig.axes[2]
    np.testing.assert_array_equal([p.get_height() for p in top.patches], expected.sum(axis=0))
    np.testing.assert_array_equal([p.get_width() for p in side.patches], expected.sum(axis=1))
    title = fig._suptitle.get_text()
    assert "Kendall τ_b = 0.31 (permutation p = 0.002; null 95%: -0.10 to 0.10), n = 50\n" in title
    assert "tied at the first emergence checkpoint: 80%" in title and "Spearman ρ = n/a" in title
    with pytest.raises(ValueError, match="emergence_index must have shape"):
        emergence_vs_formation_figure(STEPS, formation, emergence[:3], stats)


def test_control_heatmaps_one_panel_per_run_each_with_its_own_checkpoints() -> None:
    rng = np.random.default_rng(6)
    emergence = rng.integers(0, T, 30)
    norms = _planted_norms(rng, emergence)
    late = emergence[:20].clip(max=2)
    panels = [("crosscoder", STEPS, norms, emergence), ("dropped early", STEPS[4:], norms[:20, 4:], late)]
    fig = control_heatmaps_figure(panels, 0.5)
    first, second = fig.axes[0], fig.axes[1]
    assert first.images[0].get_array().shape == (30, T) and second.images[0].get_array().shape == (20, T - 4)
    assert [t.get_text() for t in second.get_xticklabels()] == [str(s) for s in STEPS[4:]]
    share = 100 * np.mean(late == 0)
    assert second.get_title() == f"dropped early\n20 alive, {share:.0f}% at its first checkpoint"
    with pytest.raises(ValueError, match="at least one"):
        control_heatmaps_figure([], 0.5)


def test_settling_draws_the_medians_with_the_dip_window_and_each_settling_curve() -> None:
    medians = {"crosscoder": (STEPS, np.linspace(1, 0.5, T)), "centred": (STEPS, np.full(T, 0.8))}
    curves = {"crosscoder": {"step": [10, 20, 30], "relative_change": [0.2, 0.05, 0.01]}}
    fig = settling_figure(medians, curves, (8, 64), 0.02)
    left, right = fig.axes
    np.testing.assert_array_equal(left.lines[0].get_xdata(), np.asarray(STEPS) + 1.0)
    np.testing.assert_allclose(left.lines[1].get_ydata(), 0.8)
    assert left.patches[0].get_label() == "dip window: steps 8-64"
    np.testing.assert_array_equal(right.lines[0].get_ydata(), [0.2, 0.05, 0.01])
    assert right.lines[1].get_ydata()[0] == 0.02 and right.get_yscale() == "log"
