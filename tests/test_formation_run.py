"""The formation stage's headline numbers: medians by feature type at the first and final checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from saetrack.analysis.formation import PROGRESS_KEYS
from saetrack.stages.formation import FormationResult, summary_numbers


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


def test_formation_stage_end_to_end_at_smoke_size(smoke, smoke_run_dir, tmp_path) -> None:
    import shutil

    from saetrack import paths, store
    from saetrack.data.corpus import load_corpus
    from saetrack.stages.chain import train_chain
    from saetrack.stages.formation import analyse_formation, load_formation, top_contexts

    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    train_chain(smoke, work, progress=False)
    manifest = analyse_formation(smoke, work, progress=False)
    d_sae = smoke.chain.expansion_factor * smoke.model.d_model
    assert sum(manifest["filter_counts"].values()) == d_sae
    result = load_formation(work, smoke)
    n_steps, n_live = len(smoke.sae_steps), len(result.live_features)
    assert result.top_indices.shape == (n_steps, d_sae, smoke.formation.top_k)
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
        load_formation(work, smoke.with_overrides({"formation.top_k": 10}))

    # the drift stage (notebook 04) on the same chain and formation stage
    from saetrack.stages.drift import analyse_drift, load_drift
    from saetrack.stages.drift import summary_numbers as drift_numbers

    drift_manifest = analyse_drift(smoke, work, progress=False)
    drift = load_drift(work, smoke)
    assert drift.cosine.shape == (n_steps, d_sae)
    np.testing.assert_allclose(drift.cosine[-1], 1.0, atol=1e-6)  # the final link against itself
    assert drift.formation_time.shape == (n_live,) and drift.formation_time.max() < n_steps
    numbers = drift_numbers(drift)
    assert set(numbers["median_cosine_to_final"]) == {"first", "middle", "final_but_one"}
    for key in ("phases_from_drift", "phases_from_progress"):
        phases = numbers[key]
        assert 0 < phases["emergent_index"] < phases["convergent_index"] < n_steps
    assert 0 <= numbers["phase_agreement"]["same_phase_fraction"] <= 1
    assert drift.trajectory_coords.shape == (len(drift.trajectory_features), n_steps, 2)
    assert analyse_drift(smoke, work, progress=False) == drift_manifest  # current: nothing recomputed
    with pytest.raises(store.StaleArtifactError, match="another config"):
        load_drift(work, smoke.with_overrides({"drift.formed_fraction": 0.9}))
