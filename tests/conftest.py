"""Shared fixtures: every test runs offline, seeded, with run and figure folders in a temp dir."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import torch

from saetrack import paths
from saetrack.cli import run_main
from saetrack.config import RunConfig, get_preset

pytest.register_assert_rewrite("tests.sigkill")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point runs/ and figures/ at a temp folder so no test writes into the repository."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("SAETRACK_RUNS", str(root / "runs"))
    monkeypatch.setenv("SAETRACK_FIGURES", str(root / "figures"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smoke() -> RunConfig:
    """The smoke preset's validated config."""
    return get_preset("smoke")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for tiny shapes: avoids OpenMP oversubscription on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smoke_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with the smoke preset's corpus, model suite and activation cache, built once."""
    from saetrack.data.corpus import prepare_corpus
    from saetrack.data.suite import train_suite
    from saetrack.stages.cache import cache_activations

    run = get_preset("smoke")
    run_dir = tmp_path_factory.mktemp("smoke_run")
    prepare_corpus(run, run_dir)
    train_suite(run, run_dir, progress=False)
    cache_activations(run, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The whole smoke pipeline, run once by ``saetrack run --preset smoke`` (what ``run_all.py`` runs) into the
    session's runs and figures folders (the ones :func:`_isolated_outputs` points every test at, set here too since a
    session fixture is set up first); returns the run directory and everything the command printed.

    ``tests/test_run_all.py`` reads the printed output and runs the command again; the run API's tests read the run.
    """
    root = tmp_path_factory.getbasetemp()
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("SAETRACK_RUNS", str(root / "runs"))
        patch.setenv("SAETRACK_FIGURES", str(root / "figures"))
        code = run_main(["--preset", "smoke", "--device", "cpu"])
        run_dir = paths.run_dir("smoke")
    assert code == 0, printed.getvalue()[-3000:]
    return run_dir, printed.getvalue()


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hub: huggingface_hub reads ``constants.HF_HUB_OFFLINE`` at call time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def sigkill_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Hashes of the smoke pipeline (suite, cache, chain) run straight through in a subprocess, once.

    The interruption tests of the suite, the cache and the chain compare a killed-and-resumed run against it.
    """
    from tests.sigkill import artifact_hashes, run_pipeline

    run_dir = tmp_path_factory.mktemp("straight")
    assert run_pipeline(run_dir, "none", -1) == 0
    return artifact_hashes(run_dir)
