"""Atomic writes and manifests: a failed write leaves nothing behind; manifests detect stale configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saetrack import store


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), store.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "step1"
    with store.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), store.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["step1"]


def test_manifest_current_and_file_verification(tmp_path: Path) -> None:
    digest = store.save_npy(tmp_path / "x.npy", np.arange(10))
    store.write_manifest(tmp_path, stage="t", config={"a": 1}, config_hash="h1", files={"x.npy": digest})
    assert store.manifest_is_current(tmp_path, "h1", verify_files=True)
    assert not store.manifest_is_current(tmp_path, "h2")
    np.save(tmp_path / "x.npy", np.arange(11))
    assert not store.manifest_is_current(tmp_path, "h1", verify_files=True)


def test_truncated_manifest_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"stage": ')
    with pytest.raises(store.StaleArtifactError, match="not valid JSON"):
        store.read_manifest(tmp_path)
