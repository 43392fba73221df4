"""Loading a pushed chain back: download pinned to a commit from the hub cache (offline), verify, install."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.hub.layout import INDEX_FILE, ChainConfigMismatchError, ChainIntegrityError
from saetrack.hub.pull import download_chain, install_chain, load_hub_chain, run_config_of, verify_chain_files
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import chain_config_hash, load_chain, read_link_manifests, train_chain
from tests.hub.fakes import REPO_ID, fresh_cache, original_chain_bytes, tree_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# Push (fake api) -> hub cache -> download -> install: the round trip
# ----------------------------------------------------------------------------------------------


def test_push_download_install_round_trip_bit_for_bit(
    run: RunConfig, chain_run_dir: Path, pushed: tuple[Path, str], tmp_path: Path
) -> None:
    cache, commit = pushed
    snapshot = download_chain(REPO_ID, commit, cache_dir=cache)
    assert snapshot == cache / "models--TestOrg--saetrack-smoke-chain" / "snapshots" / commit
    target = tmp_path / "run"
    folders = install_chain(snapshot, target, run)
    original = original_chain_bytes(chain_run_dir, run)
    assert tree_bytes(target / paths.CHAIN_DIR) == original  # exactly the chain notebook 02 wrote, nothing else
    assert not any(p.is_symlink() for p in (target / paths.CHAIN_DIR).rglob("*"))
    # what the formation code reads: load_chain's folders, link manifests, weights
    source_folders = load_chain(chain_run_dir, run)
    assert list(folders) == list(source_folders) == list(run.sae_steps)
    assert {s: f.name for s, f in folders.items()} == {s: f.name for s, f in source_folders.items()}
    assert read_link_manifests(target) == read_link_manifests(chain_run_dir)
    for step, folder in folders.items():
        ours, theirs = (
            load_file(folder / "sae_weights.safetensors"),
            load_file(source_folders[step] / "sae_weights.safetensors"),
        )
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        a, b = SAEWeights.load(folder), SAEWeights.load(source_folders[step])
        assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.b_dec, b.b_dec)
    # notebook 02 finds the installed chain current and trains nothing
    assert store.manifest_is_current(target / paths.CHAIN_DIR, chain_config_hash(run), verify_files=True)
    assert train_chain(run, target, progress=False) == store.read_manifest(target / paths.CHAIN_DIR)
    # load_hub_chain does both steps; run_config_of rebuilds the exact run
    again = load_hub_chain(REPO_ID, commit, tmp_path / "run2", run, cache_dir=cache)
    assert tree_bytes(tmp_path / "run2" / paths.CHAIN_DIR) == original and list(again) == list(folders)
    assert run_config_of(snapshot) == run


def test_download_refuses_branch_names(pushed: tuple[Path, str]) -> None:
    cache, commit = pushed
    for revision in ("main", "v1.0", commit[:12], "step0"):
        with pytest.raises(ValueError, match=r"not a commit hash.*branch or tag can move.*list_repo_commits"):
            download_chain(REPO_ID, revision, cache_dir=cache)
    with pytest.raises(ValueError, match="owner/name"):
        download_chain("no-owner", commit, cache_dir=cache)
    with pytest.raises(ValueError, match="owner/name"):
        download_chain("a/b/c", commit, cache_dir=cache)
    # an upper-case hash is the same commit
    assert download_chain(REPO_ID, commit.upper(), cache_dir=cache).name == commit


def test_download_detects_corrupt_and_missing_files(run: RunConfig, staged: Path, tmp_path: Path) -> None:
    cache, commit = fresh_cache(tmp_path, staged)
    assert download_chain(REPO_ID, commit, cache_dir=cache).name == commit
    snapshot = cache / "models--TestOrg--saetrack-smoke-chain" / "snapshots" / commit
    step = run.sae_steps[2]
    weights = snapshot / f"step{step}" / "sae_weights.safetensors"
    blob = weights.resolve()
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 0x01]))  # one flipped bit in the last tensor
    with pytest.raises(ChainIntegrityError, match=rf"step{step}/sae_weights\.safetensors .*corrupt"):
        download_chain(REPO_ID, commit, cache_dir=cache)
    with pytest.raises(ChainIntegrityError, match=rf"step{step}/sae_weights\.safetensors"):
        install_chain(snapshot, tmp_path / "run", run)
    assert not (tmp_path / "run" / paths.CHAIN_DIR).exists()
    blob.write_bytes(good)
    assert download_chain(REPO_ID, commit, cache_dir=cache).name == commit
    (snapshot / f"step{step}" / "sparsity.safetensors").unlink()
    with pytest.raises(ChainIntegrityError, match=rf"step{step}/sparsity\.safetensors .*missing"):
        download_chain(REPO_ID, commit, cache_dir=cache)


def test_download_of_uncached_commit_fails_offline(pushed: tuple[Path, str]) -> None:
    cache, _ = pushed
    with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError):
        download_chain(REPO_ID, "0" * 40, cache_dir=cache)


def test_install_refuses_chain_of_another_config(run: RunConfig, pushed: tuple[Path, str], tmp_path: Path) -> None:
    cache, commit = pushed
    snapshot = download_chain(REPO_ID, commit, cache_dir=cache)
    target = tmp_path / "run"
    other = run.with_overrides({"chain.l1_coefficient": 2e-3})
    with pytest.raises(ChainConfigMismatchError, match=r"chain\.l1_coefficient: pushed 0\.001, this run 0\.002"):
        install_chain(snapshot, target, other)
    assert not (target / paths.CHAIN_DIR).exists()
    other = run.with_overrides({"cache.layer": 0, "seed": 3})
    with pytest.raises(
        store.StaleArtifactError, match=r"cache\.layer: pushed 1, this run 0.*seed: pushed 0, this run 3"
    ):
        load_hub_chain(REPO_ID, commit, target, other, cache_dir=cache)
    # formation settings do not enter the chain's hash: installing for them is fine
    assert install_chain(snapshot, target, run.with_overrides({"formation.top_k": 10}))


def test_install_replaces_a_stale_chain(run: RunConfig, pushed: tuple[Path, str], tmp_path: Path) -> None:
    cache, commit = pushed
    stale = tmp_path / "run" / paths.CHAIN_DIR / "step999"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("old")
    load_hub_chain(REPO_ID, commit, tmp_path / "run", run, cache_dir=cache)
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "run" / paths.CHAIN_DIR).iterdir()) == sorted(
        [paths.MANIFEST, *(f"step{s}" for s in run.sae_steps)]
    )


def _copy(staged: Path, dest: Path) -> Path:
    shutil.copytree(staged, dest)
    return dest


def test_verify_chain_files_checks_the_index_itself(run: RunConfig, staged: Path, tmp_path: Path) -> None:
    good = _copy(staged, tmp_path / "good")
    index = verify_chain_files(good)
    assert index == json.loads((good / INDEX_FILE).read_text()) and run_config_of(good) == run
    missing = _copy(staged, tmp_path / "missing")
    (missing / INDEX_FILE).unlink()
    with pytest.raises(ChainIntegrityError, match=f"has no {INDEX_FILE}"):
        verify_chain_files(missing)
    cases = {
        "version": ({**index, "saetrack_layout_version": 99}, r"layout version 99; this saetrack reads version 1"),
        "unsafe": ({**index, "files": {**index["files"], "../escape.txt": "0" * 64}}, "unsafe path '../escape.txt'"),
        "no-manifest": (
            {**index, "files": {k: v for k, v in index["files"].items() if k != paths.MANIFEST}},
            f"does not list the chain {paths.MANIFEST}",
        ),
        "no-link-files": (
            {**index, "files": {k: v for k, v in index["files"].items() if not k.endswith("/cfg.json")}},
            "lists no SAELens files for link 'step0'",
        ),
    }
    for name, (bad_index, match) in cases.items():
        folder = _copy(staged, tmp_path / name)
        (folder / INDEX_FILE).write_text(json.dumps(bad_index))
        with pytest.raises(ChainIntegrityError, match=match):
            verify_chain_files(folder)
