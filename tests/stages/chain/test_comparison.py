"""The comparison stage: convergence of recurrent links vs from-scratch SAEs, feature agreement, index stability."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import paths, store
from saetrack.analysis.convergence import TRIVIAL_RULE
from saetrack.stages.chain import baseline_config_hash, read_link_manifests
from saetrack.stages.chain.comparison import (
    QUALITY_KEYS,
    SMOOTHING_STEPS,
    compare_chain_and_baselines,
    comparison_config_hash,
    load_comparison,
    output_hashes,
)
from saetrack.stages.chain.seed_control import seed_control_config_hash, seed_control_folder


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


def test_quality_gap_is_chain_minus_scratch_beside_the_seed_spread(run, chain_run_dir: Path) -> None:
    comp = store.read_manifest(chain_run_dir / paths.COMPARISON_DIR)
    links, bases = read_link_manifests(chain_run_dir), read_link_manifests(chain_run_dir, paths.BASELINE_DIR)
    seeds = {r["step"]: r for r in comp["seed_control"]}
    assert [g["step"] for g in comp["quality_gap"]] == list(run.baseline_steps) == sorted(seeds)
    for g in comp["quality_gap"]:
        chain, scratch = links[g["step"]]["link"]["metrics"], bases[g["step"]]["baseline"]["metrics"]
        assert g["chain_tokens"] == run.chain.link_tokens and g["scratch_tokens"] == run.chain.baseline_token_budget
        for key in QUALITY_KEYS:
            assert g["gap"][key] == pytest.approx(chain[key] - scratch[key])
            assert g["seed_spread"][key] == pytest.approx(seeds[g["step"]]["metrics"][key] - scratch[key])


def test_convergence_summary_says_what_the_ratio_was_measured_on(run, chain_run_dir: Path) -> None:
    comp = store.read_manifest(chain_run_dir / paths.COMPARISON_DIR)
    setup, summary = comp["convergence_setup"], comp["convergence_summary"]
    window = SMOOTHING_STEPS * run.chain.batch_size
    assert setup["steps"] == list(run.baseline_steps) and setup["window_tokens"] == window
    assert setup["probe_budget_tokens"] == run.chain.baseline_token_budget
    assert setup["link_tokens"] == run.chain.link_tokens and setup["trivial_rule"] == TRIVIAL_RULE
    for item in comp["convergence"]:
        reached = item["recurrent_tokens_to_target"]
        assert item["trivial"] == (reached is not None and reached <= window)
        assert item["reached_within_link_budget"] == (reached is not None and reached <= run.chain.link_tokens)
        assert item["recurrent_loss_at_link_budget"] > 0
    trivial = [i["step"] for i in comp["convergence"] if i["trivial"]]
    assert summary["trivial_steps"] == trivial
    assert sorted(summary["trivial_steps"] + summary["nontrivial_steps"] + summary["not_reached_steps"]) == sorted(
        run.baseline_steps
    )


def test_seed_to_seed_of_identical_saes_is_one(run, chain_run_dir: Path, tmp_path: Path) -> None:
    """A 'second seed' that is the baseline itself matches it perfectly: cosine 1, every feature above threshold."""
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR, paths.CHAIN_DIR, paths.BASELINE_DIR):
        shutil.copytree(chain_run_dir / folder, work / folder)
    bases = read_link_manifests(work, paths.BASELINE_DIR)
    for step in run.baseline_steps:
        folder = seed_control_folder(work, step)
        shutil.copytree(work / paths.BASELINE_DIR / f"step{step}", folder)
        record = {**bases[step]["baseline"], "seed": 0, "baseline_seed": 0}
        store.write_manifest(folder, stage="seed-control-sae", config={}, config_hash=seed_control_config_hash(run),
                             seed_control=record)  # fmt: skip
    comp = compare_chain_and_baselines(run, work, progress=False)
    for item in comp["agreement"]:
        seed = item["seed_to_seed"]
        assert seed["mean_matched_cosine"] == pytest.approx(1.0, abs=1e-9)
        assert seed["fraction_above_threshold"] == 1.0
        assert seed["n_active_seed2"] == item["n_active_baseline"]
    assert all(g["seed_spread"] == {k: 0.0 for k in QUALITY_KEYS} for g in comp["quality_gap"])


def test_comparison_follows_the_seed_control_but_the_chain_does_not(run) -> None:
    off = run.with_overrides({"chain.seed_control": 0})
    assert comparison_config_hash(off) != comparison_config_hash(run)
    assert baseline_config_hash(off) == baseline_config_hash(run)
