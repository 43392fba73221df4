"""Fixtures of the data tests: the smoke preset's corpus, prepared once."""

from __future__ import annotations

from pathlib import Path

import pytest

from saetrack.config import RunConfig
from saetrack.data.corpus import prepare_corpus


@pytest.fixture(scope="package")
def built(smoke: RunConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A run directory with the smoke corpus (streams, tokenizer) and the manifest ``prepare_corpus`` returned."""
    run_dir = tmp_path_factory.mktemp("corpus_run")
    return run_dir, prepare_corpus(smoke, run_dir)
