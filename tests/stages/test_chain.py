"""The SAE-Track chain at smoke size: order, hyperparameters per link, SAELens interop, resume, NaN guard."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sae_lens
import torch

from saetrack import paths, store
from saetrack.data.activations import ActivationCache
from saetrack.sae.weights import feature_activations
from saetrack.stages.chain import (
    baseline_config_hash,
    chain_config_hash,
    load_chain,
    output_hashes,
    read_link_manifests,
    train_baselines,
    train_chain,
)
from saetrack.stages.chain.links import ChainTrainingError, activation_scale, link_l1_coefficient
from saetrack.store import StaleArtifactError
from tests.sigkill import assert_resumes_after_sigkill


def test_chain_runs_forward_and_each_link_starts_from_the_previous(run, chain_run_dir: Path) -> None:
    manifest = store.read_manifest(chain_run_dir / paths.CHAIN_DIR)
    assert manifest["steps"] == list(run.sae_steps)
    links = manifest["links"]
    assert links[0]["initialised_from"] is None
    assert [link["initialised_from"] for link in links[1:]] == list(run.sae_steps[:-1])
    assert links[0]["training"]["n_tokens"] == run.chain.first_tokens
    assert all(link["training"]["n_tokens"] == run.chain.link_tokens for link in links[1:])
    assert links[0]["lr"] == run.chain.lr_first and all(link["lr"] == run.chain.lr_link for link in links[1:])
    for link in links:
        for key in ("explained_variance", "dead_fraction", "dense_fraction", "l0", "mse", "sae_loss", "clean_loss"):
            assert np.isfinite(link["metrics"][key]), (link["step"], key)
        # CE recovered is defined exactly when zero-ablation costs the model at least min_gap nats
        assert np.isfinite(link["metrics"]["ce_recovered"]) == (abs(link["metrics"]["ablation_gap"]) >= 0.05)


def test_every_saved_link_carries_its_configured_l1(run, chain_run_dir: Path) -> None:
    cache = ActivationCache(chain_run_dir, run)
    links = read_link_manifests(chain_run_dir)
    for step, folder in load_chain(chain_run_dir, run).items():
        expected = link_l1_coefficient(run, activation_scale(cache.train(step)), cache.d_model)
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["l1_coefficient"] == pytest.approx(expected, rel=1e-9), step
        assert links[step]["link"]["l1_coefficient"] == pytest.approx(expected, rel=1e-9), step
        assert cfg["metadata"]["model_revision"] == f"step{step}"  # its own checkpoint, not the first link's


def test_links_load_in_saelens_and_encode_like_our_code(run, chain_run_dir: Path) -> None:
    cache = ActivationCache(chain_run_dir, run)
    for step, folder in load_chain(chain_run_dir, run).items():
        sae = sae_lens.SAE.load_from_disk(str(folder))
        x = torch.as_tensor(np.array(cache.heldout(step)[:256]))
        torch.testing.assert_close(sae.encode(x), feature_activations(folder, x), atol=1e-5, rtol=1e-5)


def test_interrupted_chain_resumes_to_identical_weights(run, chain_run_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(chain_run_dir / folder, work / folder)

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == run.sae_steps[3]:
            raise Killed

    with pytest.raises(Killed):
        train_chain(run, work, progress=False, after_link=kill)
    # a half-written next link (no manifest) must be ignored and retrained, never loaded
    half = work / paths.CHAIN_DIR / paths.step_dir_name(run.sae_steps[4])
    half.mkdir()
    (half / "sae_weights.safetensors").write_bytes(b"garbage")
    train_chain(run, work, progress=False)
    ours = read_link_manifests(work)
    reference = read_link_manifests(chain_run_dir)
    assert ours.keys() == reference.keys()
    for step in ours:
        assert ours[step]["files"] == reference[step]["files"], step


def test_a_cache_file_altered_on_disk_is_named_before_training_and_finished_links_are_kept(
    run, chain_run_dir: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(chain_run_dir / folder, work / folder)
    bad_step = run.sae_steps[2]
    train_file = work / paths.CACHE_DIR / paths.step_dir_name(bad_step) / "train.npy"
    poisoned = np.load(train_file)
    poisoned[:] = np.inf
    np.save(train_file, poisoned)
    with pytest.raises(StaleArtifactError, match=rf"{re.escape(str(train_file))} was changed on disk"):
        train_chain(run, work, progress=False)
    assert sorted(read_link_manifests(work)) == list(run.sae_steps[:2])


def test_nan_loss_during_training_names_link_and_step(run, chain_run_dir: Path, tmp_path, monkeypatch) -> None:
    import saetrack.stages.chain.links as chain_module
    from saetrack.sae.training import NonFiniteLossError

    work = tmp_path / "run"
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(chain_run_dir / folder, work / folder)
    real_train = chain_module.train_sae
    calls = {"n": 0}

    def train_then_diverge(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second link's loss becomes NaN at its 7th step
            raise NonFiniteLossError(7, 7 * run.chain.batch_size, {"loss": float("nan")})
        return real_train(*args, **kwargs)

    monkeypatch.setattr(chain_module, "train_sae", train_then_diverge)
    with pytest.raises(
        ChainTrainingError, match=rf"link 2/\d+ \(step {run.sae_steps[1]}\): non-finite SAE loss at step 7"
    ):
        train_chain(run, work, progress=False)
    assert sorted(read_link_manifests(work)) == [run.sae_steps[0]]


@pytest.mark.slow
def test_sigkill_during_the_chain_then_resume_gives_identical_hashes(
    sigkill_reference: dict[str, object], tmp_path: Path
) -> None:
    assert_resumes_after_sigkill(tmp_path, "chain", 8, sigkill_reference)


def test_baselines_are_trained_from_scratch_at_their_steps(run, chain_run_dir: Path) -> None:
    baselines = read_link_manifests(chain_run_dir, paths.BASELINE_DIR)
    assert list(baselines) == list(run.baseline_steps)
    manifest = store.read_manifest(chain_run_dir / paths.BASELINE_DIR)
    assert manifest["config_hash"] == baseline_config_hash(run)
    assert train_baselines(run, chain_run_dir, progress=False) == manifest  # current: nothing retrained


def test_chain_is_checked_against_its_config(run, chain_run_dir: Path, tmp_path: Path) -> None:
    assert list(load_chain(chain_run_dir)) == list(run.sae_steps)
    assert train_chain(run, chain_run_dir, progress=False) == store.read_manifest(chain_run_dir / paths.CHAIN_DIR)
    with pytest.raises(store.StaleArtifactError, match="another config"):
        load_chain(chain_run_dir, run.with_overrides({"chain.l1_coefficient": 2e-3}))
    with pytest.raises(store.StaleArtifactError, match="no finished chain"):
        load_chain(tmp_path)
    assert output_hashes(run) == {
        paths.CHAIN_DIR: chain_config_hash(run),
        paths.BASELINE_DIR: baseline_config_hash(run),
    }
    assert chain_config_hash(run.with_overrides({"cache.layer": 0})) != chain_config_hash(run)
    assert chain_config_hash(run.with_overrides({"formation.top_k": 10})) == chain_config_hash(run)
