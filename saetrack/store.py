"""Writing artifacts safely: atomic files, content hashes and stage manifests.

Every file is written to a temporary name in its destination folder and renamed into place, so a
partly written file is never taken for a finished one; a finished file gets the mode a plain ``open``
would have given it (``0o666`` less the umask), not the temporary file's private ``0o600``. Every
stage ends by writing a ``manifest.json`` holding its resolved config, the config's hash, the hashes
of its files and its timings; a stage whose manifest matches its config is skipped by the pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from saetrack.paths import MANIFEST

__all__ = [
    "StaleArtifactError",
    "atomic_dir",
    "atomic_path",
    "file_sha256",
    "manifest_is_current",
    "read_json",
    "read_manifest",
    "save_npy",
    "write_json",
    "write_manifest",
]


_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """The mode a new file gets from ``open`` in this process: ``0o666`` less the current umask.

    The umask can only be read by setting it; the lock keeps two threads of this module from reading it at once
    (one would otherwise take the other's temporary 0o077 for the umask).
    """
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return 0o666 & ~umask


class StaleArtifactError(RuntimeError):
    """An artifact on disk is corrupt or was made with a different config than the one asked for."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success give it the usual mode of a new file (``0o666`` less the
    umask: :func:`tempfile.mkstemp` makes it ``0o600``) and rename it to ``path``; on error delete it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (which may exist)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a truncated or invalid file raises :class:`StaleArtifactError` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise StaleArtifactError(f"{path} is not valid JSON ({error}); delete it to rebuild.") from error


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> str:
    """Save ``array`` as ``.npy`` atomically and return its SHA-256."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    return file_sha256(path)


def write_manifest(
    folder: str | os.PathLike[str],
    *,
    stage: str,
    config: Mapping[str, Any],
    config_hash: str,
    files: Mapping[str, str] | None = None,
    timings: Mapping[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``folder/manifest.json`` for a finished stage and return it.

    ``files`` maps paths relative to ``folder`` to their SHA-256; ``extra`` holds stage results.
    """
    manifest = {
        "stage": stage,
        "config_hash": config_hash,
        "config": dict(config),
        "files": dict(files or {}),
        "timings_s": {k: round(v, 3) for k, v in (timings or {}).items()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``folder``, or ``None`` if the stage never finished there."""
    path = Path(folder) / MANIFEST
    return read_json(path) if path.exists() else None


def manifest_is_current(folder: str | os.PathLike[str], config_hash: str, verify_files: bool = False) -> bool:
    """Whether ``folder`` holds a finished stage made with ``config_hash`` (optionally re-hashing its files)."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("config_hash") != config_hash:
        return False
    if verify_files:
        try:
            check_files(folder)
        except StaleArtifactError:
            return False
    return True


def check_files(folder: str | os.PathLike[str], names: list[str] | None = None) -> None:
    """Re-hash the files ``folder``'s manifest lists (all, or ``names``) against it; raise on the first mismatch.

    Raises :class:`StaleArtifactError` naming the first file that is missing or whose SHA-256 is not the one
    recorded when it was written, so nothing is read from a file changed on disk afterwards.
    """
    folder = Path(folder)
    recorded = (read_manifest(folder) or {}).get("files", {})
    for name in names if names is not None else sorted(recorded):
        path = folder / name
        if name not in recorded:
            raise StaleArtifactError(f"{path} has no recorded hash in {folder / MANIFEST}; rebuild it.")
        if not path.exists() or file_sha256(path) != recorded[name]:
            raise StaleArtifactError(
                f"{path} was changed on disk after it was written, or is missing (missing or corrupt: its SHA-256 is "
                f"not the one recorded in {folder / MANIFEST}); rebuild it - rerun its notebook with force - instead "
                "of reading it."
            )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
