"""Fixtures of the run API tests: the smoke pipeline built once into a temp folder, and copies of it with stages
taken out."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from saetrack.api import Run, open_run


@pytest.fixture(scope="session")
def api_run_dir(smoke_pipeline: tuple[Path, str]) -> Path:
    """A finished smoke run (every stage: cache, chain, formation, drift, scale, crosscoder), the session's one run of
    the whole smoke pipeline (``tests/conftest.py``); the API only reads it."""
    return smoke_pipeline[0]


@pytest.fixture(scope="session")
def api_run(api_run_dir: Path) -> Run:
    """The smoke run opened once (its loaded stages are kept between tests)."""
    return open_run(api_run_dir)


@pytest.fixture
def run_copy(api_run_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """``run_copy(*left_out)``: a copy of the smoke run without the named top-level folders."""

    def make(*left_out: str) -> Path:
        target = tmp_path / "smoke"
        shutil.copytree(
            api_run_dir, target, ignore=lambda folder, names: left_out if Path(folder) == api_run_dir else ()
        )
        return target

    return make
