"""The crosscoder pushed beside a chain (offline: a fake HfApi and a hub cache): staging, the card, the round trip."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saetrack import paths, store
from saetrack.config import RunConfig
from saetrack.crosscoder.io import save_crosscoder
from saetrack.crosscoder.model import Crosscoder, CrosscoderShape
from saetrack.hub.crosscoder import (
    CROSSCODER_MODEL_DIR,
    download_crosscoder,
    install_crosscoder,
    load_hub_crosscoder,
    stage_crosscoder,
    verify_crosscoder_files,
)
from saetrack.hub.layout import CARD_FILE, CROSSCODER_FOLDER, INDEX_FILE, ChainIntegrityError
from saetrack.hub.pull import load_hub_chain
from saetrack.hub.push import push_chain, stage_chain
from tests.hub.fakes import REPO_ID, FakeHfApi, build_hub_cache, original_chain_bytes, tree_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

D_SAE = 48
SCALES = np.array([0.5, 1.25, 2.0, 4.5, 8.0, 9.5, 11.0, 12.5, 14.0, 15.5], dtype=np.float32)
CONFIG_HASH = "c" * 16


@pytest.fixture(scope="module")
def crosscoder_run_dir(run: RunConfig, chain_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke chain plus a small seeded crosscoder saved as notebook 06 would (format, manifest, loss curve)."""
    work = tmp_path_factory.mktemp("cc_run")
    shutil.copytree(chain_run_dir / paths.CHAIN_DIR, work / paths.CHAIN_DIR)
    (work / paths.CACHE_DIR).mkdir()
    shutil.copyfile(chain_run_dir / paths.CACHE_DIR / paths.MANIFEST, work / paths.CACHE_DIR / paths.MANIFEST)
    steps = run.crosscoder_steps
    shape = CrosscoderShape(n_snapshots=len(steps), d_model=run.suite.d_model, d_sae=D_SAE)
    model = Crosscoder(shape, generator=torch.Generator().manual_seed(7))
    folder = work / paths.CROSSCODER_DIR / CROSSCODER_MODEL_DIR
    metadata = {"hook_name": run.cache.hook_name, "layer": run.cache.layer, "model": "suite", "preset": run.preset}
    files = save_crosscoder(model, folder, snapshot_steps=steps, input_scale=SCALES[: len(steps)], metadata=metadata)
    store.write_json(folder / "curve.json", {"step": [0, 1], "mse": [2.0, 1.0]})
    store.write_manifest(folder, stage="crosscoder-model", config=metadata, config_hash=CONFIG_HASH, files=files)
    torch.save(model.state_dict(), work / "original.pt")
    return work


@pytest.fixture(scope="module")
def cc_pushed(run: RunConfig, crosscoder_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The chain and crosscoder pushed through ``push_chain`` (fake api) into a hub cache: (cache, commit)."""
    api = FakeHfApi()
    commit = push_chain(crosscoder_run_dir, run, REPO_ID, api=api)
    cache = tmp_path_factory.mktemp("cc_hf_cache")
    build_hub_cache(cache, REPO_ID, api.uploaded, commit=commit)
    return cache, commit


def _model_folder(run_dir: Path) -> Path:
    return run_dir / paths.CROSSCODER_DIR / CROSSCODER_MODEL_DIR


def test_stage_uploads_the_crosscoder_hashed_in_the_index(
    run: RunConfig, chain_run_dir: Path, crosscoder_run_dir: Path, tmp_path: Path
) -> None:
    staged = stage_chain(crosscoder_run_dir, run, tmp_path / "upload", repo_id=REPO_ID)
    uploaded = tree_bytes(staged)
    folder = _model_folder(crosscoder_run_dir)
    own = {f"{CROSSCODER_FOLDER}/{p.name}": p.read_bytes() for p in folder.iterdir()}
    assert set(own) == {
        f"crosscoder/{n}" for n in ("crosscoder.safetensors", "cfg.json", "curve.json", "manifest.json")
    }
    assert set(uploaded) == set(original_chain_bytes(chain_run_dir, run)) | set(own) | {CARD_FILE, INDEX_FILE}
    assert all(uploaded[rel] == data for rel, data in own.items())
    index = json.loads(uploaded[INDEX_FILE])
    assert index["crosscoder"] == {
        "folder": "crosscoder",
        "config_hash": CONFIG_HASH,
        "snapshot_steps": list(run.crosscoder_steps),
        "n_snapshots": len(run.crosscoder_steps),
        "d_model": 32,
        "d_sae": D_SAE,
        "hook_name": run.cache.hook_name,
    }
    for rel, data in own.items():
        assert index["files"][rel] == hashlib.sha256(data).hexdigest()
    card = uploaded[CARD_FILE].decode()
    assert "## Cross-snapshot crosscoder" in card
    assert f"- snapshots: {len(run.crosscoder_steps)} checkpoint steps, 0, " in card
    assert f"d_sae {D_SAE} features" in card and "saetrack.crosscoder.io.load_crosscoder(folder)" in card
    assert f'load_hub_crosscoder("{REPO_ID}", revision, "crosscoder-model")' in card


def test_a_run_without_crosscoder_keeps_the_chain_layout(chain_run_dir: Path, staged: Path, tmp_path: Path) -> None:
    assert stage_crosscoder(chain_run_dir, tmp_path / "dest") is None and not (tmp_path / "dest").exists()
    index = json.loads((staged / INDEX_FILE).read_text())
    assert "crosscoder" not in index and not (staged / CROSSCODER_FOLDER).exists()
    assert "crosscoder" not in (staged / CARD_FILE).read_text().lower()
    with pytest.raises(FileNotFoundError, match="holds no crosscoder"):
        verify_crosscoder_files(staged)


def test_push_and_load_back_gives_identical_tensors(
    run: RunConfig, crosscoder_run_dir: Path, cc_pushed: tuple[Path, str], tmp_path: Path
) -> None:
    cache, commit = cc_pushed
    saved = load_hub_crosscoder(REPO_ID, commit, tmp_path / "cc", cache_dir=cache)
    original = torch.load(crosscoder_run_dir / "original.pt")
    state = saved.model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in original)
    assert saved.snapshot_steps == run.crosscoder_steps
    np.testing.assert_array_equal(saved.input_scale, SCALES[: len(run.crosscoder_steps)].astype(np.float64))
    assert tree_bytes(tmp_path / "cc") == tree_bytes(_model_folder(crosscoder_run_dir))
    # the chain in the same upload still installs (its verification also covers the crosscoder's files)
    assert list(load_hub_chain(REPO_ID, commit, tmp_path / "run", run, cache_dir=cache)) == list(run.sae_steps)
    assert not (tmp_path / "run" / paths.CHAIN_DIR / CROSSCODER_FOLDER).exists()
    with pytest.raises(ValueError, match="not a commit hash"):
        load_hub_crosscoder(REPO_ID, "main", tmp_path / "cc2", cache_dir=cache)


def test_a_tampered_crosscoder_is_refused(run: RunConfig, crosscoder_run_dir: Path, tmp_path: Path) -> None:
    api = FakeHfApi()
    commit = push_chain(crosscoder_run_dir, run, REPO_ID, api=api)
    cache = tmp_path / "hf-cache"
    build_hub_cache(cache, REPO_ID, api.uploaded, commit=commit)
    snapshot = cache / "models--TestOrg--saetrack-smoke-chain" / "snapshots" / commit
    blob = (snapshot / CROSSCODER_FOLDER / "crosscoder.safetensors").resolve()
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 0x01]))  # one flipped bit in the last tensor
    with pytest.raises(
        ChainIntegrityError, match=r"crosscoder/crosscoder\.safetensors of the pushed crosscoder is corrupt"
    ):
        load_hub_crosscoder(REPO_ID, commit, tmp_path / "cc", cache_dir=cache)
    assert not (tmp_path / "cc").exists()
    blob.write_bytes(good)
    assert download_crosscoder(REPO_ID, commit, cache_dir=cache) == snapshot
    (snapshot / CROSSCODER_FOLDER / "cfg.json").unlink()
    with pytest.raises(ChainIntegrityError, match=r"crosscoder/cfg\.json of the pushed crosscoder is missing"):
        install_crosscoder(snapshot, tmp_path / "cc")
    assert not (tmp_path / "cc").exists()


def test_install_replaces_dest_and_index_must_list_the_weights(
    run: RunConfig, cc_pushed: tuple[Path, str], tmp_path: Path
) -> None:
    cache, commit = cc_pushed
    snapshot = download_crosscoder(REPO_ID, commit, cache_dir=cache)
    dest = tmp_path / "cc"
    dest.mkdir()
    (dest / "junk.txt").write_text("old")
    saved = install_crosscoder(snapshot, dest)
    assert saved.model.shape.d_sae == D_SAE and not (dest / "junk.txt").exists()
    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    index = json.loads((copy / INDEX_FILE).read_text())
    index["files"] = {k: v for k, v in index["files"].items() if k != "crosscoder/crosscoder.safetensors"}
    (copy / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ChainIntegrityError, match=r"lists no crosscoder/crosscoder\.safetensors"):
        verify_crosscoder_files(copy)


def test_a_crosscoder_changed_after_training_is_not_pushed(
    run: RunConfig, crosscoder_run_dir: Path, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    shutil.copytree(crosscoder_run_dir, work)
    with open(_model_folder(work) / "cfg.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(store.StaleArtifactError, match=r"the crosscoder cannot be pushed.*cfg\.json"):
        stage_chain(work, run, tmp_path / "upload")
