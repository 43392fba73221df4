"""The formation stage's headline numbers: medians by feature type at the first and final checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.formation import PROGRESS_KEYS
from saetrack.formation_run import FormationResult, summary_numbers


def _result(progress: np.ndarray, final_types: list[str]) -> FormationResult:
    steps = np.arange(progress.shape[0])
    return FormationResult(
        steps=steps,
        labels=np.empty((0, 0)),
        dominant=np.empty((0, 0)),
        live=np.ones(progress.shape[1], dtype=bool),
        patterns=np.empty(0),
        live_features=np.arange(progress.shape[1]),
        final_types=np.array(final_types),
        progress={key: progress for key in PROGRESS_KEYS},
        umap_steps=steps,
        umap_embeddings=np.zeros((0, 0, 2)),
        umap_point_feature=np.zeros(0),
        umap_types={},
        examples=[],
        manifest={"filter_counts": {}, "pattern_counts": {}, "label_counts": {}},
    )


def test_summary_numbers_on_known_values() -> None:
    # features: two token-level (high from the start), two concept-level (rising), one inactive (ignored)
    progress = np.array(
        [
            [0.8, 0.9, 0.1, 0.3, 5.0],  # first checkpoint
            [0.7, 0.8, 0.4, 0.6, 5.0],
            [0.7, 0.9, 0.5, 0.7, 5.0],  # final checkpoint
        ]
    )
    numbers = summary_numbers(_result(progress, ["token", "token", "concept", "concept", "inactive"]))
    for key in PROGRESS_KEYS:
        n = numbers[key]
        assert n["median_token_first"] == pytest.approx(0.85)
        assert n["median_concept_first"] == pytest.approx(0.2)
        assert n["median_token_final"] == pytest.approx(0.8)
        assert n["median_concept_final"] == pytest.approx(0.6)
        assert n["concept_rise"] == pytest.approx(0.4)


def test_summary_numbers_without_concept_features_say_so() -> None:
    numbers = summary_numbers(_result(np.ones((2, 2)), ["token", "token"]))
    assert numbers["activation_cosine"]["median_concept_first"] is None
    assert numbers["activation_cosine"]["concept_rise"] is None
