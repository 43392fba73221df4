"""A fake ``HfApi`` and the Hugging Face hub-cache layout, for the offline Hub tests of saetrack.hub.

"Pushes" go to :class:`FakeHfApi`, which keeps the uploaded bytes; :func:`build_hub_cache` lays them out as the
Hugging Face cache does after a real download (``models--owner--name/{refs,snapshots,blobs}``), to be read back with
the real ``huggingface_hub`` code in offline mode.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from huggingface_hub.errors import RevisionNotFoundError

from saetrack import paths
from saetrack.config import RunConfig
from saetrack.stages.chain import load_chain

REPO_ID = "TestOrg/saetrack-smoke-chain"
SECRET = "hf_saetrackTESTsecret"


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
