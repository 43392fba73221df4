"""Paths anchored at the repository root: run and figure folders (movable by environment variable), step folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack import paths


def test_repo_root_holds_the_package() -> None:
    assert (paths.REPO_ROOT / "saetrack" / "paths.py").is_file()
    assert paths.REPO_ROOT == Path(__file__).resolve().parents[1]


def test_runs_and_figures_follow_their_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "r"))
    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "f"))
    assert paths.runs_root() == tmp_path / "r"
    assert paths.run_dir("nano") == tmp_path / "r" / "nano"
    assert paths.figures_dir("nano") == tmp_path / "f" / "nano"
    monkeypatch.delenv(paths.RUNS_ENV)
    monkeypatch.delenv(paths.FIGURES_ENV)
    assert paths.run_dir("smoke") == paths.REPO_ROOT / "runs" / "smoke"
    assert paths.figures_dir("smoke") == paths.REPO_ROOT / "figures" / "smoke"


def test_relative_environment_paths_are_resolved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(paths.RUNS_ENV, "elsewhere")
    assert paths.runs_root() == tmp_path.resolve() / "elsewhere" and paths.runs_root().is_absolute()


def test_step_folders_use_pythias_revision_names() -> None:
    assert paths.step_dir_name(0) == "step0" and paths.step_dir_name(143000) == "step143000"
    names = (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR, paths.CHAIN_DIR, paths.BASELINE_DIR,
             paths.COMPARISON_DIR, paths.FORMATION_DIR, paths.DRIFT_DIR, paths.SCALE_DIR)  # fmt: skip
    assert len(set(names)) == len(names)  # every stage its own folder
    assert paths.MANIFEST == "manifest.json" and paths.RESULTS_JSON == "results.json"
