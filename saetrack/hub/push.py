"""Sharing SAE-Track chains on the Hugging Face Hub: push a finished chain, load it back pinned and hash-checked.

A pushed chain is the run's ``chain/`` folder as it is — the chain ``manifest.json`` and one ``step{N}/`` folder per
link in SAELens format (``cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``, the link's
``manifest.json``) — plus a model card (``README.md``) and :data:`INDEX_FILE` (``saetrack_chain.json``: the full run
config, the layout version, the SAE ids and the SHA-256 of every other file of the upload). A run whose notebook 06
has trained its cross-snapshot crosscoder also uploads it under ``crosscoder/`` (:mod:`saetrack.hub.crosscoder`).

Because every link sits in a folder named by its SAE id at the repo root, SAELens loads a link straight from the
repo: ``SAE.from_pretrained(repo_id, "step{N}")`` — a ``release`` that is not in SAELens' registry
(``pretrained_saes.yaml``) is taken as the Hub repo id and ``sae_id`` as the folder holding ``cfg.json`` and the
weights (``get_repo_id_and_folder_name`` and ``sae_lens_huggingface_loader`` in ``sae_lens`` 6.54). SAELens has no
revision argument, so it always reads the repo's ``main`` branch; saetrack itself only loads a chain pinned to a
commit hash (:func:`download_chain`) and checks every file's hash before installing it into a run directory
(:func:`install_chain`), where notebooks 03-05 use it exactly as if notebook 02 had trained it.

Tokens: passed through to ``huggingface_hub`` as given (``None`` lets it use ``HF_TOKEN`` or the stored login) and
never printed, logged, written to a file or put into an error message.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from saetrack import __version__, paths, store
from saetrack.config.run import RunConfig
from saetrack.hub.card import model_card, sae_lens_version
from saetrack.hub.crosscoder import stage_crosscoder
from saetrack.hub.layout import (
    CARD_FILE,
    COMMIT_HASH,
    INDEX_FILE,
    LAYOUT_VERSION,
    RemoteFilesExistError,
    validate_repo_id,
)
from saetrack.stages.chain import chain_config_hash, load_chain

__all__ = [
    "push_chain",
    "stage_chain",
]


log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Staging and pushing
# ----------------------------------------------------------------------------------------------


def _link_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def stage_chain(run_dir: Path, run: RunConfig, dest: Path, *, repo_id: str | None = None) -> Path:
    """Write the exact folder a push uploads into ``dest`` (new or empty) and return it.

    The finished chain of ``run`` in ``run_dir/chain`` (checked with :func:`~saetrack.chain.load_chain`; every
    link's files checked against its manifest's hashes) is copied byte for byte — chain ``manifest.json`` and every
    ``step{N}/`` with all its files — plus :data:`CARD_FILE` (:func:`model_card`; ``repo_id`` fills its load
    snippets) and :data:`INDEX_FILE`; and the run's finished crosscoder, if any, under ``crosscoder/``
    (:func:`~saetrack.hub.crosscoder.stage_crosscoder`).
    """
    run_dir, dest = Path(run_dir), Path(dest)
    folders = load_chain(run_dir, run)
    chain_dir = run_dir / paths.CHAIN_DIR
    manifest = store.read_manifest(chain_dir) or {}
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"staging folder {dest} is not empty; stage into a new or empty folder.")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chain_dir / paths.MANIFEST, dest / paths.MANIFEST)
    sae_ids = []
    for step, folder in folders.items():
        link = store.read_manifest(folder)
        if link is None or link.get("config_hash") != manifest.get("config_hash"):
            raise store.StaleArtifactError(
                f"chain link {folder} is unfinished or from another config; rerun notebook 02."
            )
        for name, digest in link.get("files", {}).items():
            if not (folder / name).is_file() or store.file_sha256(folder / name) != digest:
                raise store.StaleArtifactError(
                    f"chain link file {folder / name} is missing or differs from its manifest's SHA-256; "
                    "rerun notebook 02 (force=True) before pushing."
                )
        sae_id = paths.step_dir_name(step)
        (dest / sae_id).mkdir()
        for file in _link_files(folder):
            shutil.copyfile(file, dest / sae_id / file.name)
        sae_ids.append(sae_id)
    cache_manifest_path = run_dir / paths.CACHE_DIR / paths.MANIFEST
    cache_manifest = store.read_json(cache_manifest_path) if cache_manifest_path.is_file() else None
    first_cfg = dest / sae_ids[0] / "cfg.json"
    sae_cfg = json.loads(first_cfg.read_text()) if first_cfg.is_file() else None
    crosscoder = stage_crosscoder(run_dir, dest)
    card = model_card(
        run, manifest, repo_id=repo_id, cache_manifest=cache_manifest, sae_cfg=sae_cfg, crosscoder=crosscoder
    )
    (dest / CARD_FILE).write_text(card, encoding="utf-8")
    files = {
        p.relative_to(dest).as_posix(): store.file_sha256(p)
        for p in sorted(dest.rglob("*"))
        if p.is_file() and p.relative_to(dest).as_posix() != INDEX_FILE
    }
    index = {
        "saetrack_layout_version": LAYOUT_VERSION,
        "saetrack_version": __version__,
        "sae_lens_version": sae_lens_version(),
        "preset": run.preset,
        "hook_name": run.cache.hook_name,
        "chain_config_hash": manifest.get("config_hash"),
        "steps": [int(s) for s in folders],
        "sae_ids": sae_ids,
        "run_config": run.to_dict(),
        **({"crosscoder": crosscoder} if crosscoder else {}),
        "files": files,
    }
    store.write_json(dest / INDEX_FILE, index)
    return dest


def _remote_files(api: Any, repo_id: str, revision: str | None, token: str | None) -> list[str]:
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return list(api.list_repo_files(repo_id, revision=revision, repo_type="model", token=token))
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        return []


def push_chain(
    run_dir: Path,
    run: RunConfig,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = True,
    overwrite: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any | None = None,
) -> str:
    """Push the finished chain of ``run`` to the Hub model repo ``repo_id`` in one commit; return its commit hash.

    The folder :func:`stage_chain` writes is uploaded with ``HfApi.upload_folder`` to branch ``revision``
    (default ``main``; created if missing). The repo is created if missing (``private`` applies then only). If any
    file to be uploaded already exists in the repo at that revision, nothing is uploaded and
    :class:`RemoteFilesExistError` lists the clashing paths, unless ``overwrite=True`` (files not in this upload
    are left untouched). ``token`` goes to ``huggingface_hub`` as given (``None``: ``HF_TOKEN`` or the stored
    login) and is never printed, logged or stored. ``api`` replaces ``huggingface_hub.HfApi()`` (tests).
    Load the result with :func:`load_hub_chain` and the returned hash.
    """
    validate_repo_id(repo_id)
    if revision is not None and (not revision or COMMIT_HASH.match(revision.lower())):
        raise ValueError(f"revision = {revision!r} is invalid: push to a branch name (or None for 'main').")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="saetrack-hub-") as tmp:
        staged = stage_chain(Path(run_dir), run, Path(tmp) / "chain", repo_id=repo_id)
        uploads = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
        log.info(
            "pushing %d files (%d links) of preset %s to %s", len(uploads), len(run.sae_steps), run.preset, repo_id
        )
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model", token=token)
        clashes = sorted(set(uploads) & set(_remote_files(api, repo_id, revision, token)))
        if clashes and not overwrite:
            shown = ", ".join(clashes[:20]) + (f", ... ({len(clashes)} in all)" if len(clashes) > 20 else "")
            raise RemoteFilesExistError(
                f"{repo_id} at revision {revision or 'main'!r} already holds files this push would replace: {shown}. "
                "Nothing was uploaded. Pass overwrite=True (run_all.py: --hub-overwrite) to replace them, or push "
                "to another repo or branch."
            )
        message = commit_message or (
            f"saetrack chain {run.preset}: {len(run.sae_steps)} SAEs at {run.cache.hook_name} "
            f"(config {chain_config_hash(run)})"
        )
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(staged),
            revision=revision,
            repo_type="model",
            commit_message=message,
            token=token,
        )
    commit = str(getattr(info, "oid", "") or "")
    if not COMMIT_HASH.match(commit):
        raise RuntimeError(f"the upload to {repo_id} returned no commit hash (got {commit!r}).")
    log.info("pushed %s at commit %s", repo_id, commit)
    return commit


# ----------------------------------------------------------------------------------------------
# Downloading and installing
# ----------------------------------------------------------------------------------------------
