"""Atomic writes and manifests: a failed write leaves nothing behind; manifests detect stale configs."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
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


def test_file_sha256_by_hand_in_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "blob").write_bytes(data)
    assert store.file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    assert store.file_sha256(tmp_path / "blob", chunk=7) == hashlib.sha256(data).hexdigest()


def test_json_round_trip_of_numpy_paths_and_tuples(tmp_path: Path) -> None:
    payload = {"a": np.float32(0.5), "b": np.arange(3), "c": Path("x/y"), "d": (1, 2), "e": np.int64(7)}
    store.write_json(tmp_path / "sub" / "r.json", payload)  # missing folders are made
    assert store.read_json(tmp_path / "sub" / "r.json") == {"a": 0.5, "b": [0, 1, 2], "c": "x/y", "d": [1, 2], "e": 7}
    with pytest.raises(TypeError, match="cannot serialise object"):
        store.write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and [p.name for p in tmp_path.iterdir()] == ["sub"]


def test_save_npy_returns_the_files_hash(tmp_path: Path) -> None:
    digest = store.save_npy(tmp_path / "a.npy", np.arange(6, dtype=np.int16).reshape(2, 3))
    assert digest == store.file_sha256(tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError):
        store.save_npy(tmp_path / "o.npy", np.array([object()]))  # no pickles
    assert not (tmp_path / "o.npy").exists()


def test_manifest_fields_and_missing_files(tmp_path: Path) -> None:
    assert store.read_manifest(tmp_path) is None
    assert not store.manifest_is_current(tmp_path, "h1")
    (tmp_path / "f.txt").write_text("x")
    manifest = store.write_manifest(tmp_path, stage="s", config={"k": (1, 2)}, config_hash="h1",
                                    files={"f.txt": store.file_sha256(tmp_path / "f.txt")},
                                    timings={"total": 1.23456}, result=[3])  # fmt: skip
    assert manifest["timings_s"] == {"total": 1.235} and manifest["result"] == [3]
    assert manifest["finished_at"].endswith("Z") and manifest["stage"] == "s"
    assert store.read_manifest(tmp_path)["config"] == {"k": [1, 2]}
    (tmp_path / "f.txt").unlink()
    assert store.manifest_is_current(tmp_path, "h1")  # without re-hashing, a missing file goes unnoticed
    assert not store.manifest_is_current(tmp_path, "h1", verify_files=True)


def test_check_files_names_a_changed_or_missing_file(tmp_path: Path) -> None:
    digest = store.save_npy(tmp_path / "a.npy", np.arange(4))
    store.write_manifest(tmp_path, stage="s", config={}, config_hash="h1", files={"a.npy": digest})
    store.check_files(tmp_path)
    store.check_files(tmp_path, ["a.npy"])
    with pytest.raises(store.StaleArtifactError, match=r"b\.npy has no recorded hash"):
        store.check_files(tmp_path, ["b.npy"])
    np.save(tmp_path / "a.npy", np.arange(5))
    with pytest.raises(store.StaleArtifactError, match=r"a\.npy was changed on disk after it was written"):
        store.check_files(tmp_path)
    (tmp_path / "a.npy").unlink()
    with pytest.raises(store.StaleArtifactError, match="missing or corrupt"):
        store.check_files(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_finished_files_get_the_mode_of_a_new_file(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store.write_json(tmp_path / "r.json", {"a": 1})
        store.save_npy(tmp_path / "a.npy", np.arange(3))
        with store.atomic_path(tmp_path / "copied.txt") as tmp:
            shutil.copyfile(tmp_path / "r.json", tmp)  # a file put in place of the temporary one
        (tmp_path / "plain.txt").write_text("x")
        assert os.umask(umask) == umask  # reading the mode left the umask as it was
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("r.json", "a.npy", "copied.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name  # not mkstemp's 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "copied.txt", "plain.txt", "r.json"]
