"""The Hub layout of a trained chain: file names, repo-id and revision checks, and the errors of the Hub path."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from saetrack import store

__all__ = [
    "CARD_FILE",
    "COMMIT_HASH",
    "CROSSCODER_FOLDER",
    "HASHED_SECTIONS",
    "INDEX_FILE",
    "LAYOUT_VERSION",
    "ChainConfigMismatchError",
    "ChainIntegrityError",
    "RemoteFilesExistError",
    "check_commit",
    "check_indexed_files",
    "read_index",
    "safe_relative",
    "validate_repo_id",
]


#: The index of a pushed chain: run config, layout version, SAE ids and the SHA-256 of every other file.
INDEX_FILE = "saetrack_chain.json"


#: The model card.
CARD_FILE = "README.md"


#: Folder of the upload holding the run's cross-snapshot crosscoder, when it has one (``saetrack.crosscoder.io``).
CROSSCODER_FOLDER = "crosscoder"


#: Version of the pushed layout described in the module docstring; bumped on incompatible changes.
LAYOUT_VERSION = 1


COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"


_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")


#: Run-config sections the chain's config hash depends on (see ``chain_config_hash`` and ``cache_config_hash``).
HASHED_SECTIONS = ("seed", "corpus", "suite", "model", "cache", "chain")


class ChainIntegrityError(store.StaleArtifactError):
    """A downloaded chain is incomplete or a file's SHA-256 differs from the one recorded when it was pushed."""


class ChainConfigMismatchError(store.StaleArtifactError):
    """A pushed chain was trained with another config than the run it is being installed into."""


class RemoteFilesExistError(FileExistsError):
    """Files to be pushed already exist in the Hub repo and overwriting them was not asked for."""


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a Hub model repo id ``"owner/name"``, else raise ``ValueError``."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(
            f"repo_id = {repo_id!r} is invalid: expected 'owner/name' (letters, digits, '-', '_', '.'; "
            "no '--' or '..'), e.g. 'my-user/saetrack-nano-chain'."
        )
    return repo_id


def check_commit(revision: str) -> str:
    """``revision`` unchanged if it is a 40-hex commit hash; otherwise a ValueError saying how to find one."""
    if not isinstance(revision, str) or not COMMIT_HASH.match(revision.lower()):
        raise ValueError(
            f"revision = {revision!r} is not a commit hash: a chain is loaded pinned to the 40-hex commit it was "
            "pushed as, because a branch or tag can move and the analyses would silently use other SAEs. "
            "push_chain returns the commit hash; otherwise find it on the repo page under 'Files and versions' -> "
            "'History', or with `huggingface_hub.HfApi().list_repo_commits(repo_id)`."
        )
    return revision.lower()


def read_index(folder: Path) -> dict[str, Any]:
    """The :data:`INDEX_FILE` of a downloaded upload; a missing index or another layout version raises
    :class:`ChainIntegrityError`."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise ChainIntegrityError(f"{folder} has no {INDEX_FILE}: it is not a chain pushed by saetrack.hub.")
    index: dict[str, Any] = store.read_json(path)
    version = index.get("saetrack_layout_version")
    if version != LAYOUT_VERSION:
        raise ChainIntegrityError(
            f"{path} has layout version {version!r}; this saetrack reads version {LAYOUT_VERSION}. "
            "Upgrade saetrack (or load a chain pushed by this version)."
        )
    return index


def safe_relative(rel: str) -> PurePosixPath:
    """``rel`` as a relative POSIX path inside the chain folder; absolute or ``..`` paths raise ChainIntegrityError."""
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise ChainIntegrityError(f"{INDEX_FILE} lists the unsafe path {rel!r}; refusing to use this chain.")
    return path


def check_indexed_files(folder: Path, files: dict[str, str], what: str) -> None:
    """Check that every file of ``files`` (path relative to ``folder`` -> SHA-256 recorded at push time) is in
    ``folder`` with that hash; a missing or changed file raises :class:`ChainIntegrityError` naming ``what``."""
    for rel, digest in sorted(files.items()):
        path = folder / safe_relative(rel)
        if not path.is_file():
            raise ChainIntegrityError(f"file {rel} of the pushed {what} is missing from {folder}.")
        actual = store.file_sha256(path)
        if actual != digest:
            raise ChainIntegrityError(
                f"file {rel} of the pushed {what} is corrupt: SHA-256 {actual} differs from the {digest} recorded at "
                f"push time (in {folder}). Delete it from the cache and download again."
            )
