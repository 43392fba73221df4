"""Staging and pushing a chain (offline: a fake HfApi): the upload layout, overwrite protection, the token."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file

from saetrack import paths
from saetrack.config import RunConfig
from saetrack.hub.layout import (
    CARD_FILE,
    INDEX_FILE,
    LAYOUT_VERSION,
    RemoteFilesExistError,
)
from saetrack.hub.pull import load_hub_chain
from saetrack.hub.push import push_chain, stage_chain
from saetrack.stages.chain import chain_config_hash, load_chain
from tests.hub.fakes import REPO_ID, SECRET, FakeHfApi, fresh_cache, original_chain_bytes, tree_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# Staging: the upload layout
# ----------------------------------------------------------------------------------------------


def test_stage_copies_chain_bit_for_bit(run: RunConfig, chain_run_dir: Path, staged: Path) -> None:
    original = original_chain_bytes(chain_run_dir, run)
    uploaded = tree_bytes(staged)
    assert set(uploaded) == set(original) | {CARD_FILE, INDEX_FILE}
    for rel, data in original.items():
        assert uploaded[rel] == data, rel
    index = json.loads(uploaded[INDEX_FILE])
    assert index["saetrack_layout_version"] == LAYOUT_VERSION
    assert index["sae_ids"] == [f"step{s}" for s in run.sae_steps]
    assert index["steps"] == list(run.sae_steps)
    assert index["run_config"] == run.to_dict()
    assert index["chain_config_hash"] == chain_config_hash(run)
    assert set(index["files"]) == set(uploaded) - {INDEX_FILE}
    assert all(
        index["files"][rel] == hashlib.sha256(data).hexdigest()
        for rel, data in uploaded.items()
        if rel in index["files"]
    )
    with pytest.raises(FileExistsError, match="not empty"):
        stage_chain(chain_run_dir, run, staged)


def test_staged_links_load_with_sae_lens_and_encode_alike(run: RunConfig, chain_run_dir: Path, staged: Path) -> None:
    from sae_lens import SAE

    generator = torch.Generator().manual_seed(0)
    for step, folder in load_chain(chain_run_dir, run).items():
        original = SAE.load_from_disk(folder)
        copy = SAE.load_from_disk(staged / f"step{step}")
        x = torch.randn(64, original.cfg.d_in, generator=generator) * 3
        with torch.no_grad():
            assert torch.equal(copy.encode(x), original.encode(x)), step
            assert torch.equal(copy.decode(copy.encode(x)), original.decode(original.encode(x))), step
        for name, tensor in original.state_dict().items():
            assert torch.equal(copy.state_dict()[name], tensor), (step, name)
        assert copy.cfg.metadata.hook_name == run.cache.hook_name


def test_sae_lens_from_pretrained_offline_from_hub_cache(
    run: RunConfig, chain_run_dir: Path, staged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SAE.from_pretrained(repo_id, "step{N}")`` with the real huggingface_hub code, offline, from the HF cache.

    SAELens treats a release not in its registry as the Hub repo id and ``sae_id`` as the folder in it
    (``get_repo_id_and_folder_name``), then ``hf_hub_download``s ``{sae_id}/cfg.json``, the weights and the
    sparsity at the default revision (``main``) into the default cache ``constants.HF_HUB_CACHE`` — read at call
    time, so patching it (and the env vars, for anything reading them later) points SAELens at the test cache.
    """
    from sae_lens import SAE

    cache, commit = fresh_cache(tmp_path, staged)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    generator = torch.Generator().manual_seed(1)
    folders = load_chain(chain_run_dir, run)
    for step in (run.sae_steps[0], run.sae_steps[-1]):
        sae, cfg, log_sparsity = SAE.from_pretrained_with_cfg_and_sparsity(REPO_ID, f"step{step}")
        original = SAE.load_from_disk(folders[step])
        x = torch.randn(32, original.cfg.d_in, generator=generator)
        with torch.no_grad():
            assert torch.equal(sae.encode(x), original.encode(x))
        assert torch.equal(sae.W_dec, original.W_dec)
        assert log_sparsity is not None and torch.equal(
            log_sparsity, load_file(folders[step] / "sparsity.safetensors")["sparsity"]
        )
        assert cfg["metadata"]["hook_name"] == run.cache.hook_name
        assert cfg["metadata"]["model_revision"] == f"step{step}"  # each link names its own checkpoint
    assert isinstance(SAE.from_pretrained(REPO_ID, f"step{run.sae_steps[1]}"), SAE)
    assert (cache / "models--TestOrg--saetrack-smoke-chain" / "snapshots" / commit).is_dir()


# ----------------------------------------------------------------------------------------------
# push_chain against a fake api: overwrite protection, token handling
# ----------------------------------------------------------------------------------------------


def test_push_refuses_to_overwrite_unless_asked(run: RunConfig, chain_run_dir: Path, staged: Path) -> None:
    clashing = [".gitattributes", "README.md", f"step{run.sae_steps[1]}/cfg.json", "notes.txt"]
    api = FakeHfApi(existing=clashing)
    with pytest.raises(
        RemoteFilesExistError, match=r"README\.md, step\d+/cfg\.json\..*overwrite=True.*--hub-overwrite"
    ) as caught:
        push_chain(chain_run_dir, run, REPO_ID, api=api)
    assert "notes.txt" not in str(caught.value) and ".gitattributes" not in str(caught.value)
    assert "upload_folder" not in api.names()
    commit = push_chain(chain_run_dir, run, REPO_ID, api=api, overwrite=True, private=False, commit_message="update")
    assert commit == api.commit and len(commit) == 40
    upload = api.kwargs("upload_folder")
    assert upload["repo_id"] == REPO_ID and upload["commit_message"] == "update" and upload["revision"] is None
    assert api.kwargs("create_repo") == {
        "repo_id": REPO_ID,
        "private": False,
        "exist_ok": True,
        "repo_type": "model",
        "token": None,
    }
    assert api.uploaded == tree_bytes(staged)  # the upload is exactly the staged folder
    assert not Path(upload["folder_path"]).exists()  # the temporary staging folder is gone


def test_push_to_branch_and_validation(run: RunConfig, chain_run_dir: Path) -> None:
    api = FakeHfApi()
    push_chain(chain_run_dir, run, REPO_ID, api=api, revision="missing-branch")
    assert api.names() == ["create_repo", "create_branch", "list_repo_files", "upload_folder"]
    assert api.kwargs("create_branch")["branch"] == "missing-branch"
    assert api.kwargs("upload_folder")["revision"] == "missing-branch"
    assert api.kwargs("create_repo")["private"] is True
    assert "saetrack chain smoke" in api.kwargs("upload_folder")["commit_message"]
    for bad in ("noslash", "a/b/c", "owner/", "/name", "own er/name", "owner/na--me"):
        with pytest.raises(ValueError, match="owner/name"):
            push_chain(chain_run_dir, run, bad, api=FakeHfApi())
    with pytest.raises(ValueError, match="branch name"):
        push_chain(chain_run_dir, run, REPO_ID, api=FakeHfApi(), revision="a" * 40)


def test_push_never_leaks_the_token(
    run: RunConfig,
    chain_run_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    # token=None: huggingface_hub resolves HF_TOKEN itself; saetrack never reads it
    api = FakeHfApi()
    push_chain(chain_run_dir, run, REPO_ID, api=api)
    assert all(kw.get("token") is None for _, kw in api.calls)
    # an explicit token is passed through to every Hub call, and nowhere else
    api = FakeHfApi()
    push_chain(chain_run_dir, run, REPO_ID, api=api, token=SECRET)
    assert all(kw.get("token") == SECRET for _, kw in api.calls)
    refused = FakeHfApi(existing=["README.md"])
    with pytest.raises(RemoteFilesExistError) as caught:
        push_chain(chain_run_dir, run, REPO_ID, api=refused, token=SECRET)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    for rel, data in api.uploaded.items():
        assert SECRET.encode() not in data, rel
    assert "hf_" not in api.uploaded[CARD_FILE].decode()
    out, err = capsys.readouterr()
    assert SECRET not in out and SECRET not in err
    assert caplog.records and all(SECRET not in record.getMessage() for record in caplog.records)
    assert SECRET not in caplog.text


# ----------------------------------------------------------------------------------------------
# Live round trip (only with a test repo, a token and network)
# ----------------------------------------------------------------------------------------------


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def live_repo(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    repo = os.environ.get("SAETRACK_HUB_TEST_REPO")
    if not repo:
        pytest.skip("set SAETRACK_HUB_TEST_REPO=owner/name (and HF_TOKEN or `hf auth login`) to run the live test")
    if not (os.environ.get("HF_TOKEN") or huggingface_hub.get_token()):
        pytest.skip("no Hugging Face token (HF_TOKEN or a stored login) for the live test")
    if not _hub_reachable():
        pytest.skip("huggingface.co is not reachable")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield repo


@pytest.mark.network
def test_live_push_and_load_round_trip(run: RunConfig, chain_run_dir: Path, live_repo: str, tmp_path: Path) -> None:
    commit = push_chain(chain_run_dir, run, live_repo, overwrite=True, private=True)
    folders = load_hub_chain(live_repo, commit, tmp_path / "run", run, cache_dir=tmp_path / "cache")
    assert list(folders) == list(run.sae_steps)
    assert tree_bytes(tmp_path / "run" / paths.CHAIN_DIR) == original_chain_bytes(chain_run_dir, run)
