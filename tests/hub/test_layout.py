"""The Hub layout's checks: repo ids, pinned commit hashes, safe paths in the index, and the error types."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from saetrack import store
from saetrack.hub.layout import (
    CARD_FILE,
    CROSSCODER_FOLDER,
    HASHED_SECTIONS,
    INDEX_FILE,
    ChainConfigMismatchError,
    ChainIntegrityError,
    RemoteFilesExistError,
    check_commit,
    read_index,
    safe_relative,
    validate_repo_id,
)


@pytest.mark.parametrize("repo_id", ["me/saetrack-nano-chain", "Org_1/a.b-c", "a/b", "x" * 96 + "/y"])
def test_valid_repo_ids_are_returned(repo_id: str) -> None:
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id", ["noslash", "a/b/c", "owner/", "/name", "own er/name", "owner/na--me", "owner/a..b", "-a/b", "a/b.", 3]
)
def test_invalid_repo_ids_are_refused(repo_id: object) -> None:
    with pytest.raises(ValueError, match=r"expected 'owner/name'"):
        validate_repo_id(repo_id)  # type: ignore[arg-type]


def test_only_full_commit_hashes_pass_and_are_lower_cased() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert check_commit(commit) == commit
    assert check_commit(commit.upper()) == commit
    for revision in ("main", "step0", commit[:12], commit + "0", "g" * 40, None):
        with pytest.raises(ValueError, match=r"is not a commit hash.*list_repo_commits"):
            check_commit(revision)  # type: ignore[arg-type]


def test_paths_in_the_index_must_stay_inside_the_chain() -> None:
    assert safe_relative("step0/cfg.json") == PurePosixPath("step0", "cfg.json")
    assert safe_relative("./manifest.json").parts == ("manifest.json",)  # "." parts are normalised away
    for bad in ("/etc/passwd", "../outside", "step0/../../x", ""):
        with pytest.raises(ChainIntegrityError, match="lists the unsafe path"):
            safe_relative(bad)


def test_error_types_and_file_names() -> None:
    assert issubclass(ChainIntegrityError, store.StaleArtifactError)
    assert issubclass(ChainConfigMismatchError, store.StaleArtifactError)
    assert issubclass(RemoteFilesExistError, FileExistsError)
    assert (INDEX_FILE, CARD_FILE, CROSSCODER_FOLDER) == ("saetrack_chain.json", "README.md", "crosscoder")
    assert HASHED_SECTIONS == ("seed", "corpus", "suite", "model", "cache", "chain")


def test_read_index_checks_presence_and_layout_version(tmp_path: Path) -> None:
    with pytest.raises(ChainIntegrityError, match=f"has no {INDEX_FILE}: it is not a chain pushed by saetrack.hub"):
        read_index(tmp_path)
    (tmp_path / INDEX_FILE).write_text(json.dumps({"saetrack_layout_version": 1, "files": {"a": "0" * 64}}))
    assert read_index(tmp_path) == {"saetrack_layout_version": 1, "files": {"a": "0" * 64}}
    (tmp_path / INDEX_FILE).write_text(json.dumps({"saetrack_layout_version": 2}))
    with pytest.raises(ChainIntegrityError, match="layout version 2; this saetrack reads version 1"):
        read_index(tmp_path)
