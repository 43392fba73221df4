"""The formation stage's passes (saetrack.stages.formation.passes); the passes themselves run end to end in
tests/stages/test_formation.py."""

from __future__ import annotations

import numpy as np

from saetrack.config import RunConfig
from saetrack.stages.formation.passes import select_umap_features


def test_select_umap_features_takes_the_most_formed_of_each_type(smoke: RunConfig) -> None:
    run = smoke.with_overrides({"formation.umap_token_features": 2, "formation.umap_concept_features": 1})
    live = np.array([3, 5, 8, 13, 21])
    types = np.array(["token", "concept", "token", "token", "concept"])
    final = np.array([0.2, 0.1, 0.9, 0.5, 0.4])
    assert select_umap_features(types, final, live, run) == [8, 13, 21]
    none = run.with_overrides({"formation.umap_token_features": 0, "formation.umap_concept_features": 0})
    assert select_umap_features(types, final, live, none) == []
