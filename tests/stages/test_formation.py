"""The formation stage: headline numbers by feature type, progress measures along the saved chain, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from saetrack import paths, store
from saetrack.analysis.anchors import ANCHOR_NAMES
from saetrack.analysis.features import interrupted_identities
from saetrack.analysis.formation import PROGRESS_KEYS
from saetrack.analysis.patterns import SUB_PATTERNS
from saetrack.config import RunConfig
from saetrack.data.corpus import load_corpus
from saetrack.stages.chain import chain_config_hash
from saetrack.stages.formation import (
    FormationResult,
    formation_config_hash,
    load_formation,
    median_progress,
    output_hashes,
    progress_terms,
    summary_numbers,
    top_contexts,
)
from tests.stages.formation.helpers import formation_result


def _result(progress: np.ndarray, final_types: list[str], manifest: dict | None = None) -> FormationResult:
    steps = np.arange(progress.shape[0])
    baseline = np.linspace(0.1, 0.3, progress.shape[0])
    extra = {"manifest": manifest} if manifest else {}
    return formation_result(progress, final_types, steps, baseline, **extra)


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
    assert set(result.patterns[result.live]) <= {"maintaining", "shifting", "grouping", "other", "interrupted"}
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


def test_progress_terms_split_the_measure_into_within_set_and_baseline() -> None:
    progress = np.array([[0.8, 0.9, 0.1, 0.3], [0.3, 0.5, 0.4, 0.6], [0.7, 0.9, 0.5, 0.7]])
    result = _result(progress, ["token", "token", "concept", "concept"])
    terms = progress_terms(result, "activation_cosine")
    np.testing.assert_allclose(terms["random_baseline"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(terms["within_token"], [0.95, 0.6, 1.1])  # median M + baseline
    np.testing.assert_allclose(terms["within_concept"], [0.3, 0.7, 0.9])
    np.testing.assert_allclose(terms["within_token"] - terms["random_baseline"], terms["progress_token"])
    choice = {"rule": "phases", "emergent": 1, "convergent": 2, "fig2": [], "fig4": []}
    manifest = {"filter_counts": {}, "pattern_counts": {}, "label_counts": {}, "checkpoint_choice": choice}
    numbers = summary_numbers(_result(progress, ["token", "token", "concept", "concept"], manifest))
    split = numbers["progress_terms"]
    assert split["emergent_start_step"] == 1
    within = split["activation_cosine"]["within_token"]
    assert within == pytest.approx({"first": 0.95, "emergent_start": 0.6, "final": 1.1})
    baseline = split["feature_cosine"]["random_baseline"]
    assert baseline == pytest.approx({"first": 0.1, "emergent_start": 0.2, "final": 0.3})
    assert numbers["checkpoint_choice"]["emergent_start_step"] == 1


def test_formation_stage_chooses_checkpoints_from_phases_and_picks_checkable_examples(
    run: RunConfig, formation_run: tuple[Path, dict]
) -> None:
    work, manifest = formation_run
    result = load_formation(work, run)
    n_steps, d_sae = len(run.sae_steps), run.chain.expansion_factor * run.model.d_model
    assert result.shares.shape == (n_steps, d_sae) and result.phase_curve.shape == (n_steps,)
    assert set(result.sub_patterns[result.live]) <= set(SUB_PATTERNS)
    assert set(result.sub_patterns[~result.live]) <= {"excluded"}
    assert sum(manifest["sub_pattern_counts"].values()) == len(result.live_features)
    assert list(manifest["pattern_sensitivity"]) == ["0.4", "0.5", "0.6"]
    assert manifest["pattern_sensitivity"]["0.5"]["patterns"] == manifest["pattern_counts"]
    choice = result.checkpoint_choice
    assert choice["rule"] == "phases"  # smoke: 8 checkpoints >= 3 * min_phase_checkpoints
    fig2_steps = [e["step"] for e in choice["fig2"]]
    assert fig2_steps[0] == 0 and fig2_steps[-1] == run.sae_steps[-1] and 3 <= len(fig2_steps) <= 4
    assert run.sae_steps[choice["convergent"]] in fig2_steps
    assert result.umap_steps.tolist() == [e["step"] for e in choice["fig4"]]
    for example in result.examples:
        assert [c["step"] for c in example["cells"]] == fig2_steps
        for cell, entry in zip(example["cells"], choice["fig2"], strict=True):
            position, feature = entry["position"], example["feature"]
            assert cell["label"] == result.labels[position, feature] and cell["top_k"] == run.formation.top_k
            assert cell["count"] == round(result.shares[position, feature] * cell["n_active"])
            assert cell["top_activation"] == pytest.approx(float(result.top_values[position, feature, 0]))
    control = manifest["baseline_control"]
    assert control["steps"] == list(run.baseline_steps)
    assert result.control["control__baseline__labels"].shape == (len(run.baseline_steps), d_sae)
    for row in control["per_step"]:
        for side in ("baseline", "chain"):
            assert row[side]["n_token"] + row[side]["n_concept"] <= row[side]["n_live"]
    numbers = summary_numbers(result)
    assert json.loads(json.dumps(numbers)) == numbers
    assert numbers["progress_terms"]["emergent_start_step"] == run.sae_steps[choice["emergent"]]


def test_formation_stage_keeps_the_controls_of_issue_20(run: RunConfig, formation_run: tuple[Path, dict]) -> None:
    work, manifest = formation_run
    result = load_formation(work, run)
    n_steps, live = len(run.sae_steps), result.live_features
    # interrupted identities: their own pattern, counted apart, never an example of Fig. 2
    interrupted = result.patterns[live] == "interrupted"
    assert manifest["interrupted"]["count"] == int(interrupted.sum()) == manifest["pattern_counts"]["interrupted"]
    assert manifest["interrupted"]["share_of_live"] == pytest.approx(interrupted.mean())
    assert interrupted_identities(result.labels[:, live]).tolist() == interrupted.tolist()
    assert 0 <= manifest["interrupted"]["one_inactive_checkpoint"] <= manifest["interrupted"]["count"]
    assert all(e["pattern"] != "interrupted" for e in result.examples)
    for counts in manifest["pattern_sensitivity"].values():
        assert list(counts["sub_patterns"]) == list(SUB_PATTERNS) and "interrupted" in counts["patterns"]
    # control (c): every SAE's dead share beside its numbers; every link's own
    for row in manifest["baseline_control"]["per_step"]:
        assert 0.0 <= row["dead_fraction_chain"] <= 1.0 and 0.0 <= row["dead_fraction_scratch"] <= 1.0
    assert result.link_dead_fraction.shape == result.link_ultra_low_fraction.shape == (n_steps,)
    # the anchor control: the final anchor's sets with every member active are the paper's D_i (Eq. 15)
    final_features = result.anchors["anchor__final__features"]
    full = (result.top_values[-1, final_features] > 0).all(axis=1)
    columns = np.searchsorted(live, final_features[full])
    expected = result.progress["activation_cosine"][:, columns] + result.progress["baseline_activation_cosine"][:, None]
    np.testing.assert_allclose(result.anchors["anchor__final__within"][:, full], expected, atol=1e-5)
    numbers = summary_numbers(result)
    assert list(numbers["anchor_control"]["anchors"]) == list(ANCHOR_NAMES)
    middle = numbers["anchor_control"]["anchors"]["middle"]
    assert middle["index"] == (n_steps - 1) // 2 and len(middle["token"]["curve"]) == n_steps
    assert numbers["normalised_progress"]["concept"]["n"] == int((result.final_types == "concept").sum())
    assert len(numbers["chain_dead_fraction"]["dead"]) == n_steps
    # Fig. 4: no two shown features share more than half their datapoints; panels share one orientation
    rows = {int(f): set(result.top_indices[-1, f].tolist()) for f in result.umap_types}
    assert all(len(rows[a] & rows[b]) <= run.formation.top_k / 2 for a in rows for b in rows if a < b)
    if len(result.umap_embeddings):
        np.testing.assert_allclose(result.umap_embeddings.mean(axis=1), 0.0, atol=1e-6)  # centred by the alignment
