"""Figures of feature drift (Fig. 6a, 6b, 7, 7n) and the phase shading, drawn from small hand-made arrays."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from saetrack.analysis.drift import PHASE_NAMES, Phases
from saetrack.plots.drift import (
    FORMED_COLOUR,
    NOISE_COLOUR,
    NOISE_LABEL,
    PHASE_COLOURS,
    UNFORMED_COLOUR,
    drift_distribution_figure,
    drift_features_figure,
    shade_phases,
    trajectories_figure,
    trajectory_null_figure,
)

STEPS = [0, 1, 2, 4, 8, 16]  # x = step + 1 = 1, 2, 3, 5, 9, 17
PHASES = Phases(emergent=2, convergent=4, fit=np.linspace(0, 1, 6), sse=0.0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_shade_phases_spans_each_phase_and_marks_the_other_boundaries() -> None:
    _, ax = plt.subplots()
    shade_phases(ax, STEPS, PHASES, other=Phases(1, 3, np.zeros(6), 0.0), other_label="from progress")
    spans = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]
    assert spans == [(1.0, 3.0), (3.0, 9.0), (9.0, 17.0)]  # from a phase's first checkpoint to the next phase's
    assert [p.get_label() for p in ax.patches] == list(PHASE_NAMES)
    assert [to_rgba(p.get_facecolor())[:3] for p in ax.patches] == [to_rgba(c)[:3] for c in PHASE_COLOURS]
    assert [line.get_xdata()[0] for line in ax.lines] == [2.0, 5.0]  # the other boundaries, dashed
    assert ax.lines[0].get_label() == "from progress" and ax.lines[1].get_label().startswith("_")
    _, bare = plt.subplots()
    shade_phases(bare, STEPS, PHASES, label=False)
    assert not bare.lines and bare.get_legend_handles_labels() == ([], [])  # unlabelled: no legend entries


def test_drift_distribution_has_a_histogram_per_position_and_the_quantile_bands() -> None:
    cosine = np.tile(np.linspace(0.0, 1.0, 6)[:, None], (1, 10))
    cosine[0, 0] = np.nan  # left out of the histogram
    quantiles = np.tile(np.linspace(0.0, 1.0, 6)[:, None], (1, 5)) + np.array([-0.2, -0.1, 0.0, 0.1, 0.2])
    fig = drift_distribution_figure(STEPS, cosine, quantiles, [0, 3, 5], PHASES, title="drift")
    *hists, bottom, legend = fig.axes
    assert [ax.get_title() for ax in hists] == ["step 0", "step 4", "step 16"]
    assert sum(p.get_height() for p in hists[0].patches) == 9  # ten features, one NaN
    # each histogram over its own range: from its 1% quantile (down to 0.01, at most 0.99) to 1
    assert hists[0].get_xlim() == (0.0, 1.0) and hists[0].get_xlabel() == "cosine to final [0.00, 1]"
    assert hists[2].get_xlim() == pytest.approx((0.99, 1.0)) and hists[2].get_xlabel() == "cosine to final [0.99, 1]"
    assert sum(p.get_height() for p in hists[2].patches) == 10
    median, fit = bottom.lines[:2]
    np.testing.assert_array_equal(median.get_xdata(), np.array(STEPS) + 1)
    np.testing.assert_allclose(median.get_ydata(), quantiles[:, 2])
    np.testing.assert_allclose(fit.get_ydata(), PHASES.fit)
    assert bottom.get_xscale() == "log" and fig._suptitle.get_text() == "drift"
    # the legend stands in its own axes beside the curves, never over them
    assert not legend.axison and bottom.get_legend() is None
    texts = [t.get_text() for t in legend.get_legend().get_texts()]
    assert "median" in texts and "three-segment fit (the paper's phases)" in texts
    assert f"{PHASE_NAMES[1]} (shaded: decoder drift (a))" in texts


def test_drift_distribution_draws_the_preferred_fit_when_given() -> None:
    quantiles = np.tile(np.linspace(0.0, 1.0, 6)[:, None], (1, 5))
    preferred = np.linspace(0.1, 0.9, 6)
    fig = drift_distribution_figure(STEPS, np.ones((6, 3)), quantiles, [0], PHASES, preferred_fit=preferred,
                                    preferred_segments=2)  # fmt: skip
    bottom = fig.axes[-2]
    dotted = next(line for line in bottom.lines if line.get_label() == "BIC-preferred fit (2 segments)")
    assert dotted.get_linestyle() == ":"
    np.testing.assert_allclose(dotted.get_ydata(), preferred)
    unfitted = drift_distribution_figure(STEPS, np.ones((6, 3)), quantiles, [0], PHASES,
                                         preferred_fit=np.full(6, np.nan), preferred_segments=None)  # fmt: skip
    assert not any(line.get_label().startswith("BIC-preferred") for line in unfitted.axes[-2].lines)


def test_drift_features_one_panel_per_sampled_feature() -> None:
    cosine = np.stack([np.linspace(0.2, 1.0, 6), np.linspace(0.5, 1.0, 6), np.ones(6)], axis=1)
    fig = drift_features_figure(STEPS, cosine, [5, 9, 11], [4, None, 0], PHASES)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["feature 5", "feature 9 (never formed)", "feature 11"]
    first = fig.axes[0]
    np.testing.assert_allclose(first.lines[0].get_ydata(), cosine[:, 0])
    assert first.lines[1].get_xdata()[0] == 5  # formed at step 4: a line at step + 1
    assert len(fig.axes[1].lines) == 1  # never formed: no formation line
    assert len(drift_features_figure(STEPS, cosine[:, :1], [5], [None], PHASES).axes) == 1


def test_trajectories_colour_segments_by_formation() -> None:
    coords = np.stack(
        [np.stack([np.arange(6.0), np.zeros(6)], axis=1), np.stack([np.zeros(6), np.arange(6.0)], axis=1)]
    )
    variance = np.array([[0.8, 0.1], [0.6, 0.3]])
    fig = trajectories_figure(STEPS, coords, variance, [3, 7], ["shifting", "grouping"], [2, -1])
    first, second = fig.axes
    assert first.get_title() == "feature 3 (shifting)\nformed at step 2"
    assert second.get_title() == "feature 7 (grouping)\nnever formed"
    assert first.get_xlabel() == "PC1 (80% var.)" and second.get_ylabel() == "PC2 (30% var.)"
    colours = [line.get_color() for line in first.lines]
    assert colours == [UNFORMED_COLOUR] * 2 + [FORMED_COLOUR] * 3  # segments from checkpoint 2 on are formed
    assert {line.get_color() for line in second.lines} == {UNFORMED_COLOUR}
    np.testing.assert_array_equal(first.lines[0].get_xdata(), [0.0, 1.0])


def test_legends_name_the_source_of_the_shaded_set_and_the_other_is_dashed() -> None:
    _, ax = plt.subplots()
    shade_phases(ax, STEPS, PHASES, other=Phases(1, 3, np.zeros(6), 0.0), other_label="from progress",
                 source="decoder drift (a)")  # fmt: skip
    assert [p.get_label() for p in ax.patches] == [f"{n} (shaded: decoder drift (a))" for n in PHASE_NAMES]
    assert [line.get_linestyle() for line in ax.lines] == ["--", "--"]  # the other set: two dashed lines, no bars
    assert ax.get_legend_handles_labels()[1] == [f"{n} (shaded: decoder drift (a))" for n in PHASE_NAMES] + [
        "from progress"
    ]
    _, plain = plt.subplots()
    shade_phases(plain, STEPS, PHASES)
    assert not plain.lines and [p.get_label() for p in plain.patches] == list(PHASE_NAMES)


def test_drift_distribution_draws_the_noise_floor_at_its_distance_from_the_final_checkpoint() -> None:
    quantiles = np.tile(np.linspace(0.0, 1.0, 6)[:, None], (1, 5))
    noise = np.array([[0.80, 0.85, 0.90, 0.95, 0.97], [0.70, 0.75, 0.80, 0.85, 0.90]])  # after 1 and 2 links
    fig = drift_distribution_figure(STEPS, np.ones((6, 3)), quantiles, [0], PHASES, noise_quantiles=noise)
    bottom = fig.axes[-2]  # the last axes holds the legend
    floor = next(line for line in bottom.lines if line.get_label() == NOISE_LABEL)
    # m links before the final (index 5) -> index 5 - m: steps 8 and 4, x = 9 and 5
    np.testing.assert_array_equal(floor.get_xdata(), [9.0, 5.0])
    np.testing.assert_allclose(floor.get_ydata(), [0.90, 0.80])
    assert "noise floor 25-75%" in bottom.get_legend_handles_labels()[1]
    # more floor links than the chain has: only those with a checkpoint are drawn; no phases: nothing shaded
    many = np.tile(noise[:1], (9, 1))
    fig = drift_distribution_figure(STEPS, np.ones((6, 3)), quantiles, [0], None, noise_quantiles=many)
    bottom = fig.axes[-2]
    assert not bottom.patches or all(p.get_label() in ("5-95%", "25-75%") for p in bottom.patches)
    floor = next(line for line in bottom.lines if line.get_label() == NOISE_LABEL)
    np.testing.assert_array_equal(floor.get_xdata(), [9.0, 5.0, 3.0, 2.0, 1.0])


def test_drift_features_draw_the_noise_band_and_work_without_phases() -> None:
    cosine = np.stack([np.linspace(0.2, 1.0, 6), np.ones(6)], axis=1)
    noise = np.array([[0.80, 0.85, 0.90, 0.95, 0.97]])
    fig = drift_features_figure(STEPS, cosine, [5, 9], [None, None], None, noise_quantiles=noise)
    first = fig.axes[0]
    assert not first.patches  # no phases shaded
    band = first.collections[0]
    np.testing.assert_allclose(band.get_paths()[0].vertices[:, 1].min(), 0.80)
    np.testing.assert_allclose(band.get_paths()[0].vertices[:, 1].max(), 0.97)
    assert "noise floor 5-95%" in fig.legends[0].get_texts()[0].get_text()


def test_trajectory_null_figure_sets_each_trajectory_beside_its_random_walks() -> None:
    variance = np.array([[0.9, 0.05], [0.5, 0.3]])
    walks = np.linspace(0.0, 1.0, 101)  # 101 null walks per trajectory: quantiles 0.05, 0.5, 0.95 exactly
    null_variance = np.stack([np.stack([walks, walks / 2], axis=1), np.stack([walks / 2, walks / 4], axis=1)])
    straightness, null_straightness = np.array([0.8, 0.2]), np.stack([walks / 2, walks / 2])
    fig = trajectory_null_figure(variance, null_variance, straightness, null_straightness, [7, 12],
                                 ["shifting", "grouping"])  # fmt: skip
    pc1, pc2, straight = fig.axes
    assert [ax.get_xlabel() for ax in fig.axes] == ["PC1 share of variance", "PC2 share of variance",
                                                    "straightness (end-to-end / path length)"]  # fmt: skip
    assert [t.get_text() for t in pc1.get_yticklabels()] == ["7 (shifting)", "12 (grouping)"]
    assert pc1.yaxis_inverted()  # the first feature on top
    ranges = pc1.collections[0].get_segments()  # the null's 5-95% range per trajectory
    np.testing.assert_allclose([seg[:, 0] for seg in ranges], [[0.05, 0.95], [0.025, 0.475]])
    np.testing.assert_allclose(pc1.collections[1].get_offsets(), [[0.5, 0], [0.25, 1]])  # the null's median
    np.testing.assert_allclose(pc2.collections[2].get_offsets(), [[0.05, 0], [0.3, 1]])  # each trajectory's PC2
    np.testing.assert_allclose(straight.collections[2].get_offsets(), [[0.8, 0], [0.2, 1]])
    assert pc1.collections[0].get_colors()[0][:3] == pytest.approx(to_rgba(NOISE_COLOUR)[:3])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["random walk 5-95%", "random walk median",
                                                                  "trajectory"]  # fmt: skip
    assert fig._suptitle.get_text() == "feature trajectories against random walks with the same step sizes"
    assert trajectory_null_figure(variance, null_variance, straightness, null_straightness, [7, 12], ["a", "b"],
                                  title="Fig. 7n")._suptitle.get_text() == "Fig. 7n"  # fmt: skip
