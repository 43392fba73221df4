"""The formation stage's passes (saetrack.stages.formation.passes); the passes themselves run end to end in
tests/stages/test_formation.py."""

from __future__ import annotations

import numpy as np

from saetrack.config import RunConfig
from saetrack.config.presets import get_preset
from saetrack.stages.formation import passes
from saetrack.stages.formation.passes import host_traffic, select_umap_features


def test_select_umap_features_takes_the_most_formed_of_each_type(smoke: RunConfig) -> None:
    run = smoke.with_overrides({"formation.umap_token_features": 2, "formation.umap_concept_features": 1})
    live = np.array([3, 5, 8, 13, 21])
    types = np.array(["token", "concept", "token", "token", "concept"])
    final = np.array([0.2, 0.1, 0.9, 0.5, 0.4])
    distinct = np.arange(20).reshape(5, 4)
    assert select_umap_features(types, final, live, run, distinct) == [8, 13, 21]
    none = run.with_overrides({"formation.umap_token_features": 0, "formation.umap_concept_features": 0})
    assert select_umap_features(types, final, live, none, distinct) == []


def test_select_umap_features_skips_a_feature_whose_datapoints_repeat_a_chosen_one(smoke: RunConfig) -> None:
    run = smoke.with_overrides({"formation.umap_token_features": 2, "formation.umap_concept_features": 1})
    live = np.array([3, 5, 8, 13, 21])
    types = np.array(["token", "concept", "token", "token", "concept"])
    final = np.array([0.2, 0.1, 0.9, 0.5, 0.4])
    indices = np.arange(20).reshape(5, 4)
    indices[3] = indices[2]  # feature 13 has feature 8's datapoints: hidden under it in Fig. 4
    indices[4, :3] = indices[2, :3]  # feature 21 shares 3 of 4 with feature 8 -> the next concept-level one
    assert select_umap_features(types, final, live, run, indices) == [8, 3, 5]


def test_host_traffic_of_pythia_410m_from_its_config() -> None:
    run = get_preset("pythia-410m-l4")
    n, d, f, k = 32_768 * 128, 1024, 64 * 1024, run.formation.top_k
    assert k == 25 and run.chain.expansion_factor * run.model.d_model == 65_536
    traffic = host_traffic(run)
    assert traffic["d2h"] == f * (24 + 12 * k) == 21_233_664  # count, sum, max (8 B) + top-k index/value (8 + 4 B)
    assert traffic["h2d"] == 4 * n * d == 17_179_869_184  # the rows themselves, once
    assert traffic["old_d2h"] == 2 * 4 * n * f == 2 * 2**40  # every activation block, in each of two passes
    assert traffic["old_h2d"] == 2 * traffic["h2d"]
    assert f"{traffic['d2h']:,} B" in passes.__doc__ and f"{traffic['old_d2h']:,} B" in passes.__doc__
