"""Figure functions render what they are given: one panel per key or checkpoint, one median line per feature type."""

from __future__ import annotations

import numpy as np

from saetrack import plots


def test_progress_figure_has_a_panel_per_key_and_a_median_per_type() -> None:
    rng = np.random.default_rng(0)
    steps = [0, 1, 2, 4, 8, 100]
    measures = {key: rng.random((len(steps), 40)) for key in plots.PROGRESS_TITLES}
    types = np.array(["token"] * 25 + ["concept"] * 10 + ["inactive"] * 5)
    fig = plots.progress_figure(steps, measures, types, n_lines=3)
    assert len(fig.axes) == 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["token-level: median of 25", "concept-level: median of 10"]
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
    labels = [t.get_text() for t in visible[0].get_legend().get_texts()]
    assert labels == ["#3 (token)", "#7 (concept)"]
