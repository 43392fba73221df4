"""Pushing SAE-Track chains to the Hub and loading them back (offline: a fake HfApi and the hub-cache layout).

The smoke chain is trained once per module into a copy of the session's smoke run. "Pushes" go to a fake
``HfApi`` that keeps the uploaded bytes; they are laid out as the Hugging Face cache does after a real download
(``models--owner--name/{refs,snapshots,blobs}``) and read back with the real ``huggingface_hub`` code in offline
mode. One live test pushes to a real repo, only when ``SAETRACK_HUB_TEST_REPO`` and a token are set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import RevisionNotFoundError
from safetensors.torch import load_file

from saetrack import paths, store
from saetrack.config import RunConfig, get_preset
from saetrack.hub.card import model_card
from saetrack.hub.layout import (
    CARD_FILE,
    INDEX_FILE,
    LAYOUT_VERSION,
    ChainConfigMismatchError,
    ChainIntegrityError,
    RemoteFilesExistError,
)
from saetrack.hub.pull import download_chain, install_chain, load_hub_chain, run_config_of
from saetrack.hub.push import push_chain, stage_chain
from saetrack.sae.weights import SAEWeights
from saetrack.stages.chain import chain_config_hash, load_chain, read_link_manifests, train_chain

REPO_ID = "TestOrg/saetrack-smoke-chain"
SECRET = "hf_saetrackTESTsecret"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hub: huggingface_hub reads ``constants.HF_HUB_OFFLINE`` at call time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ----------------------------------------------------------------------------------------------
# Fixtures and builders
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run() -> RunConfig:
    return get_preset("smoke")


@pytest.fixture(scope="module")
def chain_run_dir(
    run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_thread: None
) -> Path:
    """A copy of the smoke run (corpus, model, cache) with its chain trained once."""
    work = tmp_path_factory.mktemp("hub_run")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    train_chain(run, work, progress=False)
    return work


@pytest.fixture(scope="module")
def staged(run: RunConfig, chain_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_chain(chain_run_dir, run, tmp_path_factory.mktemp("staged") / "upload", repo_id=REPO_ID)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Relative POSIX path -> bytes of every file under ``folder`` (symlinks followed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def build_hub_cache(
    cache_dir: Path, repo_id: str, files: dict[str, bytes], revision: str = "main", commit: str | None = None
) -> str:
    """Lay ``files`` out as the HF hub cache holds a downloaded commit of ``repo_id``; return the commit hash.

    ``refs/<revision>`` holds the commit, ``snapshots/<commit>/<path>`` symlinks into ``blobs/`` — what
    ``snapshot_download`` leaves behind after a real download (also for files in sub-folders).
    """
    storage = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "blobs").mkdir(exist_ok=True)
    if commit is None:
        digest = hashlib.sha1(repo_id.encode())
        for rel in sorted(files):
            digest.update(rel.encode() + b"\0" + files[rel])
        commit = digest.hexdigest()
    (storage / "refs" / revision).write_text(commit)
    snapshot = storage / "snapshots" / commit
    for rel, data in sorted(files.items()):
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return commit


class FakeCommitInfo:
    def __init__(self, oid: str) -> None:
        self.oid = oid


class FakeHfApi:
    """Records calls; keeps the files of each upload; ``existing`` simulates files already in the repo."""

    def __init__(self, existing: list[str] | None = None) -> None:
        self.existing = list(existing or [".gitattributes"])
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, bytes] = {}
        self.commit = ""

    def create_repo(self, repo_id: str, **kw: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id: str, **kw: Any) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def list_repo_files(self, repo_id: str, **kw: Any) -> list[str]:
        self.calls.append(("list_repo_files", {"repo_id": repo_id, **kw}))
        if kw.get("revision") == "missing-branch":
            response = SimpleNamespace(headers={}, request=None, status_code=404)
            raise RevisionNotFoundError("no such revision", response=response)  # type: ignore[arg-type]
        return list(self.existing)

    def upload_folder(self, **kw: Any) -> FakeCommitInfo:
        self.calls.append(("upload_folder", kw))
        self.uploaded = tree_bytes(Path(kw["folder_path"]))
        self.commit = hashlib.sha1(b"".join(self.uploaded.values())).hexdigest()
        return FakeCommitInfo(self.commit)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def kwargs(self, name: str) -> dict[str, Any]:
        """Keyword arguments of the latest call of ``name``."""
        return [kw for call, kw in self.calls if call == name][-1]


@pytest.fixture(scope="module")
def pushed(run: RunConfig, chain_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The chain pushed through ``push_chain`` (fake api), in a hub cache with ``refs/main``: (cache, commit)."""
    api = FakeHfApi()
    commit = push_chain(chain_run_dir, run, REPO_ID, api=api)
    assert commit == api.commit
    cache = tmp_path_factory.mktemp("hf_cache")
    build_hub_cache(cache, REPO_ID, api.uploaded, commit=commit)
    return cache, commit


def fresh_cache(tmp_path: Path, staged: Path) -> tuple[Path, str]:
    cache = tmp_path / "hf-cache"
    return cache, build_hub_cache(cache, REPO_ID, tree_bytes(staged))


def original_chain_bytes(chain_run_dir: Path, run: RunConfig) -> dict[str, bytes]:
    """Bytes of the chain as notebook 02 wrote it: chain manifest and every link's files."""
    chain_dir = chain_run_dir / paths.CHAIN_DIR
    out = {paths.MANIFEST: (chain_dir / paths.MANIFEST).read_bytes()}
    for step, folder in load_chain(chain_run_dir, run).items():
        for file in sorted(folder.iterdir()):
            if file.is_file():
                out[f"step{step}/{file.name}"] = file.read_bytes()
    return out


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
# Model card
# ----------------------------------------------------------------------------------------------


def test_model_card_of_the_smoke_chain(run: RunConfig, chain_run_dir: Path, staged: Path) -> None:
    card = (staged / CARD_FILE).read_text()
    assert card.startswith("---\nlibrary_name: saelens\ntags:\n")
    front = card.split("---")[1]
    assert "- sae-track" in front and "- sparse-autoencoder" in front
    assert run.cache.hook_name in card and "preset `smoke`" in card and "locally trained nano suite" in card
    manifest = store.read_manifest(chain_run_dir / paths.CHAIN_DIR)
    header = "| link | step | explained variance | L0 | dead % | dense % | CE recovered |"
    table = card.split(header)[1].split("\n\n")[0].strip().splitlines()[1:]  # rows after the alignment line
    assert len(table) == len(run.sae_steps) == len(manifest["links"])
    for row, link in zip(table, manifest["links"], strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == link["step"]
        assert cells[2] == f"{link['metrics']['explained_variance']:.3f}"
        assert cells[3] == f"{link['metrics']['l0']:.1f}"
    assert f'SAE.from_pretrained("{REPO_ID}", "step{run.sae_steps[0]}")' in card
    assert f'download_chain("{REPO_ID}", revision)' in card and "install_chain" in card
    assert f"{run.chain.first_tokens:,} tokens" in card and f"{run.chain.link_tokens:,} tokens" in card
    assert "`l1_coefficient`" in card and "`expansion_factor`" in card


def test_model_card_of_a_hub_model_lists_resolved_commits() -> None:
    run = get_preset("pythia-160m-l4")
    steps = run.sae_steps[:3]
    manifest = {
        "config_hash": "abc",
        "steps": list(steps),
        "links": [
            {
                "position": i,
                "step": s,
                "metrics": {
                    "explained_variance": 0.9,
                    "l0": 30.0,
                    "dead_fraction": 0.01,
                    "dense_fraction": 0.0,
                    "ce_recovered": float("nan"),
                },
            }
            for i, s in enumerate(steps)
        ],
    }
    commits = {str(s): f"{i:040x}" for i, s in enumerate(steps)}
    card = model_card(
        run, manifest, repo_id="me/pythia-chain", cache_manifest={"config": {"model": {"resolved_commits": commits}}}
    )
    assert "base_model: EleutherAI/pythia-160m-deduped" in card
    assert "`step{step}`" in card
    for step in steps:
        assert f"| {step} | `step{step}` | `{commits[str(step)]}` |" in card
    assert card.count("| n/a |") == len(steps)  # NaN CE recovered
    assert "| 1.0 | 0.0 |" in card  # dead %, dense %
    assert 'SAE.from_pretrained("me/pythia-chain", "step0")' in card
    assert "not recorded" in model_card(run, manifest)


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
