"""The seed-to-seed control: a second from-scratch SAE at baseline checkpoints, trained like the baseline but seeded
apart, resumable and reused when current."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import baseline_config_hash, chain_config_hash, read_link_manifests
from saetrack.stages.chain.links import link_seed
from saetrack.stages.chain.seed_control import (
    SEED_CONTROL_DIR,
    seed_control_config_hash,
    seed_control_folder,
    seed_control_seed,
    seed_control_steps,
    train_seed_controls,
)


def test_seeds_are_derived_from_the_run_seed_and_differ_from_the_baselines(run) -> None:
    positions = [run.sae_steps.index(s) for s in run.baseline_steps]
    seeds = [seed_control_seed(run, p) for p in positions]
    assert all(seed_control_seed(run, p) != link_seed(run, "baseline", p) for p in positions)
    assert len(set(seeds)) == len(seeds)  # one per checkpoint
    assert seeds == [seed_control_seed(run, p) for p in positions]  # deterministic
    other = run.with_overrides({"seed": 7})
    assert [seed_control_seed(other, p) for p in positions] != seeds


def test_which_checkpoints_get_a_second_seed(run) -> None:
    assert seed_control_steps(run) == run.baseline_steps  # smoke: 2 baselines, the default 2 takes both
    assert seed_control_steps(run.with_overrides({"chain.seed_control": 1})) == run.baseline_steps[-1:]
    assert seed_control_steps(run.with_overrides({"chain.seed_control": 0})) == ()


def test_seed_control_changes_neither_the_chain_nor_its_baselines(run) -> None:
    off = run.with_overrides({"chain.seed_control": 0})
    assert chain_config_hash(off) == chain_config_hash(run) and baseline_config_hash(off) == baseline_config_hash(run)
    assert seed_control_config_hash(off) == seed_control_config_hash(run)  # finished second seeds are kept
    assert seed_control_config_hash(run.with_overrides({"chain.l1_coefficient": 2e-3})) != seed_control_config_hash(run)


def test_second_seed_is_trained_like_the_baseline_but_differs(run, chain_run_dir: Path) -> None:
    baselines = read_link_manifests(chain_run_dir, paths.BASELINE_DIR)
    for step in run.baseline_steps:
        folder = seed_control_folder(chain_run_dir, step)
        assert folder == chain_run_dir / paths.COMPARISON_DIR / SEED_CONTROL_DIR / f"step{step}"
        manifest = store.read_manifest(folder)
        record, base = manifest["seed_control"], baselines[step]["baseline"]
        assert manifest["config_hash"] == seed_control_config_hash(run)
        assert record["l1_coefficient"] == pytest.approx(base["l1_coefficient"], rel=1e-12)
        assert record["training"]["n_tokens"] == base["training"]["n_tokens"] == run.chain.baseline_token_budget
        assert record["seed"] != record["baseline_seed"] == link_seed(run, "baseline", record["position"])
        first = SAEWeights.load(chain_run_dir / paths.BASELINE_DIR / f"step{step}")
        second = SAEWeights.load(folder)
        assert not torch.allclose(first.W_dec, second.W_dec)
        assert np.isfinite(record["metrics"]["explained_variance"])


def test_finished_second_seeds_are_reused_and_a_missing_manifest_is_retrained(
    run, chain_run_dir: Path, tmp_path: Path
) -> None:
    before = {s: store.read_manifest(seed_control_folder(chain_run_dir, s)) for s in run.baseline_steps}
    records = train_seed_controls(run, chain_run_dir, progress=False)  # current: nothing trains
    assert records == [before[s]["seed_control"] for s in run.baseline_steps]
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR, paths.BASELINE_DIR, paths.COMPARISON_DIR):
        shutil.copytree(chain_run_dir / folder, work / folder)
    last = run.baseline_steps[-1]
    (seed_control_folder(work, last) / paths.MANIFEST).unlink()  # as if killed before its manifest
    again = train_seed_controls(run, work, progress=False)
    assert again[0] == before[run.baseline_steps[0]]["seed_control"]  # kept
    assert again[-1]["training"]["wall_time_s"] != before[last]["seed_control"]["training"]["wall_time_s"]
    torch.testing.assert_close(  # retrained with the same seed: the same SAE
        SAEWeights.load(seed_control_folder(work, last)).W_dec,
        SAEWeights.load(seed_control_folder(chain_run_dir, last)).W_dec,
    )


def test_needs_the_baselines_first(run, tmp_path: Path) -> None:
    with pytest.raises(store.StaleArtifactError, match="no baseline SAE at steps"):
        train_seed_controls(run, tmp_path, progress=False)
    assert train_seed_controls(run.with_overrides({"chain.seed_control": 0}), tmp_path) == []
