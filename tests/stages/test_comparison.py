"""The comparison stage: convergence of recurrent links vs from-scratch SAEs, feature agreement, index stability."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.stages.chain import baseline_config_hash
from saetrack.stages.comparison import (
    compare_chain_and_baselines,
    comparison_config_hash,
    load_comparison,
    output_hashes,
)


def test_convergence_and_agreement_are_reported(run, chain_run_dir: Path) -> None:
    comp = store.read_manifest(chain_run_dir / paths.COMPARISON_DIR)
    assert [c["step"] for c in comp["convergence"]] == list(run.baseline_steps)
    for item in comp["convergence"]:
        assert item["scratch_tokens_to_target"] is not None  # the scratch SAE reaches its own final loss
        assert item["target_loss"] > 0
    for item in comp["agreement"]:
        assert 0 < item["mean_matched_cosine"] <= 1
    assert len(comp["index_stability"]) == len(run.sae_steps) - 1


def test_current_comparison_is_loaded_not_recomputed(run, chain_run_dir: Path) -> None:
    manifest = store.read_manifest(chain_run_dir / paths.COMPARISON_DIR)
    assert manifest["config_hash"] == comparison_config_hash(run)
    assert compare_chain_and_baselines(run, chain_run_dir, progress=False) == manifest
    assert load_comparison(chain_run_dir, run) == manifest
    with pytest.raises(store.StaleArtifactError, match="another config"):
        load_comparison(chain_run_dir, run.with_overrides({"chain.link_tokens": 8192}))


def test_comparison_hash_follows_the_baselines(run, tmp_path: Path) -> None:
    assert output_hashes(run) == {paths.COMPARISON_DIR: comparison_config_hash(run)}
    other = run.with_overrides({"chain.l1_coefficient": 2e-3})
    assert baseline_config_hash(other) != baseline_config_hash(run)
    assert comparison_config_hash(other) != comparison_config_hash(run)
    assert comparison_config_hash(run.with_overrides({"formation.top_k": 10})) == comparison_config_hash(run)
    with pytest.raises(store.StaleArtifactError, match="no finished comparison"):
        load_comparison(tmp_path)
