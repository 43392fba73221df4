"""Fixtures of the run API tests: the smoke pipeline built once into a temp folder, and copies of it with stages
taken out."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from saetrack.api import Run, open_run
from saetrack.config import get_preset
from saetrack.pipeline.stages import run_stages


@pytest.fixture(scope="session")
def api_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run (every stage the API reads: cache, chain, formation, drift, crosscoder), built once.

    The scale stage is left out: it runs two more sizes and a seed study, and the API reads none of it. Runs and
    figures go to the temp folder (set here, since this fixture is set up before the function-scoped autouse one).
    """
    root = tmp_path_factory.mktemp("api_smoke")
    run_dir = root / "runs" / "smoke"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAETRACK_RUNS", str(root / "runs"))
        patch.setenv("SAETRACK_FIGURES", str(root / "figures"))
        run_stages(get_preset("smoke"), run_dir, skip=["scale"], device="cpu", echo=False, log=lambda s: None)
    return run_dir


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
