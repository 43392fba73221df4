"""Fixtures of the Hub tests: the smoke chain trained once, staged once and "pushed" once to a fake HfApi.

The smoke chain is trained once for the package into a copy of the session's smoke run. No test may reach the Hub;
one live test (``test_push.py``) pushes to a real repo, only when ``SAETRACK_HUB_TEST_REPO`` and a token are set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from saetrack import paths
from saetrack.config import RunConfig, get_preset
from saetrack.hub.push import push_chain, stage_chain
from saetrack.runtime import torch_threads
from saetrack.stages.chain import train_chain
from tests.hub.fakes import REPO_ID, FakeHfApi, build_hub_cache


@pytest.fixture(autouse=True)
def _offline(hub_offline: None) -> None:
    """No test may reach the Hub (see ``hub_offline``)."""


@pytest.fixture(scope="package")
def run() -> RunConfig:
    """The smoke preset."""
    return get_preset("smoke")


@pytest.fixture(scope="package")
def chain_run_dir(run: RunConfig, smoke_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke run (corpus, model, cache) with its chain trained once (on one torch thread)."""
    work = tmp_path_factory.mktemp("hub_run")
    for folder in (paths.CORPUS_DIR, paths.MODEL_DIR, paths.CACHE_DIR):
        shutil.copytree(smoke_run_dir / folder, work / folder)
    with torch_threads(1):
        train_chain(run, work, progress=False)
    return work


@pytest.fixture(scope="package")
def staged(run: RunConfig, chain_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a push of the chain uploads, staged once."""
    return stage_chain(chain_run_dir, run, tmp_path_factory.mktemp("staged") / "upload", repo_id=REPO_ID)


@pytest.fixture(scope="package")
def pushed(run: RunConfig, chain_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The chain pushed through ``push_chain`` (fake api), in a hub cache with ``refs/main``: (cache, commit)."""
    api = FakeHfApi()
    commit = push_chain(chain_run_dir, run, REPO_ID, api=api)
    assert commit == api.commit
    cache = tmp_path_factory.mktemp("hf_cache")
    build_hub_cache(cache, REPO_ID, api.uploaded, commit=commit)
    return cache, commit
