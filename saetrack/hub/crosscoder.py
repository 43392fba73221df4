"""The run's cross-snapshot crosscoder on the Hub, beside its chain: staged under ``crosscoder/``, loaded back pinned.

When ``run_dir/crosscoder/model/`` holds a finished crosscoder (its ``manifest.json`` exists; notebook 06), a push
(:func:`~saetrack.hub.push.stage_chain`) copies that folder byte for byte to ``crosscoder/`` in the upload — the
documented format of :mod:`saetrack.crosscoder.io` (``crosscoder.safetensors``, ``cfg.json``) plus its
``manifest.json`` and loss curve — and :data:`~saetrack.hub.layout.INDEX_FILE` gets a ``crosscoder`` entry
(snapshot steps, sizes, config hash); its files are hashed in the index's ``files`` like every link's. A repo
without one keeps the chain's layout unchanged.

:func:`load_hub_crosscoder` downloads only the index and ``crosscoder/`` at a 40-hex commit, checks every file's
SHA-256 against the index, installs the folder and loads it with :func:`~saetrack.crosscoder.io.load_crosscoder`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from saetrack import paths, store
from saetrack.crosscoder.io import CROSSCODER_CFG_FILE, CROSSCODER_WEIGHTS_FILE, SavedCrosscoder, load_crosscoder
from saetrack.hub.layout import (
    CROSSCODER_FOLDER,
    INDEX_FILE,
    ChainIntegrityError,
    check_commit,
    check_indexed_files,
    read_index,
    safe_relative,
    validate_repo_id,
)

__all__ = [
    "CROSSCODER_MODEL_DIR",
    "download_crosscoder",
    "install_crosscoder",
    "load_hub_crosscoder",
    "stage_crosscoder",
    "verify_crosscoder_files",
]


log = logging.getLogger(__name__)


#: Sub-folder of ``run_dir/crosscoder/`` where the crosscoder stage saves the trained model (one name, in paths).
CROSSCODER_MODEL_DIR = paths.CROSSCODER_MODEL_DIR


def stage_crosscoder(run_dir: Path, dest: Path) -> dict[str, Any] | None:
    """Copy the run's finished crosscoder into ``dest/crosscoder/``; return its index entry (``None``: it has none).

    Every file the crosscoder's manifest lists is checked against its SHA-256 first (a changed file raises
    :class:`~saetrack.store.StaleArtifactError`); every non-hidden file of the folder is copied byte for byte.
    """
    folder = Path(run_dir) / paths.CROSSCODER_DIR / CROSSCODER_MODEL_DIR
    manifest = store.read_manifest(folder)
    if manifest is None:
        return None
    try:
        store.check_files(folder)
    except store.StaleArtifactError as error:
        raise store.StaleArtifactError(f"the crosscoder cannot be pushed: {error} (notebook 06)") from error
    cfg = store.read_json(folder / CROSSCODER_CFG_FILE)
    target = Path(dest) / CROSSCODER_FOLDER
    target.mkdir(parents=True)
    for file in sorted(folder.iterdir()):
        if file.is_file() and not file.name.startswith("."):
            shutil.copyfile(file, target / file.name)
    return {
        "folder": CROSSCODER_FOLDER,
        "config_hash": manifest.get("config_hash"),
        "snapshot_steps": [int(s) for s in cfg["snapshot_steps"]],
        "n_snapshots": int(cfg["n_snapshots"]),
        "d_model": int(cfg["d_model"]),
        "d_sae": int(cfg["d_sae"]),
        "hook_name": cfg.get("hook_name"),
    }


def verify_crosscoder_files(folder: Path) -> dict[str, Any]:
    """Check the crosscoder files listed in ``folder``'s index against their SHA-256; return its ``crosscoder`` entry.

    A repo pushed without a crosscoder raises ``FileNotFoundError``; a missing or changed file, or an index listing
    no weights or ``cfg.json``, raises :class:`~saetrack.hub.layout.ChainIntegrityError` naming the file.
    """
    folder = Path(folder)
    index = read_index(folder)
    entry = index.get("crosscoder")
    if not entry:
        raise FileNotFoundError(
            f"the upload in {folder} holds no crosscoder (its {INDEX_FILE} has no 'crosscoder' entry): it was pushed "
            "before notebook 06 had trained one."
        )
    prefix = f"{CROSSCODER_FOLDER}/"
    files = {rel: digest for rel, digest in (index.get("files") or {}).items() if rel.startswith(prefix)}
    for name in (CROSSCODER_WEIGHTS_FILE, CROSSCODER_CFG_FILE):
        if prefix + name not in files:
            raise ChainIntegrityError(
                f"{INDEX_FILE} in {folder} lists no {prefix}{name}; the crosscoder is incomplete."
            )
    check_indexed_files(folder, files, "crosscoder")
    return dict(entry)


def download_crosscoder(
    repo_id: str, revision: str, *, cache_dir: str | Path | None = None, token: str | None = None
) -> Path:
    """Download (or reuse from the HF cache) the index and ``crosscoder/`` of ``repo_id`` at commit ``revision``.

    Only those files are fetched (not the chain's links); ``revision`` must be a 40-hex commit hash, as for
    :func:`~saetrack.hub.pull.download_chain`. Returns the snapshot folder after :func:`verify_crosscoder_files`.
    """
    validate_repo_id(repo_id)
    commit = check_commit(revision)
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(
            repo_id,
            revision=commit,
            cache_dir=cache_dir,
            token=token,
            repo_type="model",
            allow_patterns=[INDEX_FILE, f"{CROSSCODER_FOLDER}/*"],
        )
    )
    verify_crosscoder_files(folder)
    return folder


def install_crosscoder(snapshot: Path, dest: Path, device: str = "cpu") -> SavedCrosscoder:
    """Copy the verified ``crosscoder/`` of a downloaded upload into ``dest`` (atomically) and load it from there.

    ``dest`` is replaced if it exists; ``run_dir/crosscoder/model`` makes it the run's crosscoder, which notebook 06
    reuses when it was trained with the run's config (its manifest's hash). The loaded snapshot steps must equal the
    index's, else :class:`~saetrack.hub.layout.ChainIntegrityError`.
    """
    snapshot = Path(snapshot)
    entry = verify_crosscoder_files(snapshot)
    index = read_index(snapshot)
    prefix = f"{CROSSCODER_FOLDER}/"
    with store.atomic_dir(dest) as tmp:
        for rel in sorted(index["files"]):
            if rel.startswith(prefix):
                parts = safe_relative(rel).parts
                shutil.copyfile(snapshot.joinpath(*parts), tmp.joinpath(*parts[1:]))
    saved = load_crosscoder(dest, device=device)
    if list(saved.snapshot_steps) != list(entry.get("snapshot_steps", [])):
        raise ChainIntegrityError(
            f"the crosscoder in {dest} reads snapshots {list(saved.snapshot_steps)}, its {INDEX_FILE} says "
            f"{entry.get('snapshot_steps')}."
        )
    log.info("installed crosscoder (%d snapshots, d_sae %d) into %s", len(saved.snapshot_steps), entry["d_sae"], dest)
    return saved


def load_hub_crosscoder(
    repo_id: str,
    revision: str,
    dest: str | Path,
    *,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    device: str = "cpu",
) -> SavedCrosscoder:
    """:func:`download_crosscoder` pinned to ``revision`` then :func:`install_crosscoder` into ``dest``.

    The cross-snapshot crosscoder of Ge et al. (2025) (:mod:`saetrack.crosscoder.model`) pushed beside a chain,
    hash-checked against the index; returns :class:`~saetrack.crosscoder.io.SavedCrosscoder` (model, snapshot
    steps, input scales, ``cfg.json``). ``token`` goes to ``huggingface_hub`` as given and is never stored.
    """
    snapshot = download_crosscoder(repo_id, revision, cache_dir=cache_dir, token=token)
    return install_crosscoder(snapshot, Path(dest), device=device)
