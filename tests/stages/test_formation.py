"""The formation stage: headline numbers by feature type, progress measures along the saved chain, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.analysis.formation import PROGRESS_KEYS
from saetrack.config import RunConfig
from saetrack.data.corpus import load_corpus
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.formation import (
    FormationResult,
    formation_config_hash,
    load_formation,
    median_progress,
    output_hashes,
    summary_numbers,
    top_contexts,
)


def _result(progress: np.ndarray, final_types: list[str]) -> FormationResult:
    steps = np.arange(progress.shape[0])
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


def test_formation_stage_end_to_end_at_smoke_size(run: RunConfig, formation_run: tuple[Path, dict]) -> None:
    work, manifest = formation_run
    d_sae = run.chain.expansion_factor * run.model.d_model
    assert sum(manifest["filter_counts"].values()) == d_sae
    result = load_formation(work, run)
    n_steps, n_live = len(run.sae_steps), len(result.live_features)
    assert result.top_indices.shape == (n_steps, d_sae, run.formation.top_k)
    assert set(result.patterns[result.live]) <= {"maintaining", "shifting", "grouping", "other"}
    for key in ("activation_cosine", "feature_cosine", "feature_jaccard", "feature_weighted_jaccard"):
        assert result.progress[key].shape == (n_steps, n_live)
    tokenizer = load_corpus(work)[0]
    feature = int(result.live_features[0])
    contexts = top_contexts(result, feature, n_steps - 1, tokenizer, np.load(work / "cache" / "analysis_tokens.npy"))
    values = [v for v, _, _ in contexts]
    assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
    assert all("«" in text and "<mark>" in html for _, text, html in contexts)
    with pytest.raises(store.StaleArtifactError, match="another config"):
        load_formation(work, run.with_overrides({"formation.top_k": 10}))


def test_median_progress_by_final_type() -> None:
    progress = np.array([[0.8, 0.9, 0.1, 0.3, 5.0], [0.7, 0.9, 0.5, 0.7, np.nan]])
    result = _result(progress, ["token", "token", "concept", "concept", "inactive"])
    np.testing.assert_allclose(median_progress(result, "token"), [0.85, 0.8])
    np.testing.assert_allclose(median_progress(result, "concept"), [0.2, 0.6])
    np.testing.assert_allclose(median_progress(result, None), [0.8, 0.7])  # every live feature, NaN left out
    assert np.isnan(median_progress(result, "shifting")).all()


def test_formation_hash_covers_the_chain_and_the_formation_section(run: RunConfig) -> None:
    assert output_hashes(run) == {paths.FORMATION_DIR: formation_config_hash(run)}
    assert formation_config_hash(run.with_overrides({"formation.top_k": 10})) != formation_config_hash(run)
    changed_chain = run.with_overrides({"chain.l1_coefficient": 2e-3})
    assert chain_config_hash(changed_chain) != chain_config_hash(run)
    assert formation_config_hash(changed_chain) != formation_config_hash(run)
    assert formation_config_hash(run.with_overrides({"drift.formed_fraction": 0.9})) == formation_config_hash(run)
