"""A hand-made :class:`FormationResult` for the formation stage's tests: progress measures and final types only."""

from __future__ import annotations

from typing import Any

import numpy as np

from saetrack.analysis.formation import PROGRESS_KEYS
from saetrack.stages.formation import FormationResult


def formation_result(
    progress: np.ndarray, final_types: list[str], steps: np.ndarray, baseline: np.ndarray, **extra: Any
) -> FormationResult:
    """``progress`` ``[checkpoints, features]`` under every progress key, ``baseline`` its random baseline per
    checkpoint, empty labels, patterns and UMAP, and an empty manifest; ``extra`` sets any other field."""
    empty = {"filter_counts": {}, "pattern_counts": {}, "label_counts": {}}
    fields: dict[str, Any] = {"manifest": empty, "umap_steps": steps, **extra}
    return FormationResult(
        steps=steps,
        labels=np.empty((0, 0)),
        dominant=np.empty((0, 0)),
        top_values=np.empty((0, 0, 0)),
        top_indices=np.empty((0, 0, 0)),
        live=np.ones(progress.shape[1], dtype=bool),
        patterns=np.empty(0),
        live_features=np.arange(progress.shape[1]),
        final_types=np.array(final_types),
        progress={
            **{key: progress for key in PROGRESS_KEYS},
            **{f"baseline_{key}": baseline for key in PROGRESS_KEYS},
        },
        umap_embeddings=np.zeros((0, 0, 2)),
        umap_point_feature=np.zeros(0),
        umap_types={},
        examples=[],
        **fields,
    )
