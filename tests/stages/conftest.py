"""Fixtures of the stage tests: the smoke chain with its baselines and comparison, and its formation analysis."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import paths
from saetrack.config import RunConfig
from saetrack.stages.chain import train_baselines, train_chain
from saetrack.stages.chain.comparison import compare_chain_and_baselines
from saetrack.stages.formation import analyse_formation


@pytest.fixture(scope="package")
def run(smoke: RunConfig) -> RunConfig:
    """The smoke preset."""
    return smoke


@pytest.fixture(scope="package")
def chain_run_dir(run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run with its chain, baselines and comparison trained once."""
    work = tmp_path_factory.mktemp("chain_run")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    train_chain(run, work, progress=False)
    train_baselines(run, work, progress=False)
    compare_chain_and_baselines(run, work, progress=False)
    return work


@pytest.fixture(scope="package")
def formation_run(run: RunConfig, chain_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the smoke run with its chain and baselines and the formation stage: (run dir, formation manifest)."""
    work = tmp_path_factory.mktemp("formation_run")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR, paths.CHAIN_DIR, paths.BASELINE_DIR):
        shutil.copytree(chain_run_dir / folder, work / folder)
    return work, analyse_formation(run, work, progress=False)
