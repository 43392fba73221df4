"""Figures: one function per paper figure, each returning a matplotlib Figure, grouped by the stage that draws them.

* :mod:`~saetrack.plots.suite` — Fig. S1 (the nano suite's loss);
* :mod:`~saetrack.plots.chain` — Fig. S2-S5 (chain training, quality, convergence, agreement);
* :mod:`~saetrack.plots.formation` — Fig. 2, 3, 4, 5, 8 (patterns, regions, UMAP, progress measures);
* :mod:`~saetrack.plots.formation_controls` — Fig. 5d, 5a, 5n and S7 (the formation stage's controls);
* :mod:`~saetrack.plots.drift` — Fig. 6a, 6b, 7 (decoder drift, trajectories) and the phase shading;
* :mod:`~saetrack.plots.scale` — Fig. S6 (the cross-scale summary; Fig. 9-16 reuse the functions above) and Fig. S8
  (the seed study's phases);
* :mod:`~saetrack.plots.crosscoder` — Fig. X01, X04, X05, X07, X08 (the crosscoder of Ge et al. 2025 beside the
  chain, issue 14); :mod:`~saetrack.plots.crosscoder_emergence` — Fig. X02, X03, X06, X09, X10 (its emergence
  reading and the controls of it, issue 20);
* :mod:`~saetrack.plots.common` — the figure registry and saving under ``figures/<preset>/``.

Everything is re-exported here, so notebooks write ``plots.progress_figure(...)`` and ``plots.save_figure(...)``.
"""

from saetrack.plots.chain import agreement_figure, chain_quality_figure, chain_training_figure, convergence_figure
from saetrack.plots.common import FIGURES, figure_path, save_figure, save_html
from saetrack.plots.crosscoder import (
    crosscoder_quality_figure,
    evolution_figure,
    matching_figure,
    phase_timeline_figure,
    statistical_learning_figure,
)
from saetrack.plots.crosscoder_emergence import (
    control_heatmaps_figure,
    decoder_norm_heatmap_figure,
    emergence_histogram_figure,
    emergence_vs_formation_figure,
    settling_figure,
)
from saetrack.plots.drift import (
    PHASE_COLOURS,
    drift_distribution_figure,
    drift_features_figure,
    shade_phases,
    trajectories_figure,
    trajectory_null_figure,
)
from saetrack.plots.formation import (
    PROGRESS_TITLES,
    TYPE_STYLE,
    PatternExample,
    cell_summary,
    checkpoint_titles,
    feature_regions_figure,
    pattern_examples_from_records,
    pattern_table_figure,
    progress_figure,
    umap_figure,
)
from saetrack.plots.formation_controls import (
    anchor_control_figure,
    baseline_formation_figure,
    normalised_progress_figure,
    progress_terms_figure,
)
from saetrack.plots.formation_html import pattern_table_html
from saetrack.plots.scale import scale_summary_figure, seed_study_figure
from saetrack.plots.suite import loss_curve_figure

__all__ = [
    "FIGURES",
    "PHASE_COLOURS",
    "PROGRESS_TITLES",
    "TYPE_STYLE",
    "PatternExample",
    "agreement_figure",
    "anchor_control_figure",
    "baseline_formation_figure",
    "cell_summary",
    "chain_quality_figure",
    "chain_training_figure",
    "checkpoint_titles",
    "control_heatmaps_figure",
    "convergence_figure",
    "crosscoder_quality_figure",
    "decoder_norm_heatmap_figure",
    "drift_distribution_figure",
    "drift_features_figure",
    "emergence_histogram_figure",
    "emergence_vs_formation_figure",
    "evolution_figure",
    "feature_regions_figure",
    "figure_path",
    "loss_curve_figure",
    "matching_figure",
    "normalised_progress_figure",
    "pattern_examples_from_records",
    "pattern_table_figure",
    "pattern_table_html",
    "phase_timeline_figure",
    "progress_figure",
    "progress_terms_figure",
    "save_figure",
    "save_html",
    "scale_summary_figure",
    "seed_study_figure",
    "settling_figure",
    "shade_phases",
    "statistical_learning_figure",
    "trajectories_figure",
    "trajectory_null_figure",
    "umap_figure",
]
