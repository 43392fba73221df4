"""Downloading a chain from the Hub at a pinned commit, verifying its hashes and installing it as a run's chain."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saetrack import paths, store
from saetrack.config.run import RunConfig
from saetrack.hub.layout import (
    HASHED_SECTIONS,
    INDEX_FILE,
    ChainConfigMismatchError,
    ChainIntegrityError,
    check_commit,
    check_indexed_files,
    read_index,
    safe_relative,
    validate_repo_id,
)
from saetrack.stages.chain import chain_config_hash, load_chain

__all__ = [
    "download_chain",
    "install_chain",
    "load_hub_chain",
    "run_config_of",
    "verify_chain_files",
]


log = logging.getLogger(__name__)


def verify_chain_files(folder: Path) -> dict[str, Any]:
    """Check every file listed in ``folder``'s :data:`INDEX_FILE` against its SHA-256; return the index.

    A missing file, a changed file or an unsafe path raises :class:`ChainIntegrityError` naming the file.
    """
    folder = Path(folder)
    index = read_index(folder)
    files = index.get("files") or {}
    for sae_id in index.get("sae_ids", []):
        if f"{sae_id}/cfg.json" not in files or f"{sae_id}/sae_weights.safetensors" not in files:
            raise ChainIntegrityError(f"{INDEX_FILE} in {folder} lists no SAELens files for link {sae_id!r}.")
    if paths.MANIFEST not in files:
        raise ChainIntegrityError(f"{INDEX_FILE} in {folder} does not list the chain {paths.MANIFEST}.")
    check_indexed_files(folder, files, "chain")
    return index


def download_chain(
    repo_id: str,
    revision: str,
    *,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> Path:
    """Download (or reuse from the HF cache) the chain pushed to ``repo_id`` at commit ``revision``; return its folder.

    ``revision`` must be a 40-hex commit hash (what :func:`push_chain` returns): a branch name raises
    ``ValueError``, since a branch can move. Every file is checked against the SHA-256 in :data:`INDEX_FILE`
    (:func:`verify_chain_files`). With ``HF_HUB_OFFLINE=1`` only the cache is used.
    """
    validate_repo_id(repo_id)
    commit = check_commit(revision)
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, revision=commit, cache_dir=cache_dir, token=token, repo_type="model"))
    verify_chain_files(folder)
    return folder


def run_config_of(snapshot: Path) -> RunConfig:
    """The full :class:`~saetrack.config.RunConfig` a pushed chain was trained with (to rebuild the exact run)."""
    return RunConfig.from_dict(read_index(Path(snapshot))["run_config"])


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _config_differences(pushed: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    flat_pushed = _flatten({k: pushed.get(k) for k in HASHED_SECTIONS})
    flat_ours = _flatten({k: ours.get(k) for k in HASHED_SECTIONS})
    return [
        f"{name}: pushed {flat_pushed.get(name, '<absent>')!r}, this run {flat_ours.get(name, '<absent>')!r}"
        for name in sorted(set(flat_pushed) | set(flat_ours))
        if flat_pushed.get(name, "<absent>") != flat_ours.get(name, "<absent>")
    ]


def install_chain(snapshot: Path, run_dir: Path, run: RunConfig) -> dict[int, Path]:
    """Install a downloaded chain as ``run_dir/chain`` (atomically, replacing any chain there); return its links.

    The pushed chain's config hash must equal ``chain_config_hash(run)``, else :class:`ChainConfigMismatchError`
    names the differing fields (corpus, suite, model, cache, chain sections and seed). Files are checked against
    their SHA-256 (:func:`verify_chain_files`) and copied byte for byte: the chain ``manifest.json`` and every
    ``step{N}/`` — exactly what notebook 02 would have written, so notebook 02 finds the chain current and
    notebooks 03-05 use it (they also need the run's activation cache, notebook 01). Returns
    :func:`~saetrack.chain.load_chain` of the installed chain.
    """
    snapshot, run_dir = Path(snapshot), Path(run_dir)
    index = verify_chain_files(snapshot)
    manifest = store.read_json(snapshot / paths.MANIFEST)
    expected = chain_config_hash(run)
    pushed_hash = manifest.get("config_hash")
    if pushed_hash != expected:
        differences = _config_differences(index.get("run_config", {}), run.to_dict())
        detail = (
            "; ".join(differences)
            if differences
            else "the chain, cache, model, corpus and suite fields agree, so the activation cache's token plan or "
            "the saetrack version differ"
        )
        raise ChainConfigMismatchError(
            f"the chain in {snapshot} was trained for another config (hash {pushed_hash}, this run's is {expected}): "
            f"{detail}. Build the run from the pushed config (saetrack.hub.run_config_of(snapshot))."
        )
    if index.get("chain_config_hash") != pushed_hash:
        raise ChainIntegrityError(f"{INDEX_FILE} in {snapshot} belongs to another chain than its {paths.MANIFEST}.")
    sae_ids = list(index.get("sae_ids", []))
    wanted = [paths.step_dir_name(int(step)) for step in manifest.get("steps", [])]
    if sae_ids != wanted:
        raise ChainIntegrityError(f"{INDEX_FILE} in {snapshot} lists links {sae_ids}, the chain manifest {wanted}.")
    with store.atomic_dir(run_dir / paths.CHAIN_DIR) as tmp:
        for rel in index["files"]:
            parts = safe_relative(rel).parts
            if rel == paths.MANIFEST or (len(parts) == 2 and parts[0] in sae_ids):
                target = tmp.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(snapshot.joinpath(*parts), target)
    log.info("installed chain %s (%d links) into %s", pushed_hash, len(sae_ids), run_dir / paths.CHAIN_DIR)
    return load_chain(run_dir, run)


def load_hub_chain(repo_id: str, revision: str, run_dir: Path, run: RunConfig, **kw: Any) -> dict[int, Path]:
    """:func:`download_chain` (``kw``: ``cache_dir``, ``token``) then :func:`install_chain`; returns step -> folder."""
    return install_chain(download_chain(repo_id, revision, **kw), run_dir, run)
